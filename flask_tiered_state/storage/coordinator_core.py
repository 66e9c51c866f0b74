"""The coordinator's shared state: its tiers, cache, policy, health guard, write locks,
counters and the workers that drop copies; the base the coordinator's parts build on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from .base import StateCategory, StateRepositories
from .cache import StateCache
from .health import TierGuard
from .tiering import TierPromotionPolicy

__all__ = ["COLD", "HOT", "WARM", "CoordinatorCore"]

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD
_STRIPES = 64


class CoordinatorCore:
    """The state every part of :class:`~.coordinator.StateRepositoryCoordinator` shares
    (see there for the parameters), with the write locks and the counters."""

    def __init__(
        self,
        repositories: StateRepositories,
        cache: StateCache,
        *,
        policy: TierPromotionPolicy | None = None,
        raw_repositories: StateRepositories | None = None,
        initial_backoff: float = 0.5,
        max_backoff: float = 5.0,
        max_pending_hot: int = 100_000,
        clock: Any = time.monotonic,
    ) -> None:
        self.repositories = repositories
        self._raw = raw_repositories or repositories
        self.hot, self.warm, self.cold = repositories.hot, repositories.warm, repositories.cold
        self.cache = cache
        self.policy = policy or TierPromotionPolicy()
        self.guard = TierGuard(
            repositories,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
            max_pending_hot=max_pending_hot,
            clock=clock,
        )
        self.guard.forget_cached = cache.invalidate_many
        self.pending = self.guard.pending
        self.hot_usable = self.guard.hot_usable
        self.tier_failed = self.guard.failed
        self.drop_copies = self.guard.drop
        self.retry_pending = self.guard.retry_pending
        self._stripes = [threading.RLock() for _ in range(_STRIPES)]
        self._counts_lock = threading.Lock()
        self.tier_hits = dict.fromkeys(StateCategory, 0)
        self.tier_misses = dict.fromkeys(StateCategory, 0)
        #: Keys moved: "promotions" (asked for), "auto_promotions" (HOT copies placed
        #: because of frequent reads) and "demotions".
        self.movements = dict.fromkeys(("promotions", "auto_promotions", "demotions"), 0)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def get_repositories(self) -> StateRepositories:
        return self._raw

    def _drop_pool(self) -> ThreadPoolExecutor:
        """The workers that drop COLD copies alongside WARM's (started on first use)."""
        pool = self._pool
        if pool is None:
            with self._pool_lock:
                pool = self._pool
                if pool is None:
                    pool = self._pool = ThreadPoolExecutor(
                        max_workers=4, thread_name_prefix="tiered-state-drop"
                    )
        return pool

    def close(self) -> None:
        """Stop the drop workers (after the drops in flight finish)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    @contextmanager
    def locked(self, keys: Iterable[str]) -> Iterator[None]:
        """Hold the write locks of ``keys`` (taken in a fixed order: no deadlocks)."""
        stripes = [self._stripes[i] for i in sorted({hash(k) % _STRIPES for k in keys})]
        for lock in stripes:
            lock.acquire()
        try:
            yield
        finally:
            for lock in reversed(stripes):
                lock.release()

    def _count(self, category: StateCategory, hit: bool, n: int = 1) -> None:
        with self._counts_lock:
            (self.tier_hits if hit else self.tier_misses)[category] += n

    def count_movements(self, kind: str, n: int) -> None:
        with self._counts_lock:
            self.movements[kind] += n

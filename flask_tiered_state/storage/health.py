"""Tier health and pending invalidations: how the store lives through a dead tier.

Like flask-limiter with a dead storage, the coordinator logs the failure, serves
from the next tier and re-checks the failed one with exponential backoff. A
:class:`TierHealth` is that backoff clock. :class:`PendingDrops` remembers the keys
whose copy in a tier could not be dropped after a newer write; the coordinator
ignores those copies when reading and deletes them when the tier answers again,
so a stale copy is never served (invariant 3).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import TierUnavailableError
from .base import StateCategory, StateRepositories

if TYPE_CHECKING:
    from .invalidation import InvalidationPublisher

__all__ = ["PendingDrops", "TierGuard", "TierHealth"]

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD
_RECONCILE_CHUNK = 1000

logger = logging.getLogger("flask_tiered_state.storage")


class TierHealth:
    """Healthy, or degraded with the time of the next check (exponential backoff).

    :param name: the tier's name, for logs.
    :param initial_backoff: seconds before the first re-check.
    :param max_backoff: the longest wait between two checks.
    """

    def __init__(
        self,
        name: str,
        *,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._clock = clock
        self._lock = threading.Lock()
        self._check_lock = threading.Lock()
        self.healthy = True
        self.failures = 0
        self.degraded_since: float | None = None
        self.next_check_at = 0.0
        self.last_error: str | None = None

    def mark_failed(self, error: BaseException | str) -> None:
        """Record a failure and schedule the next check."""
        with self._lock:
            now = self._clock()
            if self.healthy:
                logger.warning("Tier %s is unavailable: %s", self.name, error)
                self.degraded_since = now
            self.healthy = False
            self.failures += 1
            delay = min(self.max_backoff, self.initial_backoff * 2 ** (self.failures - 1))
            self.next_check_at = now + delay
            self.last_error = str(error)

    def mark_recovered(self) -> None:
        with self._lock:
            if not self.healthy:
                logger.warning(
                    "Tier %s answers again after %d failed checks.", self.name, self.failures
                )
            self.healthy = True
            self.failures = 0
            self.degraded_since = None
            self.last_error = None

    def check_due(self) -> bool:
        """True when degraded and the backoff delay has passed."""
        return not self.healthy and self._clock() >= self.next_check_at

    def begin_check(self) -> bool:
        """Claim the right to run the due check; only one thread checks at a time."""
        if not self.check_due():
            return False
        return self._check_lock.acquire(blocking=False)

    def end_check(self) -> None:
        self._check_lock.release()

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            return {
                "healthy": self.healthy,
                "failures": self.failures,
                "degraded_for_seconds": (
                    None if self.degraded_since is None else round(now - self.degraded_since, 3)
                ),
                "next_check_in_seconds": (
                    None if self.healthy else round(max(0.0, self.next_check_at - now), 3)
                ),
                "last_error": self.last_error,
            }


class PendingDrops:
    """Keys whose copy in one tier is stale and must not be read, until deleted.

    :param limit: the most keys remembered (None: no limit). Past it the set is
        cleared and :attr:`overflowed` is set; the owner must then reconcile the
        whole tier before trusting it again.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._keys: set[str] = set()
        self.overflowed = False

    def __contains__(self, key: object) -> bool:
        # Set membership is atomic under the GIL and internally locked without it.
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __bool__(self) -> bool:
        return bool(self._keys) or self.overflowed

    def add(self, keys: Iterable[str], *, transient: bool = False) -> bool:
        """Remember ``keys``; False when that overflowed the limit.

        ``transient`` marks keys whose drop is about to be attempted (they are removed
        again right after); those never count against the limit.
        """
        with self._lock:
            self._keys.update(keys)
            if transient or self.limit is None or len(self._keys) <= self.limit:
                return True
            self._keys.clear()
            self.overflowed = True
            return False

    def clear_overflow(self) -> None:
        with self._lock:
            self.overflowed = False

    def discard(self, keys: Iterable[str]) -> None:
        with self._lock:
            self._keys.difference_update(keys)

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self._keys)


class TierGuard:
    """The health and pending drops of each tier, and HOT's automatic recovery.

    :param repositories: the tiers it guards.
    :param max_pending_hot: how many HOT copies waiting to be dropped are remembered;
        past it, recovery reconciles the whole HOT tier.
    """

    def __init__(
        self,
        repositories: StateRepositories,
        *,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_pending_hot: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repositories = repositories
        self.health = {
            c: TierHealth(c.value, initial_backoff=initial_backoff, max_backoff=max_backoff,
                          clock=clock)
            for c in StateCategory
        }  # fmt: skip
        self.pending = {
            HOT: PendingDrops(max_pending_hot),
            WARM: PendingDrops(),
            COLD: PendingDrops(),
        }
        #: Set when other processes' caches are invalidated through Redis: HOT drops
        #: then also announce the changed keys, in the same round trip.
        self.publisher: InvalidationPublisher | None = None

    def failed(self, category: StateCategory, exc: BaseException) -> None:
        self.health[category].mark_failed(exc)

    def hot_usable(self) -> bool:
        """True when HOT may be used; runs the due recovery check when degraded."""
        health = self.health[HOT]
        if health.healthy:
            return True
        if not health.begin_check():
            return False
        try:
            return self._recover_hot()
        finally:
            health.end_check()

    def _recover_hot(self) -> bool:
        pending = self.pending[HOT]
        try:
            if not self.repositories.hot.ping():
                raise TierUnavailableError("hot", "The HOT tier did not answer PING.")
            self._drop_pending(HOT)
            if pending.overflowed:
                self._reconcile_hot()
                pending.clear_overflow()
            self.health[HOT].mark_recovered()
            # Writers that still saw HOT degraded may have added keys meanwhile.
            self._drop_pending(HOT)
        except TierUnavailableError as exc:
            self.failed(HOT, exc)
            return False
        return True

    def _drop_pending(self, category: StateCategory) -> None:
        keys = self.pending[category].snapshot()
        publisher = self.publisher if category is HOT else None
        if publisher is not None:
            # Announce what could not be announced while HOT was down, with the drop.
            hot: Any = self.repositories.hot
            publisher.publish(lambda ch, messages: hot.delete_and_publish(keys, ch, messages), ())
        elif keys:
            self.repositories.by_category(category).delete_many(keys)
        if keys:
            self.pending[category].discard(keys)

    def _reconcile_hot(self) -> None:
        """Drop every HOT copy that has a copy below it (too many pending drops to track).

        A HOT home never has copies below it, except stale ones still pending a drop.
        """
        chunk: list[str] = []
        for key in self.repositories.hot.keys("*"):
            chunk.append(key)
            if len(chunk) == _RECONCILE_CHUNK:
                self._reconcile_chunk(chunk)
                chunk = []
        if chunk:
            self._reconcile_chunk(chunk)

    def _reconcile_chunk(self, keys: list[str]) -> None:
        below: set[str] = set()
        for category in (WARM, COLD):
            pending = self.pending[category]
            wanted = [k for k in keys if k not in below and k not in pending]
            if wanted:
                below.update(self.repositories.by_category(category).fetch_many(wanted))
        if below:
            logger.warning("Dropping %d HOT copies after a long HOT outage.", len(below))
            self.repositories.hot.delete_many(sorted(below))

    def retry_pending(self) -> None:
        """Retry dropping stale WARM and COLD copies whose backoff has elapsed."""
        for category in (WARM, COLD):
            health = self.health[category]
            if not self.pending[category] or not health.begin_check():
                continue
            try:
                self._drop_pending(category)
                health.mark_recovered()
            except TierUnavailableError as exc:
                health.mark_failed(exc)
            finally:
                health.end_check()

    def drop(
        self,
        category: StateCategory,
        keys: Sequence[str],
        *,
        announce: Sequence[str] | None = None,
    ) -> None:
        """Delete the copies of ``keys`` in one tier; if it is down, remember to later.

        Until then readers skip those copies, so a stale copy is never served.

        :param announce: for HOT, with a :attr:`publisher`: the keys whose change other
            processes must hear of (default: ``keys``), published in the same round trip
            after the deletion; kept for later when HOT is down.
        """
        publisher = self.publisher if category is HOT else None
        if publisher is not None:
            announced = keys if announce is None else announce
            if announced:
                self._drop_and_announce(keys, announced, publisher)
                return
        if not keys:
            return
        pending = self.pending[category]
        if category is HOT and not self.hot_usable():
            if not pending.add(keys):
                self.failed(HOT, TierUnavailableError("hot", "too many pending drops"))
            return
        pending.add(keys, transient=True)
        try:
            self.repositories.by_category(category).delete_many(keys)
        except TierUnavailableError as exc:
            logger.warning("Could not drop %d stale %s copies: %s", len(keys), category, exc)
            self.failed(category, exc)
            return
        pending.discard(keys)

    def _drop_and_announce(
        self, keys: Sequence[str], announce: Sequence[str], publisher: InvalidationPublisher
    ) -> None:
        pending = self.pending[HOT]
        if not self.hot_usable():
            if keys and not pending.add(keys):
                self.failed(HOT, TierUnavailableError("hot", "too many pending drops"))
            publisher.defer(announce)
            return
        if keys:
            pending.add(keys, transient=True)
        try:
            hot: Any = self.repositories.hot
            publisher.publish(
                lambda ch, messages: hot.delete_and_publish(keys, ch, messages), announce
            )
        except TierUnavailableError as exc:
            logger.warning(
                "Could not drop %d stale HOT copies and announce %d changed keys: %s",
                len(keys),
                len(announce),
                exc,
            )
            self.failed(HOT, exc)
            return
        if keys:
            pending.discard(keys)

    def report(self) -> dict[str, Any]:
        return {
            c.value: {**self.health[c].to_dict(), "pending_drops": len(self.pending[c])}
            for c in StateCategory
        }

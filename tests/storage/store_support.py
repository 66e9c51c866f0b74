"""Helpers for the tests of the layers above the repositories (cache, coordinator,
tiering, batch, store).

:class:`FaultyRepository` wraps a real repository. It counts calls (to assert round
trips) and raises on demand only where a real server cannot fail on demand: "the
delete of a move fails after the copy verified", "this call hits a dead HOT tier".
A stopped Redis is tested for real in test_store.py.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from flask_tiered_state.errors import TierUnavailableError
from flask_tiered_state.storage.base import (
    StaleCopy,
    StateCategory,
    StateMetadata,
    StateRepositories,
    StateRepository,
    StoredValue,
    TierStats,
    WriteRequest,
)
from flask_tiered_state.storage.memory import MemoryStateRepository

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD


def doc(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FaultyRepository:
    """A repository wrapper that counts calls and fails the operations in :attr:`failing`.

    :attr hooks: operation name -> callable run before the call (e.g. a concurrent write).
    """

    def __init__(self, inner: StateRepository) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.category = inner.category
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, Any]] = []
        self.failing: set[str] = set()
        self.ping_ok = True
        self.hooks: dict[str, Callable[[Any], None]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _enter(self, operation: str, argument: Any) -> None:
        self.calls[operation] += 1
        self.log.append((operation, argument))
        hook = self.hooks.pop(operation, None)
        if hook is not None:
            hook(argument)
        if operation in self.failing or "*" in self.failing:
            raise TierUnavailableError(self.category.value, f"injected failure of {operation}")

    def fetch(self, key: str) -> StoredValue | None:
        self._enter("fetch", key)
        return self.inner.fetch(key)

    def fetch_many(self, keys: Sequence[str]) -> dict[str, StoredValue]:
        self._enter("fetch_many", list(keys))
        return self.inner.fetch_many(keys)

    def store(self, key: str, value: str, **kwargs: Any) -> StateMetadata:
        self._enter("store", key)
        return self.inner.store(key, value, **kwargs)

    def store_many(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        self._enter("store_many", [i.key for i in items])
        return self.inner.store_many(items)

    def delete(self, key: str) -> bool:
        self._enter("delete", key)
        return self.inner.delete(key)

    def delete_many(self, keys: Sequence[str]) -> int:
        self._enter("delete_many", list(keys))
        return self.inner.delete_many(keys)

    def store_copies(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        self._enter("store_copies", [i.key for i in items])
        return self.inner.store_copies(items)

    def add_copies(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        self._enter("add_copies", [i.key for i in items])
        inner: Any = self.inner
        result: dict[str, StateMetadata] = inner.add_copies(items)
        return result

    def delete_unchanged(self, copies: Sequence[StoredValue], **publish: Any) -> list[str]:
        self._enter("delete_unchanged", [c.key for c in copies])
        inner: Any = self.inner
        result: list[str] = inner.delete_unchanged(copies, **publish)
        return result

    def delete_stale(self, fences: Mapping[str, StaleCopy], **publish: Any) -> int:
        self._enter("delete_stale", dict(fences))
        inner: Any = self.inner
        result: int = inner.delete_stale(fences, **publish)
        return result

    def keys(self, pattern: str = "*") -> Iterator[str]:
        self._enter("keys", pattern)
        return self.inner.keys(pattern)

    def scan_keys(self, pattern: str = "*") -> Iterator[str]:
        self._enter("scan_keys", pattern)
        return self.inner.scan_keys(pattern)

    def stats(self) -> TierStats:
        return self.inner.stats()

    def ping(self) -> bool:
        self.calls["ping"] += 1
        return self.ping_ok and "*" not in self.failing

    def close(self) -> None:
        self.inner.close()

    def reset(self) -> None:
        self.calls.clear()
        self.log.clear()


def memory_tiers(clock: Callable[[], float] | None = None) -> StateRepositories:
    kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
    return StateRepositories(
        MemoryStateRepository(HOT, **kwargs),
        MemoryStateRepository(WARM, **kwargs),
        MemoryStateRepository(COLD, **kwargs),
    )


def faulty_tiers(
    repositories: StateRepositories | None = None,
) -> tuple[StateRepositories, FaultyRepository, FaultyRepository, FaultyRepository]:
    base = repositories or memory_tiers()
    hot, warm, cold = (FaultyRepository(r) for r in base)
    return StateRepositories(hot, warm, cold), hot, warm, cold

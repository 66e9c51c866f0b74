"""Fills of :class:`~.cache.StateCache` from reads, guarded against racing writes.

A reader that fetched an old value must not put it into the cache after a writer
refreshed it. Every write or invalidation of a key takes the next number of the
cache's write sequence; readers take :meth:`~GuardedFills.fill_token` before reading a
tier, and a fill is refused when the key was written or invalidated since.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence

from .base import StoredValue
from .cache_history import AccessHistory
from .cache_lru import LRUBounds

__all__ = ["GuardedFills"]

_WRITTEN_KEYS_TRACKED = 4096


class GuardedFills(AccessHistory, LRUBounds):
    """The write sequence of :class:`~.cache.StateCache` and the fills it guards."""

    _seq: int
    _written: OrderedDict[str, int]
    _written_floor: int

    def fill_token(self) -> int:
        """Take before reading a tier; pass to :meth:`fill` afterwards."""
        with self._lock:
            return self._seq

    def written_since(self, key: str, token: int) -> bool:
        """True when ``key`` was written or invalidated after ``token`` was taken."""
        with self._lock:
            return self._written.get(key, self._written_floor) > token

    def fill(self, stored: StoredValue, token: int) -> bool:
        """Cache a value read from a tier, unless ``stored.key`` was written since ``token``."""
        with self._lock:
            if self._written.get(stored.key, self._written_floor) > token:
                return False
            self._put(stored)
            return True

    def fill_and_history(self, stored: StoredValue, token: int) -> tuple[float, ...]:
        """:meth:`fill`, then :meth:`access_history` of the key, under one lock."""
        key = stored.key
        with self._lock:
            if self._written.get(key, self._written_floor) <= token:
                self._put(stored)
            return self._times(key)

    def fill_many(self, values: Sequence[StoredValue], token: int) -> None:
        """:meth:`fill` for many values."""
        for start in range(0, len(values), 1000):
            with self._lock:
                now, wall = self.clock(), time.time()
                written, floor = self._written, self._written_floor
                for stored in values[start : start + 1000]:
                    if written.get(stored.key, floor) <= token:
                        self._put(stored, now, wall)

    def refresh(self, stored: StoredValue, token: int) -> None:
        """Cache a value written outside the key's lock: when the key was written again
        since ``token``, drop it instead, because this value may be the older one."""
        with self._lock:
            newer = self._written.get(stored.key, self._written_floor) > token
            self._mark_written(stored.key)
            if newer:
                self._drop(stored.key)
            else:
                self._put(stored)

    def _mark_written(self, key: str) -> None:
        """Give ``key`` the next number of the write sequence (lock held)."""
        self._seq += 1
        self._written[key] = self._seq
        self._written.move_to_end(key)
        if len(self._written) > _WRITTEN_KEYS_TRACKED:
            # A key we stop tracking counts as written at the newest forgotten sequence.
            self._written_floor = self._written.popitem(last=False)[1]

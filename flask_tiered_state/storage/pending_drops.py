"""The keys whose copy in one tier is stale (a newer write could not drop it): readers
skip those copies until they are deleted, so a stale copy is never served.

Each key keeps the time it became stale: a copy stored before that time is the stale
one, while a copy stored after it was written by someone else once the tier came back
(a HOT home written by another process) and must survive the delayed drop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

__all__ = ["PendingDrops"]


class PendingDrops:
    """Keys whose copy in one tier is stale and must not be read, until deleted.

    :param limit: the most keys remembered (None: no limit). Past it the set is
        cleared and :attr:`overflowed` is set; the owner must then reconcile the
        whole tier before trusting it again.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._keys: dict[str, float] = {}
        self.overflowed = False
        #: While :attr:`overflowed`: the latest time a key became stale (no copy of the
        #: forgotten keys stored after it is stale).
        self.overflow_stale_at = 0.0

    def __contains__(self, key: object) -> bool:
        # Set membership is atomic under the GIL and internally locked without it.
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __bool__(self) -> bool:
        return bool(self._keys) or self.overflowed

    def add(self, keys: Iterable[str], *, transient: bool = False) -> bool:
        """Remember ``keys``, stale from now on; False when that overflowed the limit.

        ``transient`` marks keys whose drop is about to be attempted (they are removed
        again right after); those never count against the limit.
        """
        now = time.time()
        with self._lock:
            self._keys.update(dict.fromkeys(keys, now))
            if self.overflowed:
                self.overflow_stale_at = now
            if transient or self.limit is None or len(self._keys) <= self.limit:
                return True
            self._keys.clear()
            self.overflowed = True
            self.overflow_stale_at = now
            return False

    def clear_overflow(self) -> None:
        with self._lock:
            self.overflowed = False

    def discard(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._keys.pop(key, None)

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self._keys)

    def stale_since(self) -> dict[str, float]:
        """Each key with the time (``time.time()``) its copy became stale."""
        with self._lock:
            return dict(self._keys)

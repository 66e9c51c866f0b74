"""Access history for the promotion policy: the latest access times of each key, kept
for a bounded number of keys (the least recently accessed key is forgotten first)."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterable

__all__ = ["AccessHistory"]


class AccessHistory:
    """The access times :class:`~.cache.StateCache` keeps (see its parameters)."""

    history_length: int
    max_history_keys: int
    _lock: threading.Lock
    _history: OrderedDict[str, deque[float]]

    def _record_access(self, key: str, now: float) -> None:
        """Append ``now`` to the access times of ``key`` (lock held)."""
        history = self._history.get(key)
        if history is None:
            history = self._history[key] = deque(maxlen=self.history_length)
            if len(self._history) > self.max_history_keys:
                self._history.popitem(last=False)
        else:
            self._history.move_to_end(key)
        history.append(now)

    def _times(self, key: str) -> tuple[float, ...]:
        """The access times of ``key``, oldest first (lock held)."""
        history = self._history.get(key)
        return () if history is None else tuple(history)

    def frequent(self, keys: Iterable[str], count: int, since: float) -> list[str]:
        """The keys among ``keys`` accessed at least ``count`` times after ``since``."""
        index = -count
        with self._lock:
            history = self._history
            return [
                key
                for key in keys
                if (times := history.get(key)) is not None
                and len(times) >= count
                and times[index] > since
            ]

    def access_history(self, key: str) -> tuple[float, ...]:
        """Monotonic times of the latest accesses to ``key``, oldest first."""
        with self._lock:
            return self._times(key)

"""The bounded LRU under :class:`~.cache.StateCache`: entries with their sizes and expiry
times, kept within a maximum count *and* a maximum of bytes by evicting the least recently
used first."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigurationError
from .base import StoredValue

__all__ = ["LRUBounds", "check_max_age"]

_NEVER = float("inf")


@dataclass(slots=True)
class _Entry:
    stored: StoredValue
    size: int
    cached_at: float
    last_accessed: float
    expires_at: float  # on the cache's clock: value TTL or max age, whichever is first
    hits: int = 0
    snapshot: bytes | None = None


def _positive_int(name: str, value: object) -> int:
    if type(value) is not int or value <= 0:
        raise ConfigurationError(f"{name} must be a positive integer, not {value!r}.")
    return value


def check_max_age(value: object, name: str = "max_age_seconds") -> float | None:
    """``value`` as a maximum age in seconds (None: no maximum age).

    :raises ConfigurationError: naming ``name`` when it is not a positive finite number.
    """
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 < value < _NEVER  # also refuses NaN
    ):
        raise ConfigurationError(
            f"{name} must be a positive, finite number of seconds or None (no maximum age), "
            f"not {value!r}."
        )
    return float(value)


class LRUBounds:
    """The entries of :class:`~.cache.StateCache` and their bounds: expiry, drops and
    eviction. Every method is called with the cache's lock held."""

    max_entries: int
    max_bytes: int
    clock: Callable[[], float]
    _max_age: float
    _entries: OrderedDict[str, _Entry]
    _bytes: int
    _evictions: int
    _invalidations: int
    _expirations: int

    def _expire(self, key: str) -> None:
        self._bytes -= self._entries.pop(key).size
        self._expirations += 1

    def _drop(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self._bytes -= entry.size
        self._invalidations += 1
        return True

    def _put(self, stored: StoredValue, now: float | None = None, wall: float = 0.0) -> None:
        """Cache ``stored``; ``now`` and ``wall`` (the cache clock and ``time.time()``),
        when given, are one reading shared by a batch."""
        key = stored.key
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        metadata = stored.metadata
        size = metadata.size
        if size > self.max_bytes:
            return
        if now is None:
            now, wall = self.clock(), time.time()
        expires_at = now + self._max_age
        ttl = metadata.ttl_seconds
        if ttl is not None:
            # A value with a TTL (a HOT home, a HOT copy) leaves the cache when it expires.
            expires_at = min(expires_at, now + metadata.stored_at + ttl - wall)
        self._entries[key] = _Entry(stored, size, now, now, expires_at)
        self._bytes += size
        self._evict(keep=key)

    def _evict(self, *, keep: str) -> None:
        entries = self._entries
        while len(entries) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(entries))
            if oldest == keep and len(entries) == 1:
                # Only the entry just added is left and it is still too large.
                self._bytes -= entries.pop(keep).size
                self._evictions += 1
                return
            if oldest == keep:
                entries.move_to_end(keep)
                continue
            self._bytes -= entries.pop(oldest).size
            self._evictions += 1

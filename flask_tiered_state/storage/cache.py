"""The in-process cache in front of the tiers.

:class:`StateCache` is an LRU bounded by entry count *and* bytes. It holds the
verified :class:`~flask_tiered_state.storage.base.StoredValue` read from (or written
to) a tier. :meth:`StateCache.get` hands out a fresh decoded copy on every call, so a
caller can never mutate the cached value in place: the first hit decodes the JSON
text once and keeps a pickle of the result; later hits unpickle it, which measured
about 5x faster than ``json.loads`` of the text and 6-10x faster than
``copy.deepcopy`` of the decoded value. The pickle is made here from JSON-decoded
values only and never leaves the process.

The LRU is an :class:`collections.OrderedDict` rather than ``cachetools.LRUCache``:
cachetools bounds a single measure, while this cache needs two bounds, an eviction
counter and a per-key write sequence, and ``OrderedDict.move_to_end`` /
``popitem(last=False)`` are O(1) in C.

Every entry has an expiry time on the cache's clock, computed once when it is
cached: the earlier of the value's own TTL (HOT copies, HOT homes) and the cache's
``max_age_seconds`` (the backstop against writes of other processes whose
invalidation message never arrived). A hit costs one clock read and one comparison.

Fills from reads race with writes: a reader that fetched an old value must not put
it into the cache after a writer refreshed it. Readers take :meth:`fill_token`
before reading a tier and call :meth:`fill`, which is refused when the key was
written or invalidated since the token was taken.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..json_codec import loads
from .base import StoredValue
from .cache_fills import _WRITTEN_KEYS_TRACKED as _WRITTEN_KEYS_TRACKED
from .cache_fills import GuardedFills
from .cache_lru import _NEVER as _NEVER
from .cache_lru import _Entry as _Entry
from .cache_lru import _positive_int as _positive_int
from .cache_lru import check_max_age as check_max_age
from .cache_stats import CacheEntryInfo as CacheEntryInfo
from .cache_stats import CacheStats as CacheStats

__all__ = ["MISSING", "CacheEntryInfo", "CacheStats", "StateCache"]

#: Returned by :meth:`StateCache.get` for an absent key (``None`` is a valid JSON value).
MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "MISSING"})()


class StateCache(GuardedFills):
    """A thread-safe LRU of verified values, bounded by entries and bytes.

    :param max_entries: at most this many keys are cached.
    :param max_bytes: at most this many bytes are cached, counting each value's UTF-8
        JSON text plus its decoded snapshot once one exists. A value larger than this
        on its own is never cached.
    :param history_length: how many access times are kept per key.
    :param max_history_keys: for how many keys access times are kept (LRU; default
        ``max_entries``).
    :param max_age_seconds: an entry older than this (counted from when it was cached,
        not from its last hit) is a miss, so values changed by other processes are
        re-read at the latest after this long even when no invalidation reaches this
        process. None: no maximum age.
    :param unsynced_max_age_seconds: the maximum age while the cache is not
        :attr:`synchronised` (its store's invalidation subscriber is disconnected).
    :param clock: monotonic seconds, injectable for tests.
    """

    def __init__(
        self,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        *,
        history_length: int = 32,
        max_history_keys: int | None = None,
        max_age_seconds: float | None = 300.0,
        unsynced_max_age_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = _positive_int("max_entries", max_entries)
        self.max_bytes = _positive_int("max_bytes", max_bytes)
        self.history_length = _positive_int("history_length", history_length)
        #: Batches larger than this are scans: they neither fill the cache nor record
        #: accesses, so a bulk read or write does not push out the working set.
        self.scan_threshold = max(100, self.max_entries // 10)
        self.max_history_keys = _positive_int(
            "max_history_keys", max_entries if max_history_keys is None else max_history_keys
        )
        self.max_age_seconds = check_max_age(max_age_seconds)
        self._max_age = _NEVER if self.max_age_seconds is None else self.max_age_seconds
        unsynced = check_max_age(unsynced_max_age_seconds, "unsynced_max_age_seconds")
        assert unsynced is not None
        #: While :attr:`synchronised` is False, only entries cached this recently are hits.
        self.unsynced_max_age_seconds = unsynced
        #: False while changes of other processes may go unheard (the invalidation
        #: subscriber is disconnected): entries then serve for
        #: :attr:`unsynced_max_age_seconds` after they were cached, no longer.
        self.synchronised = True
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._history: OrderedDict[str, deque[float]] = OrderedDict()
        self._seq = 0
        self._written: OrderedDict[str, int] = OrderedDict()
        self._written_floor = 0
        self._hits = self._misses = self._evictions = self._invalidations = 0
        self._expirations = 0

    # -- reads ---------------------------------------------------------------

    def _lookup(self, key: str, now: float) -> _Entry | None:
        """Find ``key``, count the lookup and record the access (lock held)."""
        self._record_access(key, now)
        entry = self._entries.get(key)
        if entry is not None and (
            entry.expires_at <= now
            or (not self.synchronised and now - entry.cached_at > self.unsynced_max_age_seconds)
        ):
            self._expire(key)
            entry = None
        if entry is None:
            self._misses += 1
            return None
        self._entries.move_to_end(key)
        self._hits += 1
        entry.hits += 1
        entry.last_accessed = now
        return entry

    def get(self, key: str, default: Any = MISSING) -> Any:
        """A fresh decoded copy of the cached value, or ``default`` when not cached."""
        with self._lock:
            entry = self._lookup(key, self.clock())
            if entry is None:
                return default
            snapshot = entry.snapshot
        if snapshot is not None:
            return pickle.loads(snapshot)
        return self._decode(key, entry)

    def lookup(self, key: str) -> tuple[Any, int]:
        """:meth:`get` for a read that goes to the tiers on a miss: the value (or
        :data:`MISSING`) and the :meth:`fill_token` taken under the same lock."""
        with self._lock:
            token = self._seq
            entry = self._lookup(key, self.clock())
            if entry is None:
                return MISSING, token
            snapshot = entry.snapshot
        if snapshot is not None:
            return pickle.loads(snapshot), token
        return self._decode(key, entry), token

    def _decode(self, key: str, entry: _Entry) -> Any:
        """The first hit of ``entry``: decode its text and keep a pickle for later hits."""
        value = loads(entry.stored.value)
        snapshot = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if self._entries.get(key) is entry and entry.snapshot is None:
                entry.snapshot = snapshot
                entry.size += len(snapshot)
                self._bytes += len(snapshot)
                self._evict(keep=key)
        return value

    def get_entry(self, key: str) -> StoredValue | None:
        """The cached :class:`StoredValue` (immutable), or None; counts as an access."""
        with self._lock:
            entry = self._lookup(key, self.clock())
            return None if entry is None else entry.stored

    def get_entries(self, keys: Sequence[str], *, scan: bool = False) -> dict[str, StoredValue]:
        """The cached values among ``keys``, under one lock acquisition.

        :param scan: a bulk read: count hits and misses but record no accesses and
            leave the LRU order alone, so a scan does not push out the working set.
        """
        found: dict[str, StoredValue] = {}
        with self._lock:
            if scan:
                entries, now = self._entries, self.clock()
                for key in keys:
                    entry = entries.get(key)
                    if entry is None:
                        continue
                    if entry.expires_at <= now or (
                        not self.synchronised
                        and now - entry.cached_at > self.unsynced_max_age_seconds
                    ):
                        self._expire(key)
                    else:
                        found[key] = entry.stored
                self._hits += len(found)
                self._misses += len(keys) - len(found)
                return found
            now = self.clock()
            for key in keys:
                entry = self._lookup(key, now)
                if entry is not None:
                    found[key] = entry.stored
        return found

    def info(self, key: str) -> CacheEntryInfo | None:
        """The entry's metadata and cache bookkeeping, without counting an access."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            return CacheEntryInfo(
                key, entry.stored.metadata, entry.size, entry.cached_at,
                entry.last_accessed, entry.hits,
            )  # fmt: skip

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    # -- writes --------------------------------------------------------------
    def set(self, stored: StoredValue) -> None:
        """Cache a value that was just written to its tier (refuses no write)."""
        with self._lock:
            self._mark_written(stored.key)
            self._put(stored)

    def set_many(self, values: Sequence[StoredValue]) -> None:
        # In slices, so that a huge batch does not hold readers off for long.
        for start in range(0, len(values), 1000):
            with self._lock:
                now, wall = self.clock(), time.time()
                for stored in values[start : start + 1000]:
                    self._mark_written(stored.key)
                    self._put(stored, now, wall)

    def invalidate(self, key: str) -> bool:
        """Drop ``key``; in-flight fills of it are refused. True if it was cached."""
        with self._lock:
            self._mark_written(key)
            return self._drop(key)

    def invalidate_many(self, keys: Iterable[str]) -> int:
        with self._lock:
            dropped = 0
            for key in keys:
                self._mark_written(key)
                dropped += self._drop(key)
            return dropped

    def clear(self) -> None:
        """Drop every entry and access history; counters are kept."""
        with self._lock:
            self._seq += 1
            self._written.clear()
            self._written_floor = self._seq
            self._invalidations += len(self._entries)
            self._entries.clear()
            self._history.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                len(self._entries), self._bytes, self.max_entries, self.max_bytes,
                self._hits, self._misses, self._evictions, self._invalidations,
                self._expirations, self.max_age_seconds,
            )  # fmt: skip

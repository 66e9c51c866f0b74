"""The in-process cache in front of the tiers.

:class:`StateCache` is an LRU bounded by entry count *and* bytes. It holds the
verified :class:`~flask_tiered_state.storage.base.StoredValue` read from (or written
to) a tier. :meth:`StateCache.get` hands out a fresh decoded copy on every call, so a
caller can never mutate the cached value in place: the first hit decodes the JSON
text once and keeps a pickle of the result; later hits unpickle it, which measured
about 5x faster than ``json.loads`` of the text and 6-10x faster than
``copy.deepcopy`` of the decoded value. The pickle is made here from JSON-decoded
values only and never leaves the process. Pickling recurses twice per level of arrays
and objects, so a value nested a few hundred levels deep (stored before
``TIERED_STATE_MAX_JSON_DEPTH`` existed, or written to the store directly) cannot be
pickled: such an entry keeps no snapshot and every hit decodes its text instead, so
whatever was cached stays readable.

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
from dataclasses import asdict, dataclass
from typing import Any

from cachetools import LRUCache

from ..json_codec import loads
from .base import StateMetadata, StoredValue
from .checks import int_option, seconds_option

__all__ = ["MISSING", "CacheEntryInfo", "CacheStats", "StateCache", "check_max_age"]

#: Returned by :meth:`StateCache.get` for an absent key (``None`` is a valid JSON value).
MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "MISSING"})()
_WRITTEN_KEYS_TRACKED = 4096
_NEVER = float("inf")


@dataclass(slots=True)
class _Entry:
    stored: StoredValue
    size: int
    cached_at: float
    last_accessed: float
    expires_at: float  # on the cache's clock: value TTL or max age, whichever is first
    hits: int = 0
    #: The pickle of the decoded value (None: not made yet; empty: cannot be made, so
    #: every hit decodes the text).
    snapshot: bytes | None = None


def _positive_int(name: str, value: object) -> int:
    checked = int_option(name, value)
    assert checked is not None
    return checked


def check_max_age(value: object, name: str = "max_age_seconds") -> float | None:
    """``value`` as a maximum age in seconds (None: no maximum age)."""
    return seconds_option(name, value)


@dataclass(frozen=True, slots=True)
class CacheEntryInfo:
    """What the cache knows about one cached key."""

    key: str
    metadata: StateMetadata
    size: int
    cached_at: float
    last_accessed: float
    hits: int


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters and sizes of a :class:`StateCache`."""

    entries: int
    bytes: int
    max_entries: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int
    invalidations: int
    #: Entries that left the cache because their TTL or the maximum age ran out.
    expirations: int
    max_age_seconds: float | None = None

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hit_rate": self.hit_rate}


class StateCache:
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
        unsynced = seconds_option(
            "unsynced_max_age_seconds", unsynced_max_age_seconds, optional=False
        )
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
        #: Access times per key, for the promotion policy: a bounded map, LRU first out.
        self._history: LRUCache[str, deque[float]] = LRUCache(self.max_history_keys)
        self._seq = 0
        self._written: OrderedDict[str, int] = OrderedDict()
        self._written_floor = 0
        self._hits = self._misses = self._evictions = self._invalidations = 0
        self._expirations = 0

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
        if snapshot:
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
        if snapshot:
            return pickle.loads(snapshot), token
        return self._decode(key, entry), token

    def _decode(self, key: str, entry: _Entry) -> Any:
        """The first hit of ``entry``: decode its text and keep a pickle for later hits
        (a hit of an entry that cannot be pickled: decode its text)."""
        value = loads(entry.stored.value)
        if entry.snapshot is not None:
            return value
        try:
            snapshot = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except RecursionError:
            snapshot = b""
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

    # -- fills guarded against racing writes ---------------------------------

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

    # -- access history (for the promotion policy) ----------------------------

    def _record_access(self, key: str, now: float) -> None:
        """Append ``now`` to the access times of ``key`` (lock held)."""
        history = self._history.get(key)  # a hit counts as the key's latest use
        if history is None:
            history = self._history[key] = deque(maxlen=self.history_length)
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

    # -- the LRU: expiry, drops, eviction (lock held) ------------------------

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

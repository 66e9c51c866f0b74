"""In-process repository: the embedded HOT default, and the reference implementation
of the :class:`~flask_tiered_state.storage.base.StateRepository` contract."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ...errors import ConcurrencyError, ConfigurationError
from ..base import (
    BackendContext,
    StaleCopy,
    StateCategory,
    StateMetadata,
    StateRepository,
    StoredValue,
    TierStats,
    WriteRequest,
    check_options,
    make_metadata,
)
from ..checks import check_ttl, check_version, check_write
from ..keys import glob_to_regex, validate_key, validate_keys, validate_pattern

__all__ = ["MemoryStateRepository"]


class MemoryStateRepository:
    """A thread-safe dict with per-key TTL.

    :param category: the tier it serves (HOT by default).
    :param default_ttl_seconds: TTL for writes that give none; None keeps values forever.
    :param clock: monotonic seconds, injectable for tests.
    """

    backend = "memory"

    def __init__(
        self,
        category: StateCategory = StateCategory.HOT,
        *,
        default_ttl_seconds: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if default_ttl_seconds is not None:
            check_ttl(default_ttl_seconds, "default_ttl_seconds", setting=True)
        self.category = category
        self.default_ttl_seconds = default_ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (value, metadata, expires_at or None)
        self._data: dict[str, tuple[str, StateMetadata, float | None]] = {}

    # -- reads ---------------------------------------------------------------

    def _live(self, key: str, now: float) -> tuple[str, StateMetadata, float | None] | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[2] is not None and entry[2] <= now:
            del self._data[key]
            return None
        return entry

    def fetch(self, key: str) -> StoredValue | None:
        validate_key(key)
        with self._lock:
            entry = self._live(key, self._clock())
        return None if entry is None else StoredValue(key, entry[0], entry[1])

    def fetch_many(self, keys: Sequence[str]) -> dict[str, StoredValue]:
        keys = validate_keys(keys)
        found: dict[str, StoredValue] = {}
        with self._lock:
            now = self._clock()
            for key in keys:
                entry = self._live(key, now)
                if entry is not None:
                    found[key] = StoredValue(key, entry[0], entry[1])
        return found

    # -- writes --------------------------------------------------------------

    def _ttl(self, ttl_seconds: int | None) -> int | None:
        ttl = self.default_ttl_seconds if ttl_seconds is None else check_ttl(ttl_seconds)
        return ttl

    def _put(
        self, key: str, value: str, version: int | None, ttl_seconds: int | None, now: float
    ) -> StateMetadata:
        ttl = self._ttl(ttl_seconds)
        if version is None:
            previous = self._live(key, now)
            version = 1 if previous is None else previous[1].version + 1
        metadata = make_metadata(value, version=version, category=self.category, ttl_seconds=ttl)
        self._data[key] = (value, metadata, None if ttl is None else now + ttl)
        return metadata

    def store(
        self,
        key: str,
        value: str,
        *,
        version: int | None = None,
        ttl_seconds: int | None = None,
        expected_version: int | None = None,
    ) -> StateMetadata:
        validate_key(key)
        with self._lock:
            now = self._clock()
            if expected_version is not None:
                current = self._live(key, now)
                actual = 0 if current is None else current[1].version
                if actual != expected_version:
                    raise ConcurrencyError(key, expected_version, actual)
            return self._put(key, value, version, ttl_seconds, now)

    def store_many(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        for item in items:
            validate_key(item.key)
            self._ttl(item.ttl_seconds)
        with self._lock:
            now = self._clock()
            return {
                item.key: self._put(item.key, item.value, item.version, item.ttl_seconds, now)
                for item in items
            }

    def delete(self, key: str) -> bool:
        validate_key(key)
        with self._lock:
            return self._live(key, self._clock()) is not None and bool(self._data.pop(key, None))

    def delete_many(self, keys: Sequence[str]) -> int:
        keys = validate_keys(keys)
        deleted = 0
        with self._lock:
            now = self._clock()
            for key in dict.fromkeys(keys):
                if self._live(key, now) is not None:
                    del self._data[key]
                    deleted += 1
        return deleted

    def store_copies(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        return self._put_copies(items, over_older=True)

    def add_copies(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        """Store each item only where the key is absent (see the Redis repository's
        ``add_copies``)."""
        return self._put_copies(items, over_older=False)

    def _put_copies(
        self, items: Sequence[WriteRequest], *, over_older: bool
    ) -> dict[str, StateMetadata]:
        """Store each item where the key is absent, or (``over_older``) holds an older
        version."""
        for item in items:
            check_write(item.key, item.value, item.version, item.ttl_seconds)
            check_version(item.version)
        stored: dict[str, StateMetadata] = {}
        with self._lock:
            now = self._clock()
            for item in items:
                current = self._live(item.key, now)
                assert item.version is not None
                if current is None or (over_older and current[1].version < item.version):
                    stored[item.key] = self._put(
                        item.key, item.value, item.version, item.ttl_seconds, now
                    )
        return stored

    def delete_unchanged(self, copies: Sequence[StoredValue]) -> list[str]:
        validate_keys([c.key for c in copies])
        deleted = []
        with self._lock:
            now = self._clock()
            for copy in copies:
                current = self._live(copy.key, now)
                if current is not None and (current[1].version, current[1].checksum) == (
                    copy.metadata.version,
                    copy.metadata.checksum,
                ):
                    del self._data[copy.key]
                    deleted.append(copy.key)
        return deleted

    def delete_stale(self, fences: Mapping[str, StaleCopy]) -> int:
        validate_keys(list(fences))
        deleted = 0
        with self._lock:
            now = self._clock()
            for key, fence in fences.items():
                current = self._live(key, now)
                meta = None if current is None else current[1]
                if meta is not None and fence.removes(meta.version, meta.checksum, meta.stored_at):
                    del self._data[key]
                    deleted += 1
        return deleted

    # -- scans ---------------------------------------------------------------

    def keys(self, pattern: str = "*") -> Iterator[str]:
        regex = glob_to_regex(validate_pattern(pattern))
        with self._lock:
            now = self._clock()
            snapshot = [k for k in list(self._data) if self._live(k, now) is not None]
        return iter([k for k in snapshot if regex.fullmatch(k)])

    def scan_keys(self, pattern: str = "*") -> Iterator[str]:
        """:meth:`keys`: its snapshot of the names is small beside the values this tier
        already holds in memory."""
        return self.keys(pattern)

    def stats(self) -> TierStats:
        with self._lock:
            now = self._clock()
            live = [e for k in list(self._data) if (e := self._live(k, now)) is not None]
        return TierStats(
            backend=self.backend,
            category=self.category,
            key_count=len(live),
            bytes=sum(e[1].size for e in live),
        )

    def ping(self) -> bool:
        return True

    def clear(self) -> None:
        """Drop every value (tests, ``reset_instance``)."""
        with self._lock:
            self._data.clear()

    def close(self) -> None:
        """Nothing to release; values stay until the object is dropped."""


def parse_url(url: str, options: Mapping[str, Any], context: BackendContext) -> dict[str, Any]:
    """The arguments of :class:`MemoryStateRepository` for ``memory://`` and ``options``."""
    if url.rstrip("/") != "memory:":
        raise ConfigurationError(
            f"The in-process backend takes the URL 'memory://' alone, not {url!r}; its "
            "settings go in the tier's options."
        )
    return {
        **check_options(options, MemoryStateRepository.__init__),
        "category": context.category,
    }


def from_url(url: str, options: Mapping[str, Any], context: BackendContext) -> StateRepository:
    """The ``memory://`` backend (see :mod:`~flask_tiered_state.storage.registry`)."""
    return MemoryStateRepository(**parse_url(url, options, context))

"""What :class:`~.repository.S3StateRepository` remembers of the objects it wrote or
read: each key's version and ETag, so that rewriting the key needs no HEAD.

A remembered pair is only ever used as the condition of a write (``If-Match: <etag>``),
which S3 refuses when the object changed or is gone; the repository then forgets the
key and reads its version again. Another writer storing the very same bytes leaves the
ETag unchanged, so that write is not noticed (see the repository's docstring).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from cachetools import LRUCache

from ...errors import ConfigurationError

__all__ = ["DEFAULT_REMEMBERED_VERSIONS", "VersionMemory"]

#: Keys remembered by default: about 35 MB at most, for 40-character keys.
DEFAULT_REMEMBERED_VERSIONS = 10_000


class VersionMemory:
    """A thread-safe map of key to (version, ETag), bounded to ``max_entries`` by
    forgetting the key least recently used (each use of an entry is followed by a write
    that remembers or forgets it); ``max_entries=0`` remembers nothing."""

    def __init__(self, max_entries: int = DEFAULT_REMEMBERED_VERSIONS) -> None:
        if type(max_entries) is not int or max_entries < 0:
            raise ConfigurationError(
                f"remembered_versions must be a non-negative integer (0 remembers none), "
                f"not {max_entries!r}."
            )
        self.max_entries = max_entries
        self._entries: LRUCache[str, tuple[int, str]] = LRUCache(max(1, max_entries))
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> tuple[int, str] | None:
        """The remembered (version, ETag) of ``key``, or None."""
        with self._lock:
            return self._entries.get(key)

    def remember(self, key: str, version: int, etag: str | None) -> None:
        """Record that ``key`` now holds ``version`` with ``etag`` (None: forget it)."""
        if etag is None or self.max_entries == 0:
            self.forget(key)
            return
        with self._lock:
            self._entries[key] = (version, etag)

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def forget_many(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)

    def known(self, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` are remembered."""
        with self._lock:
            return {key for key in keys if key in self._entries}

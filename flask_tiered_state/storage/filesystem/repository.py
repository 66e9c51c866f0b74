"""The embedded COLD tier: one file per key in a directory.

Keys map to file names through :mod:`.names` (a reversible escape that never
yields a path separator, ``.`` or ``..``). Each file holds one JSON header line (key,
checksum, size, version, category, stored_at, ttl_seconds) and then the value's UTF-8
bytes. Writes go to a temporary file in the same directory, are flushed and fsynced,
renamed over the target with :func:`os.replace` and the directory is fsynced: a reader
sees the old or the new file, never a mixture. Versioned writes and deletes of one key
are serialised by a lock striped by key: a thread lock, plus (on POSIX) a byte-range
lock on ``.lock`` so that several processes sharing the directory are serialised too.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from ...errors import (
    ConcurrencyError,
    ConfigurationError,
    IntegrityError,
    InvalidRequestError,
    TierUnavailableError,
)
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
)
from ..checks import check_expected_version, check_write
from ..keys import glob_literal_prefix, glob_to_regex, validate_key, validate_keys, validate_pattern
from .names import encode_key, relative_parts, walk

if sys.platform != "win32":
    import fcntl

__all__ = ["FilesystemStateRepository"]

_STRIPES = 64


class FilesystemStateRepository:
    """Values with metadata in one file per key under ``root``.

    The tier has no expiry: ``ttl_seconds`` is checked and then ignored (metadata
    reports ``ttl_seconds=None``).

    :param root: the directory (created if missing); nothing is ever written outside it.
    :param category: the tier it serves (COLD by default).
    :param fsync: flush files and directories to disk before a write returns; turn off
        only for throw-away data (tests, caches).
    """

    backend = "filesystem"

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        category: StateCategory = StateCategory.COLD,
        fsync: bool = True,
    ) -> None:
        self.root = Path(root).absolute()
        self.category = category
        self.fsync = fsync
        self._locks = [threading.Lock() for _ in range(_STRIPES)]
        self._lock_fd: int | None = None
        self._lock_fd_guard = threading.Lock()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if sys.platform != "win32":
                self._lock_file()
        except OSError as exc:
            raise ConfigurationError(
                f"The COLD directory {str(self.root)!r} cannot be used: {exc}. Give a "
                "writable directory path."
            ) from exc

    def __repr__(self) -> str:
        return f"<FilesystemStateRepository {str(self.root)!r}>"

    def _unavailable(self, action: str, exc: OSError) -> TierUnavailableError:
        return TierUnavailableError(
            self.category.value,
            f"The {self.category.value.upper()} tier (directory {str(self.root)!r}) could "
            f"not {action}: {exc}",
            details={"backend": "filesystem", "location": str(self.root), "operation": action},
        )

    def path_of(self, key: str) -> Path:
        """The file that holds ``key`` (always inside :attr:`root`)."""
        return self.root.joinpath(*relative_parts(validate_key(key)))

    def _lock_file(self) -> int:
        # POSIX record locks belong to the process and vanish when ANY descriptor of the
        # file is closed, so there is exactly one descriptor, closed only by close().
        with self._lock_fd_guard:
            if self._lock_fd is None:
                self._lock_fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            return self._lock_fd

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        stripe = zlib.crc32(key.encode("ascii")) % _STRIPES
        with self._locks[stripe]:
            if sys.platform == "win32":  # threads are serialised, processes are not
                yield
                return
            fd = self._lock_file()
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, stripe, os.SEEK_SET)
            try:
                yield
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, stripe, os.SEEK_SET)

    # -- reads ---------------------------------------------------------------

    def _read(self, key: str, path: Path) -> StoredValue | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._unavailable(f"read {key!r}", exc) from exc
        header, _, body = data.partition(b"\n")
        digest = sha256(body).hexdigest()
        try:
            meta = json.loads(header)
            if meta["key"] != key or meta["checksum"] != digest or meta["size"] != len(body):
                raise ValueError("the checksum, size or key does not match")
            metadata = StateMetadata(
                digest,
                len(body),
                int(meta["version"]),
                StateCategory(meta["category"]),
                float(meta["stored_at"]),
                meta["ttl_seconds"],
            )
            return StoredValue(key, body.decode("utf-8"), metadata)
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(
                key,
                f"The file {str(path)!r} for {key!r} is corrupt ({exc}); it was not returned. "
                "Write the key again or restore it from another tier.",
                details={"path": str(path)},
            ) from None

    def fetch(self, key: str) -> StoredValue | None:
        return self._read(key, self.path_of(key))

    def fetch_many(self, keys: Sequence[str]) -> dict[str, StoredValue]:
        found = {}
        for key in dict.fromkeys(validate_keys(keys)):
            entry = self._read(key, self.path_of(key))
            if entry is not None:
                found[key] = entry
        return found

    def _current_version(self, key: str, path: Path, strict: bool) -> int:
        """0 when absent; a damaged header is an error only for compare-and-set (else the
        write replaces the file as version 1)."""
        try:
            with path.open("rb") as handle:
                header = handle.readline()
            return int(json.loads(header)["version"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError) as exc:
            if not strict:
                return 0
            raise IntegrityError(
                key,
                f"The file {str(path)!r} for {key!r} has a damaged header ({exc}), so its "
                "version is unknown; compare-and-set refused. Write it without "
                "expected_version to replace it.",
            ) from None

    # -- writes --------------------------------------------------------------

    def _write(
        self,
        key: str,
        value: str,
        version: int | None,
        expected: int | None,
        dirty: set[str],
        *,
        locked: bool = False,
    ) -> StateMetadata:
        path = self.path_of(key)
        body = value.encode("utf-8")
        with nullcontext() if locked else self._locked(key):
            if version is None or expected is not None:
                current = self._current_version(key, path, expected is not None)
                if expected is not None and current != expected:
                    raise ConcurrencyError(key, expected, current)
                version = current + 1 if version is None else version
            metadata = StateMetadata(
                sha256(body).hexdigest(), len(body), version, self.category, time.time()
            )
            header = json.dumps({"key": key, **metadata.to_dict()}, separators=(",", ":"))
            directory = str(path.parent)
            if path.parent != self.root:  # a long key: its segment directories
                os.makedirs(directory, exist_ok=True)
                dirty.update(str(p) for p in path.parents if p.is_relative_to(self.root))
            fd, temporary = tempfile.mkstemp(prefix=".tmp-", dir=directory)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(header.encode("utf-8") + b"\n" + body)
                    handle.flush()
                    if self.fsync:
                        os.fsync(handle.fileno())
                os.replace(temporary, path)
            except BaseException:
                with suppress(OSError):
                    os.unlink(temporary)
                raise
        dirty.add(directory)
        return metadata

    def _sync(self, directories: set[str]) -> None:
        if self.fsync and hasattr(os, "O_DIRECTORY"):
            for directory in directories:
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def store(
        self,
        key: str,
        value: str,
        *,
        version: int | None = None,
        ttl_seconds: int | None = None,
        expected_version: int | None = None,
    ) -> StateMetadata:
        check_write(key, value, version, ttl_seconds)
        if expected_version is not None:
            check_expected_version(expected_version)
        dirty: set[str] = set()
        try:
            metadata = self._write(key, value, version, expected_version, dirty)
            self._sync(dirty)
        except OSError as exc:
            raise self._unavailable(f"write {key!r}", exc) from exc
        return metadata

    def store_many(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        """Write every item, then fsync each directory touched once. Not all or nothing:
        after a failure the items before it are stored."""
        for item in items:
            check_write(item.key, item.value, item.version, item.ttl_seconds)
        dirty: set[str] = set()
        written: dict[str, StateMetadata] = {}
        try:
            for item in items:
                written[item.key] = self._write(item.key, item.value, item.version, None, dirty)
            self._sync(dirty)
        except OSError as exc:
            raise self._unavailable(f"write {len(items)} keys", exc) from exc
        return written

    def delete(self, key: str) -> bool:
        return self._delete_if(validate_key(key), lambda *_: True)

    def delete_many(self, keys: Sequence[str]) -> int:
        return sum(self.delete(key) for key in dict.fromkeys(validate_keys(keys)))

    def store_copies(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        """Write each copy whose key is absent or older, under the key's lock; then fsync
        each directory touched once."""
        for item in items:
            check_write(item.key, item.value, item.version, item.ttl_seconds)
            if item.version is None:
                raise InvalidRequestError(
                    f"store_copies needs the version of every copy; {item.key!r} has none.",
                    details={"key": item.key},
                )
        dirty: set[str] = set()
        written: dict[str, StateMetadata] = {}
        try:
            for item in items:
                path = self.path_of(item.key)
                with self._locked(item.key):
                    if self._current_version(item.key, path, False) >= (item.version or 0):
                        continue
                    written[item.key] = self._write(
                        item.key, item.value, item.version, None, dirty, locked=True
                    )
            self._sync(dirty)
        except OSError as exc:
            raise self._unavailable(f"write {len(items)} copies", exc) from exc
        return written

    def delete_unchanged(self, copies: Sequence[StoredValue]) -> list[str]:
        """Delete each key whose file still holds exactly the copy, under the key's lock."""
        validate_keys([c.key for c in copies])
        return [c.key for c in copies if self._delete_if(c.key, _is_copy(c))]

    def delete_stale(self, fences: Mapping[str, StaleCopy]) -> int:
        """Delete each key whose file its fence calls stale, under the key's lock."""
        validate_keys(list(fences))
        return sum(self._delete_if(key, fence.removes) for key, fence in fences.items())

    def _delete_if(self, key: str, doomed: Callable[[int, str, float], bool]) -> bool:
        path = self.path_of(key)
        try:
            with self._locked(key):
                try:
                    with path.open("rb") as handle:
                        header = json.loads(handle.readline())
                    version, checksum = int(header["version"]), str(header["checksum"])
                    stored_at = float(header["stored_at"])
                except FileNotFoundError:
                    return False
                except (ValueError, KeyError, TypeError):
                    version, checksum, stored_at = 0, "", 0.0  # damaged: older than any copy
                if not doomed(version, checksum, stored_at):
                    return False
                path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._unavailable(f"delete {key!r}", exc) from exc
        return True

    # -- scans ---------------------------------------------------------------

    def keys(self, pattern: str = "*") -> Iterator[str]:
        """Keys matching the glob; only names sharing the pattern's literal prefix are
        decoded."""
        regex = glob_to_regex(validate_pattern(pattern))
        prefix = encode_key(glob_literal_prefix(pattern))
        try:
            found = [key for key, _ in walk(str(self.root), prefix)]
        except OSError as exc:
            raise self._unavailable(f"list keys matching {pattern!r}", exc) from exc
        return iter([key for key in found if regex.fullmatch(key)])

    def scan_keys(self, pattern: str = "*") -> Iterator[str]:
        """The keys :meth:`keys` finds, streamed from the directory walk: memory stays
        that of the directories open at once, however many keys match."""
        regex = glob_to_regex(validate_pattern(pattern))
        return self._stream_keys(pattern, regex)

    def _stream_keys(self, pattern: str, regex: re.Pattern[str]) -> Iterator[str]:
        prefix = encode_key(glob_literal_prefix(pattern))
        try:
            for key, _ in walk(str(self.root), prefix):
                if regex.fullmatch(key):
                    yield key
        except OSError as exc:
            raise self._unavailable(f"list keys matching {pattern!r}", exc) from exc

    def stats(self) -> TierStats:
        """Key count and the bytes of the value files (headers included)."""
        count = size = 0
        try:
            for _, entry in walk(str(self.root), ""):
                count += 1
                size += entry.stat(follow_symlinks=False).st_size
        except OSError as exc:
            raise self._unavailable("report stats", exc) from exc
        return TierStats(
            backend=self.backend,
            category=self.category,
            key_count=count,
            bytes=size,
            extra={"location": str(self.root)},
        )

    def ping(self) -> bool:
        return os.access(self.root, os.W_OK | os.X_OK)

    def close(self) -> None:
        """Close the lock file (a later write opens it again)."""
        with self._lock_fd_guard:
            fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)


def _is_copy(copy: StoredValue) -> Callable[[int, str, float], bool]:
    """A test of a file's (version, checksum, stored_at): True for exactly ``copy``."""
    expected = (copy.metadata.version, copy.metadata.checksum)
    return lambda version, checksum, _: (version, checksum) == expected


def parse_url(url: str, options: Mapping[str, Any], context: BackendContext) -> dict[str, Any]:
    """The arguments of :class:`FilesystemStateRepository` for ``url`` and ``options``."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or parts.query or not parts.path:
        raise ConfigurationError(
            f"The directory URL {url!r} is not supported; use file:///absolute/path, or "
            "file:relative/path under the app's local directory."
        )
    path = Path(url2pathname(parts.path))
    if not path.is_absolute():
        if context.local_dir is None:
            raise ConfigurationError(
                f"The directory URL {url!r} is relative and no local_dir is set; use "
                "file:///absolute/path."
            )
        path = context.local_dir / path
    chosen = check_options(options, FilesystemStateRepository.__init__, fixed=("category",))
    return {"root": path, "category": context.category, **chosen}


def from_url(url: str, options: Mapping[str, Any], context: BackendContext) -> StateRepository:
    """The ``file:`` backend (see :mod:`~flask_tiered_state.storage.registry`):
    ``file:///absolute/dir``, or ``file:relative/dir`` under the app's ``local_dir``;
    options are the keyword arguments of :class:`FilesystemStateRepository`."""
    return FilesystemStateRepository(**parse_url(url, options, context))

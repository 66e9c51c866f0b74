"""The archive format of backups and checkpoints: chunked, compressed, checksummed.

An archive is a folder (a directory, or a prefix in an S3 bucket) named by its id::

    <destination>/<archive_id>/records-000000.jsonl.gz
                               records-000001.jsonl.gz
                               history-000000.jsonl.gz
                               manifest.json

Items (JSON objects) go into *sections* (``records``, ``history``, ...); each section
is a run of *chunks*: gzip files of JSON lines, at most ``chunk_items`` items or about
``chunk_bytes`` bytes of JSON each, so a writer or reader holds one chunk at a time and
its memory stays flat however large the archive. The manifest, written **last**, names
every chunk with its item count, size, sha256 and the digests of its 4 KiB blocks; an
archive without a manifest (a backup that crashed half-way) is incomplete and is never
listed. The manifest carries a sha256 of its own content too.

A reader checks each chunk against the manifest before yielding any of its items; a
damaged chunk raises :class:`~flask_tiered_state.errors.ArchiveCorruptError` naming
the archive, the file and the byte offset where the damage starts (the first block
whose digest differs).

.. versionadded:: 0.15
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import (
    ArchiveCorruptError,
    ArchiveNotFoundError,
    ConfigurationError,
    InvalidRequestError,
    StorageError,
)
from ..json_codec import dumps, loads

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_CHUNK_ITEMS",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "ArchiveReader",
    "ArchiveWriter",
    "Destination",
    "LocalDestination",
    "S3Destination",
    "delete_archive",
    "list_archives",
    "new_archive_id",
    "open_destination",
    "parse_destination",
]

logger = logging.getLogger(__name__)

FORMAT = "flask-tiered-state-archive"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: Items per chunk by default.
DEFAULT_CHUNK_ITEMS = 5000
#: Bytes of JSON (before compression) after which a chunk is closed early, so that a
#: section of large items keeps chunks, and memory, bounded.
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024
#: A chunk's digests are kept per block of this many bytes, so that a damaged chunk is
#: reported with the offset of its first bad block.
BLOCK_SIZE = 4096

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
#: Keys of the manifest the writer sets itself; ``close(extra)`` may not give them.
_RESERVED = frozenset(
    {"format", "format_version", "archive_id", "kind", "created_at", "completed_at",
     "compression", "sections", "checksum"}
)  # fmt: skip


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def new_archive_id(at: datetime | None = None) -> str:
    """A new archive id that sorts by creation time: ``20250102T030405123456Z-1a2b3c``
    (UTC to the microsecond, then 6 random hex digits)."""
    moment = (at or utc_now()).astimezone(timezone.utc)
    return f"{moment:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(3)}"


def check_archive_id(archive_id: object) -> str:
    """``archive_id`` if it is a valid id, else :class:`InvalidRequestError`."""
    if not isinstance(archive_id, str) or not _ID.fullmatch(archive_id):
        raise InvalidRequestError(
            f"Archive id {archive_id!r} is not valid; an id is 1-128 characters of letters, "
            "digits, '.', '_' and '-', starting with a letter or digit (as list_archives "
            "shows them)."
        )
    return archive_id


def _check_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidRequestError(
            f"Archive {what} {value!r} is not valid; use 1-40 characters of a-z, 0-9 and "
            "'_', starting with a letter."
        )
    return value


# --------------------------------------------------------------------------- destinations


@runtime_checkable
class Destination(Protocol):
    """Where archives are kept: files under ``<archive_id>/<name>``."""

    #: The destination as a URL without secrets (for manifests, logs and messages).
    url: str

    def write(self, archive_id: str, name: str, data: bytes) -> None:
        """Store ``data`` as file ``name`` of the archive (replacing it), durably."""
        ...

    def read(self, archive_id: str, name: str) -> bytes | None:
        """The bytes of file ``name`` of the archive, or None when it is absent."""
        ...

    def archive_ids(self) -> Iterator[str]:
        """The ids of the archives present (complete or not)."""
        ...

    def delete(self, archive_id: str) -> None:
        """Delete the archive, its manifest first (so it is unlisted at once)."""
        ...


class LocalDestination:
    """Archives in a directory (created when missing)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = self.root.resolve().as_uri() if self.root.is_absolute() else str(self.root)

    def _path(self, archive_id: str, name: str = "") -> Path:
        return self.root / archive_id / name if name else self.root / archive_id

    def write(self, archive_id: str, name: str, data: bytes) -> None:
        folder = self._path(archive_id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            partial = folder / f".{name}.partial"
            with open(partial, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, folder / name)
        except OSError as exc:
            raise StorageError(
                f"Cannot write {name} of archive {archive_id!r} in {self.url}: {exc}."
            ) from exc

    def read(self, archive_id: str, name: str) -> bytes | None:
        try:
            return self._path(archive_id, name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(
                f"Cannot read {name} of archive {archive_id!r} in {self.url}: {exc}."
            ) from exc

    def archive_ids(self) -> Iterator[str]:
        try:
            entries = sorted(self.root.iterdir()) if self.root.is_dir() else []
        except OSError as exc:
            raise StorageError(f"Cannot list the archives in {self.url}: {exc}.") from exc
        for entry in entries:
            if entry.is_dir() and _ID.fullmatch(entry.name):
                yield entry.name

    def delete(self, archive_id: str) -> None:
        folder = self._path(archive_id)
        with contextlib.suppress(FileNotFoundError):
            (folder / MANIFEST).unlink()
        try:
            shutil.rmtree(folder, ignore_errors=False)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(
                f"Cannot delete archive {archive_id!r} in {self.url}: {exc}."
            ) from exc

    def __repr__(self) -> str:
        return f"LocalDestination({self.url!r})"


#: The settings an ``s3://`` destination URL may carry in its query string.
S3_URL_SETTINGS = ("endpoint_url", "region_name")


class S3Destination:
    """Archives in an S3 bucket under ``prefix`` (credentials: boto3's usual chain).

    Keep it apart from the COLD tier's bucket/prefix: a backup that sits beside the
    data it protects is lost with it.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: S3Client | None = None,
    ) -> None:
        from ..storage.s3.connection import s3_client

        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.bucket, self.prefix = bucket, prefix
        self._client = client or s3_client(
            endpoint_url=endpoint_url,
            region_name=region_name,
            connect_timeout=5,
            read_timeout=60,
            max_attempts=5,
            max_pool_connections=10,
        )
        query = f"?endpoint_url={endpoint_url}" if endpoint_url else ""
        self.url = f"s3://{bucket}/{prefix}{query}"

    def _key(self, archive_id: str, name: str) -> str:
        return f"{self.prefix}{archive_id}/{name}"

    def _failed(self, exc: Exception, what: str) -> StorageError:
        return StorageError(f"S3 archive destination {self.url}: {what} failed: {exc}.")

    def write(self, archive_id: str, name: str, data: bytes) -> None:
        from ..storage.s3.connection import DRIVER_ERRORS

        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(archive_id, name), Body=data)
        except DRIVER_ERRORS as exc:
            raise self._failed(exc, f"writing {name} of archive {archive_id!r}") from exc

    def read(self, archive_id: str, name: str) -> bytes | None:
        from ..storage.s3.connection import DRIVER_ERRORS, MISSING, error_code

        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=self._key(archive_id, name))
            return answer["Body"].read()
        except DRIVER_ERRORS as exc:
            if error_code(exc) in MISSING:
                return None
            raise self._failed(exc, f"reading {name} of archive {archive_id!r}") from exc

    def archive_ids(self) -> Iterator[str]:
        from ..storage.s3.connection import DRIVER_ERRORS

        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    name = common.get("Prefix", "")[len(self.prefix) :].rstrip("/")
                    if _ID.fullmatch(name):
                        yield name
        except DRIVER_ERRORS as exc:
            raise self._failed(exc, "listing archives") from exc

    def delete(self, archive_id: str) -> None:
        from ..storage.s3.connection import DRIVER_ERRORS

        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(archive_id, MANIFEST))
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(archive_id, "")):
                objects: list[ObjectIdentifierTypeDef] = [
                    {"Key": obj["Key"]} for obj in page.get("Contents", [])
                ]
                if objects:
                    self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects})
        except DRIVER_ERRORS as exc:
            raise self._failed(exc, f"deleting archive {archive_id!r}") from exc

    def __repr__(self) -> str:
        return f"S3Destination({self.url!r})"


def parse_destination(target: object) -> tuple[str, dict[str, Any]]:
    """Check a destination given as text or a path, without connecting: ``("file",
    {"root": path})`` or ``("s3", {"bucket", "prefix", "endpoint_url", "region_name"})``.

    :raises ConfigurationError: not a directory path, ``file:`` or ``s3:`` URL.
    """
    if isinstance(target, os.PathLike):
        return "file", {"root": os.fspath(target)}
    if not isinstance(target, str) or not target.strip():
        raise ConfigurationError(
            f"Archive destination {target!r} is not valid; use a directory path, "
            "'file:///path/to/dir' or 's3://bucket/prefix'."
        )
    parts = urlsplit(target)
    if parts.scheme == "s3":
        given = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(given) - set(S3_URL_SETTINGS))
        if unknown or any(len(values) != 1 for values in given.values()):
            raise ConfigurationError(
                f"Archive destination {target!r} carries "
                f"{', '.join(unknown) or 'a repeated setting'}; an s3:// destination takes "
                f"each of {', '.join(S3_URL_SETTINGS)} once."
            )
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", parts.netloc):
            raise ConfigurationError(
                f"Archive destination {target!r} names the bucket {parts.netloc!r}; a "
                "bucket name is 3-63 characters of a-z, 0-9, '.' and '-'."
            )
        return "s3", {
            "bucket": parts.netloc,
            "prefix": unquote(parts.path.lstrip("/")),
            "endpoint_url": given.get("endpoint_url", [None])[0],
            "region_name": given.get("region_name", [None])[0],
        }
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(
                f"Archive destination {target!r} names the host {parts.netloc!r}; a file: "
                "URL is local: file:///path/to/dir."
            )
        return "file", {"root": unquote(parts.path)}
    if parts.scheme and len(parts.scheme) > 1:  # "C:\\..." is a path, not a scheme
        raise ConfigurationError(
            f"Archive destination {target!r} has the scheme {parts.scheme!r}; use a "
            "directory path, 'file:///path/to/dir' or 's3://bucket/prefix'."
        )
    return "file", {"root": target}


def open_destination(target: str | os.PathLike[str] | Destination) -> Destination:
    """The destination for ``target``: a :class:`Destination` as it is; a directory path
    or ``file:///path``; or ``s3://bucket/prefix?endpoint_url=...&region_name=...``."""
    if isinstance(target, Destination):
        return target
    kind, arguments = parse_destination(target)
    if kind == "s3":
        return S3Destination(
            arguments["bucket"],
            arguments["prefix"],
            endpoint_url=arguments["endpoint_url"],
            region_name=arguments["region_name"],
        )
    return LocalDestination(arguments["root"])


# --------------------------------------------------------------------------- checksums


def _block_digests(data: bytes) -> list[str]:
    view = memoryview(data)
    return [
        hashlib.blake2b(view[start : start + BLOCK_SIZE], digest_size=8).hexdigest()
        for start in range(0, len(data), BLOCK_SIZE)
    ]


def _first_bad_offset(data: bytes, chunk: Mapping[str, Any]) -> int:
    """Where ``data`` starts to differ from the chunk its manifest describes."""
    block_size = int(chunk.get("block_size", BLOCK_SIZE))
    expected = list(chunk.get("blocks", []))
    view = memoryview(data)
    for index, digest in enumerate(expected):
        start = index * block_size
        if start >= len(data):
            return len(data)  # truncated
        actual = hashlib.blake2b(view[start : start + block_size], digest_size=8).hexdigest()
        if actual != digest:
            return start
    return min(len(data), int(chunk.get("bytes", len(data))))


def _manifest_checksum(manifest: Mapping[str, Any]) -> str:
    body = {key: value for key, value in manifest.items() if key != "checksum"}
    return hashlib.sha256(dumps(body).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- writer


class ArchiveWriter:
    """Writes one archive: :meth:`add` sections of items, then :meth:`close` with the
    manifest's extra information. Used as a context manager, an archive left unclosed
    by an exception is deleted.

    :param destination: where (see :func:`open_destination`).
    :param archive_id: the new archive's id (:func:`new_archive_id`); it must not exist.
    :param kind: ``"backup"``, ``"checkpoint"``, ... (what :func:`list_archives` filters by).
    :param chunk_items: items per chunk at most.
    :param chunk_bytes: bytes of JSON after which a chunk is closed early.
    :param compresslevel: gzip's level, 1 (fast) to 9 (small).
    """

    def __init__(
        self,
        destination: str | os.PathLike[str] | Destination,
        archive_id: str,
        kind: str,
        *,
        chunk_items: int = DEFAULT_CHUNK_ITEMS,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        compresslevel: int = 6,
    ) -> None:
        self.destination = open_destination(destination)
        self.archive_id = check_archive_id(archive_id)
        self.kind = _check_name("kind", kind)
        for name, value, low in (
            ("chunk_items", chunk_items, 1),
            ("chunk_bytes", chunk_bytes, 1024),
            ("compresslevel", compresslevel, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidRequestError(
                    f"ArchiveWriter {name} must be an integer of at least {low}, not {value!r}."
                )
        if compresslevel > 9:
            raise InvalidRequestError(
                f"ArchiveWriter compresslevel must be 1-9, not {compresslevel!r}."
            )
        if self.destination.read(self.archive_id, MANIFEST) is not None:
            raise InvalidRequestError(
                f"Archive {self.archive_id!r} exists already in {self.destination.url}; "
                "use a new id (new_archive_id())."
            )
        self.chunk_items, self.chunk_bytes, self.compresslevel = (
            chunk_items,
            chunk_bytes,
            compresslevel,
        )
        #: When the archive was started (UTC): the manifest's ``created_at``.
        self.created_at = utc_now()
        self._sections: dict[str, dict[str, Any]] = {}
        self._closed = False
        self._files: list[str] = []

    @property
    def sections(self) -> dict[str, int]:
        """Items written so far per section."""
        return {name: int(section["items"]) for name, section in self._sections.items()}

    def add(self, section: str, items: Iterable[Mapping[str, Any]]) -> int:
        """Write ``items`` (JSON objects) to ``section``, streaming them into chunks; the
        number written. A section may be added to several times (its chunks go on)."""
        if self._closed:
            raise InvalidRequestError(
                f"Archive {self.archive_id!r} is closed; add sections before close()."
            )
        _check_name("section", section)
        entry = self._sections.setdefault(section, {"items": 0, "chunks": []})
        count = 0
        lines: list[bytes] = []
        pending = pending_bytes = 0
        buffer = io.BytesIO()
        compressor = gzip.GzipFile(
            filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=self.compresslevel
        )
        for item in items:
            if not isinstance(item, Mapping):
                raise InvalidRequestError(
                    f"Archive section {section!r} takes JSON objects (dicts), not "
                    f"{type(item).__name__}."
                )
            line = dumps(item).encode("utf-8") + b"\n"
            lines.append(line)
            pending += 1
            pending_bytes += len(line)
            count += 1
            if len(lines) >= 256:
                compressor.write(b"".join(lines))
                lines.clear()
            if pending >= self.chunk_items or pending_bytes >= self.chunk_bytes:
                compressor.write(b"".join(lines))
                lines.clear()
                self._flush(section, entry, compressor, buffer, pending, pending_bytes)
                pending = pending_bytes = 0
                buffer = io.BytesIO()
                compressor = gzip.GzipFile(
                    filename="",
                    mode="wb",
                    fileobj=buffer,
                    mtime=0,
                    compresslevel=self.compresslevel,
                )
        if pending:
            compressor.write(b"".join(lines))
            self._flush(section, entry, compressor, buffer, pending, pending_bytes)
        entry["items"] += count
        return count

    def _flush(
        self,
        section: str,
        entry: dict[str, Any],
        compressor: gzip.GzipFile,
        buffer: io.BytesIO,
        items: int,
        raw_bytes: int,
    ) -> None:
        compressor.close()
        data = buffer.getvalue()
        name = f"{section}-{len(entry['chunks']):06d}.jsonl.gz"
        self.destination.write(self.archive_id, name, data)
        self._files.append(name)
        entry["chunks"].append(
            {
                "file": name,
                "items": items,
                "bytes": len(data),
                "raw_bytes": raw_bytes,
                "sha256": hashlib.sha256(data).hexdigest(),
                "block_size": BLOCK_SIZE,
                "blocks": _block_digests(data),
            }
        )

    def close(self, manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write the manifest (last: until then the archive is incomplete) with the
        extra information in ``manifest`` (JSON-serialisable; keys other than the ones
        the writer sets) and return it."""
        if self._closed:
            raise InvalidRequestError(f"Archive {self.archive_id!r} is closed already.")
        extra = dict(manifest or {})
        clash = sorted(set(extra) & _RESERVED)
        if clash:
            raise InvalidRequestError(
                f"The manifest of archive {self.archive_id!r} sets {', '.join(clash)} "
                f"itself; give other keys (reserved: {', '.join(sorted(_RESERVED))})."
            )
        body: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "archive_id": self.archive_id,
            "kind": self.kind,
            "created_at": self.created_at.isoformat(),
            "completed_at": utc_now().isoformat(),
            "compression": "gzip",
            "sections": self._sections,
            **extra,
        }
        try:
            body["checksum"] = _manifest_checksum(body)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(
                f"The manifest of archive {self.archive_id!r} is not JSON-serialisable: {exc}."
            ) from exc
        self.destination.write(self.archive_id, MANIFEST, dumps(body).encode("utf-8"))
        self._closed = True
        return body

    def abort(self) -> None:
        """Delete what was written of an archive that will not be closed."""
        if not self._closed:
            self._closed = True
            self.destination.delete(self.archive_id)

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None and not self._closed:
            try:
                self.abort()
            except StorageError:
                logger.exception("Could not delete the partial archive %r", self.archive_id)


# --------------------------------------------------------------------------- reader


class ArchiveReader:
    """Reads one complete archive, checking every chunk before using it.

    :raises ArchiveNotFoundError: no archive with this id has a manifest there.
    :raises ArchiveCorruptError: the manifest is damaged.
    """

    def __init__(self, destination: str | os.PathLike[str] | Destination, archive_id: str) -> None:
        self.destination = open_destination(destination)
        self.archive_id = check_archive_id(archive_id)
        raw = self.destination.read(self.archive_id, MANIFEST)
        if raw is None:
            raise ArchiveNotFoundError(
                self.archive_id,
                f"No complete archive {self.archive_id!r} in {self.destination.url} (none, "
                "or one without its manifest: a crashed run); list_archives shows the "
                "complete ones.",
            )
        self._manifest = _parse_manifest(self.archive_id, raw)

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest (a copy)."""
        return loads(dumps(self._manifest))  # type: ignore[no-any-return]

    @property
    def kind(self) -> str:
        return str(self._manifest["kind"])

    @property
    def sections(self) -> dict[str, int]:
        """Items per section, as the manifest counts them."""
        return {name: int(section["items"]) for name, section in self._manifest["sections"].items()}

    def _section(self, section: str) -> Mapping[str, Any]:
        sections = self._manifest["sections"]
        if section not in sections:
            raise InvalidRequestError(
                f"Archive {self.archive_id!r} has no section {section!r}; it has "
                f"{', '.join(sorted(sections)) or 'none'}."
            )
        return sections[section]  # type: ignore[no-any-return]

    def _chunk_bytes(self, chunk: Mapping[str, Any]) -> bytes:
        name = str(chunk["file"])
        data = self.destination.read(self.archive_id, name)
        if data is None:
            raise ArchiveCorruptError(
                self.archive_id,
                name,
                None,
                f"Archive {self.archive_id!r} in {self.destination.url} is missing its file "
                f"{name} (the manifest lists it); the archive cannot be used whole.",
            )
        if len(data) != chunk["bytes"] or hashlib.sha256(data).hexdigest() != chunk["sha256"]:
            offset = _first_bad_offset(data, chunk)
            size = (
                f"; it has {len(data)} bytes, the manifest says {chunk['bytes']}"
                if len(data) != chunk["bytes"]
                else ""
            )
            raise ArchiveCorruptError(
                self.archive_id,
                name,
                offset,
                f"Archive {self.archive_id!r} in {self.destination.url} is corrupt: {name} "
                f"differs from its checksum: the damage starts at byte offset {offset} (the "
                f"first {BLOCK_SIZE}-byte block that differs){size}. Nothing of this chunk "
                "is used; restore from another archive.",
            )
        return data

    def _lines(self, name: str, data: bytes) -> Iterator[bytes]:
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as stream:
                yield from stream
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise ArchiveCorruptError(
                self.archive_id,
                name,
                None,
                f"Archive {self.archive_id!r}: {name} matches its checksum but does not "
                f"decompress ({exc}); it was written damaged.",
            ) from exc

    def items(self, section: str) -> Iterator[dict[str, Any]]:
        """The items of ``section`` in the order written, one chunk in memory at a time;
        each chunk is checked before any of its items is yielded.

        :raises ArchiveCorruptError: a chunk is missing or damaged.
        """
        for chunk in self._section(section)["chunks"]:
            name = str(chunk["file"])
            data = self._chunk_bytes(chunk)
            count = 0
            for number, line in enumerate(self._lines(name, data), 1):
                try:
                    item = loads(line)
                except ValueError as exc:
                    raise ArchiveCorruptError(
                        self.archive_id,
                        name,
                        None,
                        f"Archive {self.archive_id!r}: line {number} of {name} is not JSON "
                        f"({exc}).",
                    ) from exc
                count += 1
                yield item
            if count != chunk["items"]:
                raise ArchiveCorruptError(
                    self.archive_id,
                    name,
                    None,
                    f"Archive {self.archive_id!r}: {name} holds {count} items, its manifest "
                    f"says {chunk['items']}.",
                )

    def verify(self, *, deep: bool = True) -> dict[str, Any]:
        """Check every chunk (checksum and, when ``deep``, decompression and item count)
        and the manifest's counts; a report ``{"archive_id", "kind", "ok", "sections":
        {name: {"items", "found", "chunks", "bytes"}}, "errors": [{"file", "offset",
        "message"}]}`` (``found`` is None unless ``deep``)."""
        errors: list[dict[str, Any]] = []
        sections: dict[str, dict[str, Any]] = {}
        for name, section in self._manifest["sections"].items():
            found = size = 0
            listed = sum(int(chunk["items"]) for chunk in section["chunks"])
            for chunk in section["chunks"]:
                size += int(chunk["bytes"])
                try:
                    data = self._chunk_bytes(chunk)
                    lines = self._lines(str(chunk["file"]), data) if deep else ()
                    count = sum(1 for _ in lines) if deep else int(chunk["items"])
                except ArchiveCorruptError as exc:
                    errors.append({"file": exc.file, "offset": exc.offset, "message": exc.message})
                    continue
                found += count
                if count != chunk["items"]:
                    errors.append(
                        {
                            "file": chunk["file"],
                            "offset": None,
                            "message": f"{chunk['file']} holds {count} items, its manifest "
                            f"says {chunk['items']}.",
                        }
                    )
            if listed != section["items"]:
                errors.append(
                    {
                        "file": MANIFEST,
                        "offset": None,
                        "message": f"Section {name!r} counts {section['items']} items, its "
                        f"chunks {listed}.",
                    }
                )
            sections[name] = {
                "items": int(section["items"]),
                "found": found if deep else None,
                "chunks": len(section["chunks"]),
                "bytes": size,
            }
        return {
            "archive_id": self.archive_id,
            "kind": self.kind,
            "ok": not errors,
            "sections": sections,
            "errors": errors,
        }


def _parse_manifest(archive_id: str, raw: bytes) -> dict[str, Any]:
    def corrupt(offset: int | None, why: str) -> ArchiveCorruptError:
        return ArchiveCorruptError(
            archive_id, MANIFEST, offset, f"Archive {archive_id!r}: {MANIFEST} {why}."
        )

    try:
        manifest = loads(raw)
    except ValueError as exc:
        position = getattr(exc, "pos", None)
        raise corrupt(position, f"is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise corrupt(0, f"is not the manifest of a {FORMAT} archive")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise corrupt(
            None,
            f"has format version {manifest.get('format_version')!r}; this version of "
            f"flask_tiered_state reads version {FORMAT_VERSION}",
        )
    if manifest.get("checksum") != _manifest_checksum(manifest):
        raise corrupt(None, "does not match its own checksum (it was altered)")
    if manifest.get("archive_id") != archive_id:
        raise corrupt(
            None, f"names the archive {manifest.get('archive_id')!r} (a copied or moved file)"
        )
    return manifest


# --------------------------------------------------------------------------- listing


def list_archives(
    destination: str | os.PathLike[str] | Destination, kind: str | None = None
) -> list[dict[str, Any]]:
    """The manifests of the complete archives at ``destination`` (of ``kind``, or every
    kind), newest first. Archives without a manifest are left out; one whose manifest is
    damaged is left out with a warning in the log."""
    where = open_destination(destination)
    if kind is not None:
        _check_name("kind", kind)
    found: list[dict[str, Any]] = []
    for archive_id in where.archive_ids():
        raw = where.read(archive_id, MANIFEST)
        if raw is None:
            continue
        try:
            manifest = _parse_manifest(archive_id, raw)
        except ArchiveCorruptError as exc:
            logger.warning("Skipping archive %r in %s: %s", archive_id, where.url, exc.message)
            continue
        if kind is None or manifest.get("kind") == kind:
            found.append(manifest)
    found.sort(key=lambda m: (str(m.get("created_at")), str(m.get("archive_id"))), reverse=True)
    return found


def delete_archive(destination: str | os.PathLike[str] | Destination, archive_id: str) -> None:
    """Delete an archive (its manifest first, so it stops being listed at once)."""
    open_destination(destination).delete(check_archive_id(archive_id))

"""S3 repository: the COLD tier on boto3, for AWS or any S3-compatible endpoint.

Each value is one object, ``prefix + key``, with content type ``application/json``, the
configured storage class and its metadata in the object's user metadata (``checksum-sha256``,
``version``, ``category``, ``stored-at``, ``ttl-seconds``). Costs and guarantees:

- ``fetch`` is one GET; the body is verified against its sha256 before it is returned.
- ``store`` with an explicit ``version`` (what tier moves pass) is one PUT. With
  ``version=None`` the next version needs the previous one: a key this repository wrote
  or read (one of its last ``remembered_versions`` keys) costs one PUT with
  ``If-Match: <etag>`` of what it saw; other keys, and keys S3 says changed or vanished
  since, pay one HEAD first (a vanished key is written as version 1, ``If-None-Match``).
- ``expected_version`` uses S3 conditional writes: ``If-None-Match: *`` for 0, else a HEAD
  then ``If-Match: <etag>``. An ETag identifies content, so another writer storing the
  very same bytes is not detected: ``expected_version`` then still sees the value the
  caller read, but a remembered version may be stale, and a rewrite may repeat a version
  number (or set a lower one if the other writer went on and restored those bytes; give
  ``remembered_versions=0`` where that matters).
- ``store_many`` is *not* atomic: on partial failure the stored items stay stored and
  :class:`~flask_tiered_state.errors.TierUnavailableError` lists the failed keys.
- ``delete`` is a HEAD (to report existence) plus a DELETE. ``delete_many`` counts the keys
  that existed by listing each chunk's key range (HEADs for what two pages don't cover),
  then deletes the chunk with one ``delete_objects`` (at most 1,000 keys).
- ``stats`` lists the prefix: O(objects). S3 has no per-object expiry: a TTL is recorded
  in the metadata only (use a bucket lifecycle rule to expire objects).
- A missing bucket raises ``TierUnavailableError`` telling to create it (the bucket may
  be created after start-up, so it is not a configuration error).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

# Imported here too, so that importing this module without boto3 fails on "boto3"
# itself, the name the registry looks for to name the extra to install.
import boto3  # noqa: F401
from botocore.exceptions import BotoCoreError, ClientError

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
from ..checks import check_expected_version, check_write, int_option, seconds_option
from ..keys import glob_literal_prefix, glob_to_regex, validate_key, validate_keys, validate_pattern
from .connection import (
    CONFLICT,
    DRIVER_ERRORS,
    MISSING,
    STORAGE_CLASSES,
    error_code,
    s3_client,
)
from .versions import DEFAULT_REMEMBERED_VERSIONS, VersionMemory

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import StorageClassType
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef, PutObjectRequestTypeDef

__all__ = ["DELETE_CHUNK", "LIST_FOR_NEW_KEYS", "LIST_PAGE_SIZE", "S3StateRepository"]

DELETE_CHUNK = 1000
#: Page size of the listing ``delete_many`` counts with (two pages per chunk at most).
LIST_PAGE_SIZE = 1000
#: store_many lists the key range of at least this many unversioned keys it does not
#: remember, so that the new ones cost one PUT (instead of a HEAD and a PUT).
LIST_FOR_NEW_KEYS = 8


class S3StateRepository:
    """COLD tier in one bucket under ``prefix``.

    :param bucket: the bucket; it must exist.
    :param prefix: prepended to every key to form the object key.
    :param endpoint_url: an S3-compatible endpoint (MinIO, moto, ...); None for AWS.
    :param client: a ready boto3 S3 client; then endpoint, region and timeouts are unused.
    :param storage_class: one of :data:`STORAGE_CLASSES`.
    :param max_workers: threads (and pooled connections) for ``fetch_many``/``store_many``.
    :param max_attempts: attempts per request, retries included (botocore "standard" mode).
    :param remembered_versions: how many keys' version and ETag are remembered, so that
        rewriting them needs no HEAD (0: none; see the module docstring).
    """

    backend = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        client: S3Client | None = None,
        storage_class: str = "STANDARD_IA",
        region_name: str | None = None,
        max_workers: int = 16,
        category: StateCategory = StateCategory.COLD,
        connect_timeout: float = 2,
        read_timeout: float = 10,
        max_attempts: int = 3,
        remembered_versions: int = DEFAULT_REMEMBERED_VERSIONS,
    ) -> None:
        if not isinstance(bucket, str) or not 3 <= len(bucket) <= 63:
            raise ConfigurationError(f"S3 bucket must be a 3-63 character name, not {bucket!r}.")
        if not isinstance(prefix, str):
            raise ConfigurationError(f"S3 prefix must be a string, not {prefix!r}.")
        if storage_class not in STORAGE_CLASSES:
            raise ConfigurationError(
                f"S3 storage class {storage_class!r} is not supported; use one of "
                f"{', '.join(sorted(STORAGE_CLASSES))} (GLACIER and DEEP_ARCHIVE need restores)."
            )
        int_option("max_workers", max_workers)
        int_option("max_attempts", max_attempts)
        seconds_option("connect_timeout", connect_timeout, optional=False)
        seconds_option("read_timeout", read_timeout, optional=False)
        self._versions = VersionMemory(remembered_versions)
        self.bucket, self.prefix = bucket, prefix
        self.storage_class = cast("StorageClassType", storage_class)
        self.category = category
        self._owns_client = client is None
        if client is None:
            client = s3_client(
                endpoint_url=endpoint_url,
                region_name=region_name,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                max_attempts=max_attempts,
                max_pool_connections=max(max_workers, 10),
            )
        self._client = client
        self.endpoint_url = client.meta.endpoint_url
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="tiered-state-s3")
        self._closed = threading.Event()

    def _unavailable(self, exc: ClientError | BotoCoreError, what: str) -> TierUnavailableError:
        where = f"bucket {self.bucket!r} at {self.endpoint_url}"
        if error_code(exc) == "NoSuchBucket":
            message = f"S3 {where} does not exist ({what}); create the bucket first."
        else:
            message = f"S3 {what} failed on {where}: {exc}"
        return TierUnavailableError(self.category.value, message, details={"bucket": self.bucket})

    def _head(self, key: str) -> tuple[int, str | None]:
        """The key's current version (0 when absent) and ETag, which are remembered."""
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except DRIVER_ERRORS as exc:
            if error_code(exc) in MISSING:
                self._versions.forget(key)
                return 0, None
            raise self._unavailable(exc, f"HEAD of {key!r}") from exc
        version, etag = int(head["Metadata"].get("version", 0)), head["ETag"]
        self._versions.remember(key, version, etag)
        return version, etag

    def _head_copy(self, key: str) -> tuple[int, str, float, str] | None:
        """The key's (version, checksum, stored_at, ETag) from one HEAD, or None when
        absent."""
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except DRIVER_ERRORS as exc:
            if error_code(exc) in MISSING:
                self._versions.forget(key)
                return None
            raise self._unavailable(exc, f"HEAD of {key!r}") from exc
        meta = head["Metadata"]
        version = int(meta.get("version", 0))
        self._versions.remember(key, version, head["ETag"])
        stored_at = float(meta.get("stored-at", 0))
        return version, meta.get("checksum-sha256", ""), stored_at, head["ETag"]

    def ping(self) -> bool:
        """True when ``head_bucket`` succeeds."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except DRIVER_ERRORS:
            return False
        return True

    def _executor(self) -> ThreadPoolExecutor:
        if self._closed.is_set():
            raise TierUnavailableError(
                self.category.value, f"S3 repository for bucket {self.bucket!r} is closed."
            )
        return self._pool

    def close(self) -> None:
        """Stop the worker threads; close the client if this repository created it."""
        self._closed.set()
        self._pool.shutdown(wait=True)
        if self._owns_client:
            self._client.close()

    # -- reads ---------------------------------------------------------------

    def fetch(self, key: str) -> StoredValue | None:
        validate_key(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            body = response["Body"].read()
        except DRIVER_ERRORS as exc:
            if error_code(exc) in MISSING:
                self._versions.forget(key)
                return None
            raise self._unavailable(exc, f"GET of {key!r}") from exc
        meta, checksum = response["Metadata"], hashlib.sha256(body).hexdigest()
        if checksum != meta.get("checksum-sha256"):
            raise IntegrityError(
                key,
                f"S3 object {self.prefix + key!r} in bucket {self.bucket!r} has sha256 "
                f"{checksum}, its metadata says {meta.get('checksum-sha256')!r}; the value was "
                "not returned. Restore it from another tier or a backup.",
                details={"actual_checksum": checksum},
            )
        version, stored_at = int(meta.get("version", 0)), float(meta.get("stored-at", 0))
        self._versions.remember(key, version, response.get("ETag"))
        ttl = int(meta["ttl-seconds"]) if "ttl-seconds" in meta else None
        metadata = StateMetadata(checksum, len(body), version, self.category, stored_at, ttl)
        return StoredValue(key, body.decode("utf-8"), metadata)

    def fetch_many(self, keys: Sequence[str]) -> dict[str, StoredValue]:
        unique = list(dict.fromkeys(validate_keys(keys)))
        if len(unique) <= 1:
            found = [self.fetch(k) for k in unique]
        else:
            found = list(self._executor().map(self.fetch, unique))
        return {value.key: value for value in found if value is not None}

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
        body = value.encode("utf-8")
        if expected_version is None:
            if version is not None:
                return self._put_or_raise(key, body, version, ttl_seconds)
            remembered = self._versions.get(key)
            if remembered is None:
                return self._put_next(key, body, ttl_seconds)
            return self._rewrite(key, body, ttl_seconds, *remembered)
        check_expected_version(expected_version)
        if_match = None
        if expected_version != 0:
            actual, if_match = self._head(key)
            if actual != expected_version or if_match is None:
                raise ConcurrencyError(key, expected_version, actual)
        if version is None:
            version = expected_version + 1
        try:
            return self._put(key, body, version, ttl_seconds, if_match, expected_version == 0)
        except DRIVER_ERRORS as exc:
            if error_code(exc) in CONFLICT | MISSING:
                raise ConcurrencyError(key, expected_version, self._head(key)[0]) from exc
            raise self._unavailable(exc, f"PUT of {key!r}") from exc

    def store_many(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        """Store items concurrently; not atomic (see the module docstring). A key given
        twice is stored once, with its last item."""
        latest = {validate_key(item.key): item for item in items}
        for item in latest.values():
            check_write(item.key, item.value, item.version, item.ttl_seconds)
        unversioned = [key for key, item in latest.items() if item.version is None]
        remembered = self._versions.known(unversioned)
        new = self._new_keys([key for key in unversioned if key not in remembered])
        pool = self._executor()
        futures: dict[str, Future[StateMetadata]] = {
            key: pool.submit(self._store_new, key, item.value.encode("utf-8"),
                             item.ttl_seconds)
            if key in new
            else pool.submit(self.store, key, item.value, version=item.version,
                             ttl_seconds=item.ttl_seconds)
            for key, item in latest.items()
        }  # fmt: skip
        stored: dict[str, StateMetadata] = {}
        failed: dict[str, str] = {}
        for key, future in futures.items():
            try:
                stored[key] = future.result()
            except TierUnavailableError as exc:
                failed[key] = str(exc)
        if failed:
            shown = ", ".join(sorted(failed)[:20]) + (", ..." if len(failed) > 20 else "")
            raise TierUnavailableError(
                self.category.value,
                f"S3 store_many on bucket {self.bucket!r} at {self.endpoint_url}: {len(failed)} "
                f"of {len(latest)} keys failed ({shown}); the other keys were stored.",
                details={"failed": failed, "stored": sorted(stored)},
            )
        return stored

    def delete(self, key: str) -> bool:
        """Delete ``key``; True if a HEAD just before the delete found it."""
        validate_key(key)
        try:
            if self._head(key)[1] is None:
                return False
            self._client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        except DRIVER_ERRORS as exc:
            raise self._unavailable(exc, f"DELETE of {key!r}") from exc
        finally:
            self._versions.forget(key)
        return True

    def delete_many(self, keys: Sequence[str]) -> int:
        """Delete in chunks of 1,000 (``delete_objects``, quiet, naming only the objects a
        listing found); the number of keys that existed, counted just before each chunk is
        deleted."""
        unique = set(validate_keys(keys))
        try:
            return self._delete_chunks(sorted(self.prefix + k for k in unique))
        finally:
            self._versions.forget_many(unique)

    def store_copies(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        """Store each copy where the key is absent (``If-None-Match: *``) or older (a HEAD,
        then ``If-Match`` on its ETag), concurrently: a value written meanwhile makes S3
        refuse the PUT, and the copy is left out."""
        latest = {validate_key(item.key): item for item in items}
        for item in latest.values():
            if item.version is None:
                raise InvalidRequestError(
                    f"store_copies needs the version of every copy; {item.key!r} has none.",
                    details={"key": item.key},
                )
            check_write(item.key, item.value, item.version, item.ttl_seconds)
        written = self._executor().map(self._store_copy, latest.values())
        return {m_key: m for m_key, m in zip(latest, written, strict=True) if m is not None}

    def _store_copy(self, item: WriteRequest) -> StateMetadata | None:
        assert item.version is not None
        current = self._head_copy(item.key)
        if current is not None and current[0] >= item.version:
            return None
        body = item.value.encode("utf-8")
        try:
            if current is None:
                return self._put(item.key, body, item.version, item.ttl_seconds,
                                 if_none_match=True)  # fmt: skip
            return self._put(item.key, body, item.version, item.ttl_seconds, current[3])
        except DRIVER_ERRORS as exc:
            if error_code(exc) in CONFLICT | MISSING:
                return None
            raise self._unavailable(exc, f"PUT of the copy of {item.key!r}") from exc

    def delete_unchanged(self, copies: Sequence[StoredValue]) -> list[str]:
        """HEAD each key (concurrently), then delete those still holding exactly the copy
        with ``delete_objects`` conditioned on each object's ETag, so an object rewritten
        after its HEAD survives."""
        wanted = {c.key: c.metadata for c in copies}
        validate_keys(list(wanted))
        return self._delete_where(
            list(wanted),
            lambda key, version, checksum, _: (
                (version, checksum) == (wanted[key].version, wanted[key].checksum)
            ),
        )

    def delete_stale(self, fences: Mapping[str, StaleCopy]) -> int:
        """Delete the copies their fences call stale with ``delete_objects`` conditioned on
        each object's ETag. Only the keys a listing finds are looked at (drops mostly name
        keys this tier never held); a copy whose version and ETag this repository
        remembers needs no HEAD when its fence is a version alone."""
        validate_keys(list(fences))
        remembered: dict[str, str] = {}
        for key, fence in fences.items():
            known = self._versions.get(key) if fence.checksum is None else None
            if known is not None and fence.removes(known[0], "", 0.0):
                remembered[key] = known[1]
        return len(
            self._delete_where(
                list(fences),
                lambda key, version, checksum, stored_at: fences[key].removes(
                    version, checksum, stored_at
                ),
                known=remembered,
                listed=True,
            )
        )

    def _delete_where(
        self,
        keys: list[str],
        doomed: Callable[[str, int, str, float], bool],
        *,
        known: Mapping[str, str] | None = None,
        listed: bool = False,
    ) -> list[str]:
        """Delete the keys whose HEAD ``doomed`` accepts, each on the condition that its
        ETag is still the one seen; the keys deleted.

        :param known: ETags of keys already known to be doomed (no HEAD; a changed object
            makes the conditional delete refuse, and is looked at again).
        :param listed: list the keys' range first and look only at the objects found.
        """
        if not keys:
            return []
        known = dict(known or {})
        rest = [k for k in keys if k not in known]
        if listed and len(rest) >= LIST_FOR_NEW_KEYS:
            cut = len(self.prefix)
            present = {
                n[cut:]
                for start in range(0, len(rest), DELETE_CHUNK)
                for n in self._existing(
                    sorted(self.prefix + k for k in rest[start : start + DELETE_CHUNK])
                )
            }
            rest = [k for k in rest if k in present]
        heads = self._executor().map(self._head_copy, rest) if rest else []
        targets = {
            key: head[3]
            for key, head in zip(rest, heads, strict=True)
            if head is not None and doomed(key, head[0], head[1], head[2])
        }
        chosen = {**known, **targets}
        refused = self._delete_objects(chosen)
        deleted = [k for k in chosen if k not in refused]
        retry = [k for k in known if k in refused]  # changed since remembered: HEAD it
        return deleted + (self._delete_where(retry, doomed) if retry else [])

    def _delete_objects(self, targets: Mapping[str, str]) -> set[str]:
        """``delete_objects`` of each key on the condition of its ETag, in chunks of 1,000;
        the keys S3 refused (changed or gone since)."""
        refused: set[str] = set()
        names = sorted(targets)
        try:
            for start in range(0, len(names), DELETE_CHUNK):
                chunk = names[start : start + DELETE_CHUNK]
                objects: list[ObjectIdentifierTypeDef] = [
                    {"Key": self.prefix + k, "ETag": targets[k]} for k in chunk
                ]
                try:
                    response = self._client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
                    )
                except DRIVER_ERRORS as exc:
                    raise self._unavailable(exc, f"delete_objects of {len(chunk)} keys") from exc
                for error in response.get("Errors", []):
                    key = error.get("Key", "")[len(self.prefix) :]
                    if error.get("Code", "") not in CONFLICT | MISSING:
                        raise TierUnavailableError(
                            self.category.value,
                            f"S3 delete_objects on bucket {self.bucket!r} failed for {key!r}: "
                            f"{error.get('Code', '?')}.",
                            details={"key": key},
                        )
                    refused.add(key)
        finally:
            self._versions.forget_many(targets)
        return refused

    def _delete_chunks(self, names: list[str]) -> int:
        existed = 0
        for start in range(0, len(names), DELETE_CHUNK):
            # Only the objects that exist are named: a delete_objects request naming 1,000
            # keys costs about ten listings, and the store's drops of stale copies mostly
            # name keys this tier never held. An object written between the listing and
            # the delete survives, as a write ordered after the delete.
            present = sorted(self._existing(names[start : start + DELETE_CHUNK]))
            existed += len(present)
            if not present:
                continue
            try:
                response = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": n} for n in present], "Quiet": True},
                )
            except DRIVER_ERRORS as exc:
                raise self._unavailable(exc, f"delete_objects of {len(present)} keys") from exc
            if errors := response.get("Errors"):
                failed = {e.get("Key", "?")[len(self.prefix) :]: e.get("Code", "?") for e in errors}
                raise TierUnavailableError(
                    self.category.value,
                    f"S3 delete_objects on bucket {self.bucket!r} failed for "
                    f"{len(failed)} keys: {', '.join(sorted(failed)[:20])}.",
                    details={"failed": failed},
                )
        return existed

    # -- single writes -------------------------------------------------------

    def _put(
        self,
        key: str,
        body: bytes,
        version: int,
        ttl_seconds: int | None,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> StateMetadata:
        """One PUT of ``body`` as ``version``, remembered on success and forgotten on any
        failure (the driver's error propagates)."""
        metadata = StateMetadata(
            hashlib.sha256(body).hexdigest(), len(body), version, self.category, time.time(),
            ttl_seconds,
        )  # fmt: skip
        request: PutObjectRequestTypeDef = {
            "Bucket": self.bucket,
            "Key": self.prefix + key,
            "Body": body,
            "ContentType": "application/json",
            "StorageClass": self.storage_class,
            "Metadata": {
                "checksum-sha256": metadata.checksum,
                "version": str(version),
                "category": self.category.value,
                "stored-at": repr(metadata.stored_at),
                **({} if ttl_seconds is None else {"ttl-seconds": str(ttl_seconds)}),
            },
        }
        if if_match is not None:
            request["IfMatch"] = if_match
        elif if_none_match:
            request["IfNoneMatch"] = "*"
        try:
            response = self._client.put_object(**request)
        except BaseException:
            self._versions.forget(key)
            raise
        self._versions.remember(key, version, response.get("ETag"))
        return metadata

    def _put_or_raise(
        self, key: str, body: bytes, version: int, ttl_seconds: int | None
    ) -> StateMetadata:
        try:
            return self._put(key, body, version, ttl_seconds)
        except DRIVER_ERRORS as exc:
            raise self._unavailable(exc, f"PUT of {key!r}") from exc

    def _put_next(self, key: str, body: bytes, ttl_seconds: int | None) -> StateMetadata:
        """A HEAD for the previous version, then a PUT of the next one."""
        return self._put_or_raise(key, body, self._head(key)[0] + 1, ttl_seconds)

    def _rewrite(
        self, key: str, body: bytes, ttl_seconds: int | None, version: int, etag: str
    ) -> StateMetadata:
        """Store over the remembered ``version`` if the object still has ``etag``: one
        PUT. When it changed, store after a HEAD; when it is gone, as a new key."""
        try:
            return self._put(key, body, version + 1, ttl_seconds, if_match=etag)
        except DRIVER_ERRORS as exc:
            code = error_code(exc)
            if code in MISSING:
                return self._store_new(key, body, ttl_seconds)
            if code not in CONFLICT:
                raise self._unavailable(exc, f"PUT of {key!r}") from exc
        return self._put_next(key, body, ttl_seconds)

    def _store_new(self, key: str, body: bytes, ttl_seconds: int | None) -> StateMetadata:
        """Store ``key`` believed absent as version 1, only if it still is absent
        (``If-None-Match``); when it appeared meanwhile, store after a HEAD."""
        try:
            return self._put(key, body, 1, ttl_seconds, if_none_match=True)
        except DRIVER_ERRORS as exc:
            if error_code(exc) not in CONFLICT:
                raise self._unavailable(exc, f"PUT of {key!r}") from exc
        return self._put_next(key, body, ttl_seconds)

    # -- listings ------------------------------------------------------------

    def _new_keys(self, keys: list[str]) -> set[str]:
        """Which of ``keys`` a listing of their key range (one per chunk) did not find.

        Such a key's next version is 1, so it is written without the HEAD that would
        read its version; below :data:`LIST_FOR_NEW_KEYS` keys the HEADs are cheaper.
        """
        if len(keys) < LIST_FOR_NEW_KEYS:
            return set()
        names, cut = sorted(self.prefix + k for k in keys), len(self.prefix)
        new: set[str] = set()
        for start in range(0, len(names), DELETE_CHUNK):
            chunk = names[start : start + DELETE_CHUNK]
            present = self._existing(chunk, "to write")
            new.update(n[cut:] for n in chunk if n not in present)
        return new

    def _existing(self, names: list[str], purpose: str = "to delete") -> set[str]:
        """Which of the sorted object names exist: one listing of their key range (at most
        two pages, so sparse ranges stay cheap), then HEADs for names past the listing."""
        wanted, last = set(names), names[-1]
        found: set[str] = set()
        listed_to: str | None = None
        prefix = os.path.commonprefix(names)  # noqa: RUF071 - a string prefix, not a path
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if len(names[0]) > 1:
            kwargs["StartAfter"] = names[0][:-1]  # sorts just before names[0]
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            pages = paginator.paginate(**kwargs, PaginationConfig={"PageSize": LIST_PAGE_SIZE})
            for number, page in enumerate(pages, 1):
                listed = [o["Key"] for o in page.get("Contents", [])]
                found.update(wanted.intersection(listed))
                listed_to = listed[-1] if listed else None
                if not page.get("IsTruncated") or (listed_to or "") >= last:
                    return found
                if number == 2:
                    break
        except DRIVER_ERRORS as exc:
            raise self._unavailable(exc, f"listing keys {purpose}") from exc
        rest = [n[len(self.prefix) :] for n in names if listed_to is None or n > listed_to]
        heads = self._executor().map(self._head, rest)
        return found | {self.prefix + k for k, (_, etag) in zip(rest, heads, strict=True) if etag}

    def keys(self, pattern: str = "*") -> Iterator[str]:
        """Matching keys, listed lazily under the pattern's literal prefix."""
        regex, cut = glob_to_regex(validate_pattern(pattern)), len(self.prefix)
        names = self._objects(self.prefix + glob_literal_prefix(pattern), "listing keys")
        return filter(regex.fullmatch, (obj["Key"][cut:] for obj in names))

    def scan_keys(self, pattern: str = "*") -> Iterator[str]:
        """:meth:`keys`, which already streams the listing a page at a time."""
        return self.keys(pattern)

    def _objects(self, list_prefix: str, what: str) -> Iterator[Any]:
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=list_prefix):
                yield from page.get("Contents", [])
        except DRIVER_ERRORS as exc:
            raise self._unavailable(exc, what) from exc

    def stats(self) -> TierStats:
        """Object count and bytes under the prefix; lists every object (O(objects))."""
        count = size = 0
        for obj in self._objects(self.prefix, "listing objects for stats"):
            count, size = count + 1, size + obj["Size"]
        extra = {"bucket": self.bucket, "prefix": self.prefix, "endpoint_url": self.endpoint_url,
                 "storage_class": self.storage_class}  # fmt: skip
        return TierStats(self.backend, self.category, count, size, extra)


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
#: The settings an ``s3://`` URL may carry in its query string.
URL_SETTINGS = ("endpoint_url", "storage_class", "region_name")


def parse_url(url: str, options: Mapping[str, Any], context: BackendContext) -> dict[str, Any]:
    """The arguments of :class:`S3StateRepository` for ``url`` and ``options``."""
    parts = urlsplit(url)
    if not parts.netloc:
        raise ConfigurationError(
            f"The S3 URL {url!r} names no bucket; use s3://bucket/prefix, e.g. "
            "s3://my-app-state/cold/?storage_class=STANDARD_IA."
        )
    given = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(given) - set(URL_SETTINGS))
    if unknown or any(len(values) != 1 for values in given.values()):
        raise ConfigurationError(
            f"The S3 URL {url!r} carries {', '.join(unknown) or 'a repeated setting'}; its "
            f"query string takes each of {', '.join(URL_SETTINGS)} once (the other "
            "settings go in the tier's options)."
        )
    settings: dict[str, Any] = {name: values[0] for name, values in given.items()}
    settings.update(check_options(options, S3StateRepository.__init__, fixed=("category",)))
    settings.setdefault("prefix", unquote(parts.path.lstrip("/")))
    if not _BUCKET.fullmatch(parts.netloc):
        raise ConfigurationError(
            f"The S3 URL {url!r} names the bucket {parts.netloc!r}; a bucket name is 3-63 "
            "characters of a-z, 0-9, '.' and '-'."
        )
    storage_class = settings.get("storage_class", "STANDARD_IA")
    if storage_class not in STORAGE_CLASSES:
        raise ConfigurationError(
            f"S3 storage class {storage_class!r} is not supported; use one of "
            f"{', '.join(sorted(STORAGE_CLASSES))} (GLACIER and DEEP_ARCHIVE need restores)."
        )
    return {"bucket": parts.netloc, "category": context.category, **settings}


def from_url(url: str, options: Mapping[str, Any], context: BackendContext) -> StateRepository:
    """The ``s3://bucket/prefix?endpoint_url=...&storage_class=...&region_name=...``
    backend (see :mod:`~flask_tiered_state.storage.registry`): the bucket, the key prefix
    and the three settings in the URL; any keyword argument of
    :class:`S3StateRepository` in the options (they win over the URL's)."""
    return S3StateRepository(**parse_url(url, options, context))

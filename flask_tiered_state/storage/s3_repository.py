"""S3 repository: the COLD tier on boto3, for AWS or any S3-compatible endpoint.

Each value is one object, ``prefix + key``, with content type ``application/json``, the
configured storage class and its metadata in the object's user metadata (``checksum-sha256``,
``version``, ``category``, ``stored-at``, ``ttl-seconds``). Costs and guarantees:

- ``fetch`` is one GET; the body is verified against its sha256 before it is returned.
- ``store`` with an explicit ``version`` (what tier moves pass) is one PUT; with
  ``version=None`` it pays one HEAD first to read the previous version.
- ``expected_version`` uses S3 conditional writes: ``If-None-Match: *`` for 0, else a HEAD
  then ``If-Match: <etag>``. An ETag identifies content, so a concurrent rewrite of the very
  same bytes is not detected; the value the caller read is then still the stored value.
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
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import ConcurrencyError, ConfigurationError, IntegrityError, TierUnavailableError
from ._write_checks import check_expected_version, check_ttl, check_value, check_version
from .base import StateCategory, StateMetadata, StoredValue, TierStats, WriteRequest
from .keys import glob_literal_prefix, glob_to_regex, validate_key, validate_keys, validate_pattern

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import StorageClassType
    from mypy_boto3_s3.type_defs import PutObjectRequestTypeDef

__all__ = ["STORAGE_CLASSES", "S3StateRepository"]

#: Storage classes a value can be written with; GLACIER and DEEP_ARCHIVE are left out
#: because their objects cannot be read without a restore.
STORAGE_CLASSES = frozenset(
    {"STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR",
     "REDUCED_REDUNDANCY", "EXPRESS_ONEZONE", "OUTPOSTS", "SNOW"}
)  # fmt: skip
DELETE_CHUNK = 1000
#: Page size of the listing ``delete_many`` counts with (two pages per chunk at most).
LIST_PAGE_SIZE = 1000
#: store_many lists the key range of at least this many unversioned keys, so that the
#: new ones cost one PUT (instead of a HEAD for their previous version and a PUT).
LIST_FOR_NEW_KEYS = 8
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_CONFLICT = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_DRIVER_ERRORS = (ClientError, BotoCoreError)


def _code(exc: Exception) -> str:
    return str(exc.response["Error"].get("Code", "")) if isinstance(exc, ClientError) else ""


class S3StateRepository:
    """COLD tier in one bucket under ``prefix``.

    :param bucket: the bucket; it must exist.
    :param prefix: prepended to every key to form the object key.
    :param endpoint_url: an S3-compatible endpoint (MinIO, moto, ...); None for AWS.
    :param client: a ready boto3 S3 client; then endpoint, region and timeouts are unused.
    :param storage_class: one of :data:`STORAGE_CLASSES`.
    :param max_workers: threads (and pooled connections) for ``fetch_many``/``store_many``.
    :param max_attempts: attempts per request, retries included (botocore "standard" mode).
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
        connect_timeout: float = 5,
        read_timeout: float = 30,
        max_attempts: int = 3,
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
        for name, number in (("max_workers", max_workers), ("max_attempts", max_attempts)):
            if type(number) is not int or number < 1:
                raise ConfigurationError(f"{name} must be a positive integer, not {number!r}.")
        for name, seconds in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds <= 0:
                raise ConfigurationError(f"{name} must be a positive number, not {seconds!r}.")
        self.bucket, self.prefix = bucket, prefix
        self.storage_class = cast("StorageClassType", storage_class)
        self.category = category
        self._owns_client = client is None
        if client is None:
            config = Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": max_attempts, "mode": "standard"},
                max_pool_connections=max(max_workers, 10),
                # Bodies are verified against their sha256 here; a CRC on top is wasted CPU.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            client = boto3.client(
                "s3", endpoint_url=endpoint_url, region_name=region_name, config=config
            )
        self._client = client
        self.endpoint_url = client.meta.endpoint_url
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="tiered-state-s3")
        self._closed = threading.Event()

    def _unavailable(self, exc: ClientError | BotoCoreError, what: str) -> TierUnavailableError:
        where = f"bucket {self.bucket!r} at {self.endpoint_url}"
        if _code(exc) == "NoSuchBucket":
            message = f"S3 {where} does not exist ({what}); create the bucket first."
        else:
            message = f"S3 {what} failed on {where}: {exc}"
        return TierUnavailableError(self.category.value, message, details={"bucket": self.bucket})

    # -- reads -----------------------------------------------------------------

    def fetch(self, key: str) -> StoredValue | None:
        validate_key(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            body = response["Body"].read()
        except _DRIVER_ERRORS as exc:
            if _code(exc) in _MISSING:
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

    # -- writes ----------------------------------------------------------------

    def _head(self, key: str) -> tuple[int, str | None]:
        """The key's current version (0 when absent) and ETag."""
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except _DRIVER_ERRORS as exc:
            if _code(exc) in _MISSING:
                return 0, None
            raise self._unavailable(exc, f"HEAD of {key!r}") from exc
        return int(head["Metadata"].get("version", 0)), head["ETag"]

    def store(
        self,
        key: str,
        value: str,
        *,
        version: int | None = None,
        ttl_seconds: int | None = None,
        expected_version: int | None = None,
    ) -> StateMetadata:
        _check_write(validate_key(key), value, version, ttl_seconds)
        if expected_version is not None:
            check_expected_version(expected_version)
        body = value.encode("utf-8")
        request: PutObjectRequestTypeDef = {
            "Bucket": self.bucket,
            "Key": self.prefix + key,
            "Body": body,
            "ContentType": "application/json",
            "StorageClass": self.storage_class,
        }
        if expected_version == 0:
            request["IfNoneMatch"] = "*"
            version = 1 if version is None else version
        elif expected_version is not None:
            actual, etag = self._head(key)
            if actual != expected_version or etag is None:
                raise ConcurrencyError(key, expected_version, actual)
            request["IfMatch"] = etag
            version = expected_version + 1 if version is None else version
        elif version is None:
            version = self._head(key)[0] + 1
        metadata = StateMetadata(
            hashlib.sha256(body).hexdigest(), len(body), version, self.category, time.time(),
            ttl_seconds,
        )  # fmt: skip
        request["Metadata"] = {
            "checksum-sha256": metadata.checksum,
            "version": str(version),
            "category": self.category.value,
            "stored-at": repr(metadata.stored_at),
            **({} if ttl_seconds is None else {"ttl-seconds": str(ttl_seconds)}),
        }
        try:
            self._client.put_object(**request)
        except _DRIVER_ERRORS as exc:
            if expected_version is not None and _code(exc) in _CONFLICT | _MISSING:
                raise ConcurrencyError(key, expected_version, self._head(key)[0]) from exc
            raise self._unavailable(exc, f"PUT of {key!r}") from exc
        return metadata

    def store_many(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        """Store items concurrently; not atomic (see the module docstring). A key given
        twice is stored once, with its last item."""
        latest = {validate_key(item.key): item for item in items}
        for item in latest.values():
            _check_write(item.key, item.value, item.version, item.ttl_seconds)
        new = self._new_keys([key for key, item in latest.items() if item.version is None])
        pool = self._executor()
        futures: dict[str, Future[StateMetadata]] = {
            key: pool.submit(self._store_new, key, item.value, item.ttl_seconds)
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

    def _store_new(self, key: str, value: str, ttl_seconds: int | None) -> StateMetadata:
        """Store ``key`` that a listing did not find, as version 1, only if it still does
        not exist (``If-None-Match``); when it appeared meanwhile, store it as
        previous + 1 like :meth:`store`."""
        try:
            return self.store(key, value, ttl_seconds=ttl_seconds, expected_version=0)
        except ConcurrencyError:
            return self.store(key, value, ttl_seconds=ttl_seconds)

    def delete(self, key: str) -> bool:
        """Delete ``key``; True if a HEAD just before the delete found it."""
        validate_key(key)
        if self._head(key)[1] is None:
            return False
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        except _DRIVER_ERRORS as exc:
            raise self._unavailable(exc, f"DELETE of {key!r}") from exc
        return True

    def delete_many(self, keys: Sequence[str]) -> int:
        """Delete in chunks of 1,000 (``delete_objects``, quiet, naming only the objects a
        listing found); the number of keys that existed, counted just before each chunk is
        deleted."""
        names = sorted({self.prefix + k for k in validate_keys(keys)})
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
            except _DRIVER_ERRORS as exc:
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
        except _DRIVER_ERRORS as exc:
            raise self._unavailable(exc, f"listing keys {purpose}") from exc
        rest = [n[len(self.prefix) :] for n in names if listed_to is None or n > listed_to]
        heads = self._executor().map(self._head, rest)
        return found | {self.prefix + k for k, (_, etag) in zip(rest, heads, strict=True) if etag}

    # -- scans -----------------------------------------------------------------

    def keys(self, pattern: str = "*") -> Iterator[str]:
        """Matching keys, listed lazily under the pattern's literal prefix."""
        regex, cut = glob_to_regex(validate_pattern(pattern)), len(self.prefix)
        names = self._objects(self.prefix + glob_literal_prefix(pattern), "listing keys")
        return filter(regex.fullmatch, (obj["Key"][cut:] for obj in names))

    def _objects(self, list_prefix: str, what: str) -> Iterator[Any]:
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=list_prefix):
                yield from page.get("Contents", [])
        except _DRIVER_ERRORS as exc:
            raise self._unavailable(exc, what) from exc

    def stats(self) -> TierStats:
        """Object count and bytes under the prefix; lists every object (O(objects))."""
        count = size = 0
        for obj in self._objects(self.prefix, "listing objects for stats"):
            count, size = count + 1, size + obj["Size"]
        extra = {"bucket": self.bucket, "prefix": self.prefix, "endpoint_url": self.endpoint_url,
                 "storage_class": self.storage_class}  # fmt: skip
        return TierStats(self.backend, self.category, count, size, extra)

    def ping(self) -> bool:
        """True when ``head_bucket`` succeeds."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except _DRIVER_ERRORS:
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


def _check_write(key: str, value: object, version: int | None, ttl: int | None) -> None:
    check_value(key, value)
    if version is not None:
        check_version(version)
    if ttl is not None:
        check_ttl(ttl)

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
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING

# Imported here too, so that importing this module without boto3 fails on "boto3"
# itself, the name the factory looks for to name the extra to install (the submodules
# that use it may already be imported).
import boto3  # noqa: F401

from ..errors import ConcurrencyError, IntegrityError, InvalidRequestError, TierUnavailableError
from ._write_checks import check_expected_version, check_write
from .base import StaleCopy, StateMetadata, StoredValue, WriteRequest
from .keys import validate_key, validate_keys

# STORAGE_CLASSES and the LIST_ constants were defined here before the split.
from .s3_connection import CONFLICT, DRIVER_ERRORS, MISSING, STORAGE_CLASSES, error_code
from .s3_listing import DELETE_CHUNK, LIST_FOR_NEW_KEYS
from .s3_listing import LIST_PAGE_SIZE as LIST_PAGE_SIZE
from .s3_writes import S3Writes

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

__all__ = ["STORAGE_CLASSES", "S3StateRepository"]


class S3StateRepository(S3Writes):
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

    # -- reads -----------------------------------------------------------------

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

    # -- writes ----------------------------------------------------------------

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

"""The single writes under :class:`~.s3_repository.S3StateRepository`: one PUT with the
metadata, and the ways to find the version it writes (remembered, read with a HEAD, or 1
for a key believed new), each guarded by a conditional write where S3 offers one."""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

from .base import StateMetadata
from .s3_connection import CONFLICT, DRIVER_ERRORS, MISSING, error_code
from .s3_listing import S3Listing

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import PutObjectRequestTypeDef

__all__ = ["S3Writes"]


class S3Writes(S3Listing):
    """The single writes of :class:`~.s3_repository.S3StateRepository`."""

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

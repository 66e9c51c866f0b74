"""The client and settings every part of :class:`~.s3_repository.S3StateRepository`
shares: the bucket and prefix, the boto3 client (given or built with timeouts and
retries), the worker pool, the version memory, the HEAD and the error raised when S3
does not answer."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import ConfigurationError, TierUnavailableError
from .base import StateCategory
from .s3_versions import DEFAULT_REMEMBERED_VERSIONS, VersionMemory

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import StorageClassType

__all__ = ["DRIVER_ERRORS", "MISSING", "STORAGE_CLASSES", "S3TierBase", "error_code"]

#: Storage classes a value can be written with; GLACIER and DEEP_ARCHIVE are left out
#: because their objects cannot be read without a restore.
STORAGE_CLASSES = frozenset(
    {"STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR",
     "REDUCED_REDUNDANCY", "EXPRESS_ONEZONE", "OUTPOSTS", "SNOW"}
)  # fmt: skip
MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
CONFLICT = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
DRIVER_ERRORS = (ClientError, BotoCoreError)


def error_code(exc: Exception) -> str:
    """The S3 error code of ``exc`` ("" for errors without a response)."""
    return str(exc.response["Error"].get("Code", "")) if isinstance(exc, ClientError) else ""


class S3TierBase:
    """The shared state of :class:`~.s3_repository.S3StateRepository` (see there for the
    parameters)."""

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
        for name, number in (("max_workers", max_workers), ("max_attempts", max_attempts)):
            if type(number) is not int or number < 1:
                raise ConfigurationError(f"{name} must be a positive integer, not {number!r}.")
        for name, seconds in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds <= 0:
                raise ConfigurationError(f"{name} must be a positive number, not {seconds!r}.")
        self._versions = VersionMemory(remembered_versions)
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

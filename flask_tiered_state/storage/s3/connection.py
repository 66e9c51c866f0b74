"""The boto3 client of the COLD tier, and what S3's errors mean to it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["CONFLICT", "DRIVER_ERRORS", "MISSING", "STORAGE_CLASSES", "error_code", "s3_client"]

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


def s3_client(
    *,
    endpoint_url: str | None,
    region_name: str | None,
    connect_timeout: float,
    read_timeout: float,
    max_attempts: int,
    max_pool_connections: int,
) -> S3Client:
    """A client with timeouts, botocore's standard retries and a connection pool."""
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        max_pool_connections=max_pool_connections,
        # Bodies are verified against their sha256 here; a CRC on top is wasted CPU.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region_name, config=config)

"""The S3 backend of the COLD tier: repository, connection and version memory."""

from __future__ import annotations

from .repository import S3StateRepository

__all__ = ["S3StateRepository"]

"""The storage layer: JSON values under string keys across a cache and three tiers.

It knows nothing of domain states and can be used on its own. Backends are grouped by
kind (``memory``, ``redis``, ``sql``, ``s3``, ``filesystem``) and chosen by URL
(:mod:`.registry`); those whose client is an optional extra (Redis, S3, PostgreSQL) are
imported only when used, so the core install never imports redis-py or boto3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    BackendContext,
    StaleCopy,
    StateCategory,
    StateMetadata,
    StateRepositories,
    StateRepository,
    StoredValue,
    TierStats,
    WriteRequest,
    checksum_of,
)
from .cache import CacheEntryInfo, CacheStats, StateCache
from .factory import build_store
from .filesystem import FilesystemStateRepository
from .memory import MemoryStateRepository
from .registry import backend_schemes, register_backend
from .sql import SQLStateRepository, SQLUnitOfWork
from .store import TieredStore
from .tiering import TierPromotionPolicy
from .transaction import StoreTransaction

if TYPE_CHECKING:
    from .redis import RedisStateRepository
    from .s3 import S3StateRepository

__all__ = [
    "BackendContext",
    "CacheEntryInfo",
    "CacheStats",
    "FilesystemStateRepository",
    "MemoryStateRepository",
    "RedisStateRepository",
    "S3StateRepository",
    "SQLStateRepository",
    "SQLUnitOfWork",
    "StaleCopy",
    "StateCache",
    "StateCategory",
    "StateMetadata",
    "StateRepositories",
    "StateRepository",
    "StoreTransaction",
    "StoredValue",
    "TierPromotionPolicy",
    "TierStats",
    "TieredStore",
    "WriteRequest",
    "backend_schemes",
    "build_store",
    "checksum_of",
    "register_backend",
]


def __getattr__(name: str) -> object:
    # Lazy: these need the "redis" / "s3" extras.
    if name == "RedisStateRepository":
        from .redis import RedisStateRepository

        return RedisStateRepository
    if name == "S3StateRepository":
        from .s3 import S3StateRepository

        return S3StateRepository
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The storage layer: JSON values under string keys across a cache and three tiers.

It knows nothing of domain states and can be used on its own. Backends whose client
is an optional extra (Redis, S3) are imported from their modules, so the core
install never imports redis-py or boto3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    StateCategory,
    StateMetadata,
    StateRepositories,
    StateRepository,
    StoredValue,
    TierStats,
    WriteRequest,
    checksum_of,
)
from .batch import StateBatchOperations
from .cache import CacheEntryInfo, CacheStats, StateCache
from .coordinator import StateRepositoryCoordinator
from .factory import build_store
from .filesystem_repository import FilesystemStateRepository
from .instrumented import InstrumentedRepository
from .memory_repository import MemoryStateRepository
from .sql_repository import SQLStateRepository, SQLUnitOfWork
from .store import TieredStore
from .tiering import StateTierManager, TierPromotionPolicy
from .transaction import StoreTransaction

if TYPE_CHECKING:
    from .redis_repository import RedisStateRepository
    from .s3_repository import S3StateRepository

__all__ = [
    "CacheEntryInfo",
    "CacheStats",
    "FilesystemStateRepository",
    "InstrumentedRepository",
    "MemoryStateRepository",
    "RedisStateRepository",
    "S3StateRepository",
    "SQLStateRepository",
    "SQLUnitOfWork",
    "StateBatchOperations",
    "StateCache",
    "StateCategory",
    "StateMetadata",
    "StateRepositories",
    "StateRepository",
    "StateRepositoryCoordinator",
    "StateTierManager",
    "StoreTransaction",
    "StoredValue",
    "TierPromotionPolicy",
    "TierStats",
    "TieredStore",
    "WriteRequest",
    "build_store",
    "checksum_of",
]


def __getattr__(name: str) -> object:
    # Lazy: these need the "redis" / "s3" extras.
    if name == "RedisStateRepository":
        from .redis_repository import RedisStateRepository

        return RedisStateRepository
    if name == "S3StateRepository":
        from .s3_repository import S3StateRepository

        return S3StateRepository
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

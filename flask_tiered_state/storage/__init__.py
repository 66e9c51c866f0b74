"""The storage layer: JSON values under string keys across a cache and three tiers.

It knows nothing of domain states and can be used on its own.
"""

from __future__ import annotations

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
from .memory_repository import MemoryStateRepository

__all__ = [
    "MemoryStateRepository",
    "StateCategory",
    "StateMetadata",
    "StateRepositories",
    "StateRepository",
    "StoredValue",
    "TierStats",
    "WriteRequest",
    "checksum_of",
]

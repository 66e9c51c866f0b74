"""What :class:`~.cache.StateCache` reports: its counters and sizes, and the bookkeeping
of one cached key."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .base import StateMetadata

__all__ = ["CacheEntryInfo", "CacheStats"]


@dataclass(frozen=True, slots=True)
class CacheEntryInfo:
    """What the cache knows about one cached key."""

    key: str
    metadata: StateMetadata
    size: int
    cached_at: float
    last_accessed: float
    hits: int


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters and sizes of a :class:`StateCache`."""

    entries: int
    bytes: int
    max_entries: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int
    invalidations: int
    #: Entries that left the cache because their TTL or the maximum age ran out.
    expirations: int
    max_age_seconds: float | None = None

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hit_rate": self.hit_rate}

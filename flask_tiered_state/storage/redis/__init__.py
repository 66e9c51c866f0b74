"""The Redis backend of the HOT tier: repository, codec and connection."""

from __future__ import annotations

from .repository import RedisStateRepository

__all__ = ["RedisStateRepository"]

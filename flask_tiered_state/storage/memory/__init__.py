"""The in-process backend: the embedded HOT tier and the contract's reference."""

from __future__ import annotations

from .repository import MemoryStateRepository

__all__ = ["MemoryStateRepository"]

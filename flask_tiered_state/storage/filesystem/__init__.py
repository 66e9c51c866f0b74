"""The directory backend: the embedded COLD tier, one file per key."""

from __future__ import annotations

from .repository import FilesystemStateRepository

__all__ = ["FilesystemStateRepository"]

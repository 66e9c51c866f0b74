"""flask_tiered_state: typed, validated, audited domain states for Flask, persisted
through a cached Redis / SQL / S3 tiered store."""

from __future__ import annotations

from . import errors
from .storage.base import StateCategory, StateRepositories

__version__ = "0.1.0"

__all__ = ["StateCategory", "StateRepositories", "__version__", "errors"]

"""flask_tiered_state: typed, validated, audited domain states for Flask, persisted
through a cached Redis / SQL / S3 tiered store."""

from __future__ import annotations

from . import errors, signals
from .domain import (
    DEFAULT_LIFECYCLE,
    EventDispatcher,
    Lifecycle,
    Page,
    StateEvent,
    StateManager,
    StateRecord,
    StateStatus,
    StateTransition,
    StateType,
    StateTypeSpec,
    correlation_scope,
    define_history_table,
    idempotent_call,
)
from .domain.encryption import generate_master_key
from .extension import TieredState, current_state_manager
from .settings import TieredStateSettings
from .storage.base import StateCategory, StateRepositories

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LIFECYCLE",
    "EventDispatcher",
    "Lifecycle",
    "Page",
    "StateCategory",
    "StateEvent",
    "StateManager",
    "StateRecord",
    "StateRepositories",
    "StateStatus",
    "StateTransition",
    "StateType",
    "StateTypeSpec",
    "TieredState",
    "TieredStateSettings",
    "__version__",
    "correlation_scope",
    "current_state_manager",
    "define_history_table",
    "errors",
    "generate_master_key",
    "idempotent_call",
    "signals",
]

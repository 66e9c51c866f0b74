"""The domain layer: typed states, lifecycles, validation, history and callbacks.

It talks to storage only through :class:`~flask_tiered_state.storage.store.TieredStore`
and to SQL history through its own table. Import the public names from here or from
:mod:`flask_tiered_state`.
"""

from __future__ import annotations

from .callbacks import PAST_TENSE, CallbackDispatcher, StateEvent, event_name
from .context import (
    correlation_scope,
    get_correlation_id,
    reset_correlation_id,
    set_correlation_id,
)
from .dispatcher import DispatchReport, EventDispatcher
from .history import DEFAULT_HISTORY_TABLE, define_history_table
from .idempotency import IdempotentCall, idempotent_call
from .lifecycle import DEFAULT_LIFECYCLE, Lifecycle
from .manager import StateManager
from .model import STATE_ID_RULE, StateRecord, StateStatus, StateTransition, StateType
from .paging import Page
from .registry import StateTypeSpec

__all__ = [
    "DEFAULT_HISTORY_TABLE",
    "DEFAULT_LIFECYCLE",
    "PAST_TENSE",
    "STATE_ID_RULE",
    "CallbackDispatcher",
    "DispatchReport",
    "EventDispatcher",
    "IdempotentCall",
    "Lifecycle",
    "Page",
    "StateEvent",
    "StateManager",
    "StateRecord",
    "StateStatus",
    "StateTransition",
    "StateType",
    "StateTypeSpec",
    "correlation_scope",
    "define_history_table",
    "event_name",
    "get_correlation_id",
    "idempotent_call",
    "reset_correlation_id",
    "set_correlation_id",
]

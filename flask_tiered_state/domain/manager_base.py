"""What the parts of :class:`~flask_tiered_state.domain.manager.StateManager` share: its
collaborators, and what every mutation does once committed.

The manager is assembled from mixins of one purpose each (configuration, reads,
history queries, mutations, batches, tiers and health); they all derive from
:class:`ManagerBase`, which declares the collaborators the manager builds in
``StateManager._setup`` and delivers a committed change: the event (signals and named
callbacks) and the operation's timing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InvalidRequestError
from .callbacks import CallbackDispatcher, CallbackRegistry, StateEvent, event_name
from .context import get_correlation_id
from .model import StateTransition, validate_state_id

if TYPE_CHECKING:
    from ..storage.store import TieredStore
    from .batch import BatchWriter
    from .history import HistoryRepository
    from .operations import OperationStats
    from .records import RecordBuilder
    from .registry import TypeRegistry
    from .search import StateSearch
    from .validation import ValidatorRegistry
    from .writer import RecordWriter, Write

__all__ = ["ManagerBase"]

logger = logging.getLogger("flask_tiered_state.domain")


class ManagerBase:
    """The collaborators of a manager and the after-commit delivery."""

    store: TieredStore
    history: HistoryRepository
    closed: bool
    types: TypeRegistry
    validators: ValidatorRegistry
    callbacks: CallbackRegistry
    dispatcher: CallbackDispatcher
    _writer: RecordWriter
    _records: RecordBuilder
    _batch: BatchWriter
    _search: StateSearch
    _ops: OperationStats
    _max_attempts: int
    _close_store: bool
    _temp_dir: Path | None

    @property
    def call_timeout(self) -> float | None:
        """The time budget of each call on one state: the store's (``call_timeout``)."""
        return self.store.call_timeout

    def log_state_operation(
        self,
        operation: str,
        state_id: str,
        transition_type: StateTransition | str | None,
        duration_ms: float,
    ) -> None:
        """Log one operation (DEBUG) and add it to :meth:`get_performance_metrics`."""
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "state operation %s on %r (%s) took %.3f ms",
                operation,
                state_id,
                transition_type,
                duration_ms,
                extra={"correlation_id": get_correlation_id(), "state_id": state_id},
            )
        self._ops.record(operation, duration_ms)

    def _committed(
        self, write: Write, actor: str | None, reason: str | None, started: float
    ) -> None:
        """After commit: deliver the event and record the operation."""
        new = write.new
        name = event_name(write.spec.name, write.transition)
        if self.dispatcher.wants(name):
            self.dispatcher.dispatch(
                StateEvent(
                    name=name,
                    state_id=new["state_id"],
                    state_type=write.spec.name,
                    transition=write.transition,
                    old_state=write.old,
                    new_state=new,
                    version=new["version"],
                    correlation_id=get_correlation_id(),
                    actor=actor,
                    reason=reason,
                    event_id=write.event_id,
                )
            )
        self.log_state_operation(
            write.transition.value,
            new["state_id"],
            write.transition,
            (time.perf_counter() - started) * 1000.0,
        )

    @staticmethod
    def _ids(state_ids: Iterable[str]) -> list[str]:
        """The distinct valid ids of an iterable (not a string), in order."""
        if isinstance(state_ids, (str, bytes)) or not isinstance(state_ids, Iterable):
            raise InvalidRequestError(
                f"Expected an iterable of state ids, not {type(state_ids).__name__}.",
                details={"state_ids": repr(state_ids)[:200]},
            )
        return list(dict.fromkeys(validate_state_id(i) for i in state_ids))

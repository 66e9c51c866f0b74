"""Blinker signals sent by the :class:`~flask_tiered_state.domain.manager.StateManager`.

Every signal is sent *after* the change it reports was committed, with the manager
as sender, so ``signal.connected_to(receiver, sender=manager)`` (or
``signal.connect(receiver, sender=manager)``) listens to one manager only. A
receiver that raises never undoes the change: the error is logged and reported
through :data:`callback_failed`, and the other receivers still run.

Every state signal also receives ``event``: the
:class:`~flask_tiered_state.domain.callbacks.StateEvent` (with a unique ``event_id``
for de-duplication and the ``correlation_id`` of the work).
"""

from __future__ import annotations

from blinker import Namespace

__all__ = [
    "callback_failed",
    "state_deleted",
    "state_demoted",
    "state_promoted",
    "state_registered",
    "state_transitioned",
    "state_updated",
]

_signals = Namespace()

#: A state was registered. Sender: the manager. Keyword arguments: ``state_id``,
#: ``state`` (the new record), ``event``.
state_registered = _signals.signal("state-registered")

#: A live state changed (update, a status transition other than delete, or a rollback).
#: Sender: the manager. Keyword arguments: ``state_id``, ``old_state``, ``new_state``,
#: ``transition`` (a :class:`~flask_tiered_state.StateTransition`), ``event``.
state_updated = _signals.signal("state-updated")

#: A mutation changed a state's status (delete included). Sender: the manager.
#: Keyword arguments: ``state_id``, ``old_state``, ``new_state``, ``transition``,
#: ``from_status``, ``to_status`` (status values), ``event``.
state_transitioned = _signals.signal("state-transitioned")

#: A state was deleted (it is kept as a DELETED tombstone). Sender: the manager.
#: Keyword arguments: ``state_id``, ``old_state``, ``new_state`` (the tombstone), ``event``.
state_deleted = _signals.signal("state-deleted")

#: A state was copied to the HOT tier. Sender: the manager. Keyword arguments:
#: ``state_id``, ``key`` (the store key).
state_promoted = _signals.signal("state-promoted")

#: A state was moved to the COLD tier. Sender: the manager. Keyword arguments:
#: ``state_id``, ``key`` (the store key).
state_demoted = _signals.signal("state-demoted")

#: A named callback or a signal receiver raised. Sender: the manager. Keyword
#: arguments: ``event`` (the StateEvent, or None for promote/demote signals),
#: ``callback`` (the callable), ``error`` (the exception).
callback_failed = _signals.signal("callback-failed")

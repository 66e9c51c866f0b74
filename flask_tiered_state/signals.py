"""Blinker signals sent by the :class:`~flask_tiered_state.domain.manager.StateManager`.

Every state signal is sent *after* the change it reports was committed, with the
manager as sender, so ``signal.connected_to(receiver, sender=manager)`` (or
``signal.connect(receiver, sender=manager)``) listens to one manager only. A
receiver that raises never undoes the change: the error is logged and reported
through :data:`callback_failed`, and the other receivers still run.

Every state signal also receives ``event``: the
:class:`~flask_tiered_state.domain.callbacks.StateEvent` (with a unique ``event_id``
for de-duplication and the ``correlation_id`` of the work).

:data:`manager_created` is the extension's: it is sent with the *app* as sender, while
a new manager is set up, so a receiver that raises fails that build.
"""

from __future__ import annotations

from blinker import Namespace

__all__ = [
    "callback_failed",
    "event_dead",
    "event_delivered",
    "event_failed",
    "manager_created",
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

#: The Flask extension built a new manager for an app: at first use, and at the first
#: use after ``TieredState.close(app)``. Sent after the extension's setup functions ran
#: and before the manager is used, inside the app's context. Sender: the app. Keyword
#: arguments: ``manager`` (the new :class:`~flask_tiered_state.domain.manager.StateManager`).
#: A receiver that raises fails the build (the manager is closed, the error propagates,
#: the next use tries again), so registrations made here are never silently missing.
manager_created = _signals.signal("manager-created")

#: The dispatcher delivered an event to an asynchronous callback. Sender: the manager.
#: Keyword arguments: ``event`` (the StateEvent), ``callback`` (the callback's key).
event_delivered = _signals.signal("event-delivered")

#: An asynchronous callback raised; the delivery is retried later. Sender: the manager.
#: Keyword arguments: ``event``, ``callback`` (its key), ``error`` (the text).
event_failed = _signals.signal("event-failed")

#: A delivery failed its callback's last attempt and is kept as dead (``flask state
#: events retry`` runs it again). Sender: the manager. Keyword arguments: ``event``,
#: ``callback``, ``error``.
event_dead = _signals.signal("event-dead")

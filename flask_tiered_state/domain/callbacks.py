"""Named callbacks and signal delivery for committed changes.

Every committed mutation becomes a :class:`StateEvent`, named
``{type}_{past tense}`` after the state's type and the transition:

============  ===============
transition    past tense
============  ===============
CREATE        ``created``
UPDATE        ``updated``
ACTIVATE      ``activated``
SUSPEND       ``suspended``
RESUME        ``resumed``
EXPIRE        ``expired``
DELETE        ``deleted``
ROLLBACK      ``rolled_back``
============  ===============

so ``register_callback("user_suspended", fn)`` runs ``fn(state_id, old_state,
new_state, transition_type)`` after a user was suspended. A :class:`CallbackDispatcher`
delivers an event: first the blinker signals of :mod:`flask_tiered_state.signals`,
then the named callbacks. Delivery is synchronous and happens after commit; a
receiver that raises is logged and reported through ``callback-failed`` and never
undoes the change. Durable asynchronous delivery (an outbox written in the
mutation's transaction) plugs in as another dispatcher: events are frozen,
serialisable (:meth:`StateEvent.to_dict`) and carry an ``event_id`` to de-duplicate by.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from blinker import Signal

from .. import signals
from ..errors import InvalidRequestError
from .model import StateTransition, utc_now_iso

__all__ = [
    "PAST_TENSE",
    "Callback",
    "CallbackDispatcher",
    "CallbackRegistry",
    "StateEvent",
    "event_name",
    "parse_event_name",
]

logger = logging.getLogger("flask_tiered_state.callbacks")

#: ``fn(state_id, old_state, new_state, transition_type)``
Callback = Callable[[str, "dict[str, Any] | None", "dict[str, Any] | None", StateTransition], Any]

PAST_TENSE: Mapping[StateTransition, str] = {
    StateTransition.CREATE: "created",
    StateTransition.UPDATE: "updated",
    StateTransition.ACTIVATE: "activated",
    StateTransition.SUSPEND: "suspended",
    StateTransition.RESUME: "resumed",
    StateTransition.EXPIRE: "expired",
    StateTransition.DELETE: "deleted",
    StateTransition.ROLLBACK: "rolled_back",
}
_BY_SUFFIX = sorted(PAST_TENSE.items(), key=lambda item: -len(item[1]))


def event_name(state_type: str, transition: StateTransition) -> str:
    """``event_name("user", StateTransition.SUSPEND) == "user_suspended"``."""
    return f"{state_type}_{PAST_TENSE[transition]}"


def parse_event_name(name: object, known_types: Iterable[str]) -> tuple[str, StateTransition]:
    """Split an event name into its type and transition, or raise
    :class:`~flask_tiered_state.errors.InvalidRequestError` describing the pattern."""
    known = set(known_types)
    if isinstance(name, str):
        for transition, past in _BY_SUFFIX:
            suffix = "_" + past
            if name.endswith(suffix) and name[: -len(suffix)] in known:
                return name[: -len(suffix)], transition
    raise InvalidRequestError(
        f"Unknown event name {name!r}; event names are '{{type}}_{{past tense}}' with a type "
        f"among {', '.join(sorted(known))} and a past tense among "
        f"{', '.join(PAST_TENSE.values())} (for example 'user_suspended'). "
        "Register custom types before their callbacks.",
        details={
            "event_name": repr(name),
            "types": sorted(known),
            "past": list(PAST_TENSE.values()),
        },
    )


@dataclass(frozen=True, slots=True)
class StateEvent:
    """One committed change, as callbacks and signals receive it."""

    name: str
    state_id: str
    state_type: str
    transition: StateTransition
    old_state: dict[str, Any] | None
    new_state: dict[str, Any] | None
    version: int
    correlation_id: str | None = None
    actor: str | None = None
    reason: str | None = None
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: str = field(default_factory=utc_now_iso)

    @property
    def from_status(self) -> str | None:
        return None if self.old_state is None else str(self.old_state["status"])

    @property
    def to_status(self) -> str | None:
        return None if self.new_state is None else str(self.new_state["status"])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (what an outbox row would hold)."""
        return {
            "event_id": self.event_id,
            "name": self.name,
            "state_id": self.state_id,
            "state_type": self.state_type,
            "transition": self.transition.value,
            "old_state": self.old_state,
            "new_state": self.new_state,
            "version": self.version,
            "correlation_id": self.correlation_id,
            "actor": self.actor,
            "reason": self.reason,
            "occurred_at": self.occurred_at,
        }


class CallbackRegistry:
    """Callbacks per event name; copy-on-write, so dispatch reads without locking."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[str, tuple[Callback, ...]] = {}

    def register(self, name: str, fn: Callback) -> None:
        if not callable(fn):
            raise InvalidRequestError(
                f"Callback for {name!r} must be callable as fn(state_id, old_state, new_state, "
                f"transition_type), not {fn!r}."
            )
        with self._lock:
            self._callbacks = {**self._callbacks, name: (*self._callbacks.get(name, ()), fn)}

    def unregister(self, name: str, fn: Callback) -> bool:
        """Remove ``fn`` from ``name``; True if it was registered."""
        with self._lock:
            current = self._callbacks.get(name, ())
            kept = tuple(cb for cb in current if cb is not fn and cb != fn)
            self._callbacks = {**self._callbacks, name: kept}
            return len(kept) != len(current)

    def for_event(self, name: str) -> tuple[Callback, ...]:
        return self._callbacks.get(name, ())


_STATE_SIGNALS = (
    signals.state_registered,
    signals.state_updated,
    signals.state_transitioned,
    signals.state_deleted,
)


class CallbackDispatcher:
    """Delivers events synchronously after commit: signals, then named callbacks.

    :param sender: what signals are sent with (the manager).
    :param registry: the named callbacks.
    """

    def __init__(self, sender: object, registry: CallbackRegistry) -> None:
        self.sender = sender
        self.registry = registry

    def wants(self, name: str) -> bool:
        """False when nobody listens to ``name`` (lets the manager skip building events)."""
        return bool(self.registry.for_event(name)) or any(s.receivers for s in _STATE_SIGNALS)

    def dispatch(self, event: StateEvent) -> None:
        """Deliver ``event``; failures are logged and reported, never raised."""
        common = {"state_id": event.state_id, "event": event}
        transition = event.transition
        if transition is StateTransition.CREATE:
            self.send(signals.state_registered, event, state=event.new_state, **common)
        else:
            change = {"old_state": event.old_state, "new_state": event.new_state, **common}
            if transition is StateTransition.DELETE:
                self.send(signals.state_deleted, event, **change)
            else:
                self.send(signals.state_updated, event, transition=transition, **change)
            if event.from_status != event.to_status:
                self.send(
                    signals.state_transitioned,
                    event,
                    transition=transition,
                    from_status=event.from_status,
                    to_status=event.to_status,
                    **change,
                )
        for fn in self.registry.for_event(event.name):
            try:
                fn(event.state_id, event.old_state, event.new_state, transition)
            except Exception as exc:
                self._failed(event, fn, exc)

    def send(self, signal: Signal, source: StateEvent | None, /, **kwargs: Any) -> None:
        """Send ``signal`` to each receiver on its own, so one failure stops no other.

        :param source: the event reported to ``callback-failed`` if a receiver raises.
        """
        if not signal.receivers:
            return
        for receiver in signal.receivers_for(self.sender):
            try:
                receiver(self.sender, **kwargs)
            except Exception as exc:
                self._failed(source, receiver, exc)

    def _failed(self, event: StateEvent | None, fn: object, exc: Exception) -> None:
        logger.exception(
            "Callback %r failed for event %s of state %r; the change stays committed.",
            fn,
            None if event is None else event.name,
            None if event is None else event.state_id,
            extra={"correlation_id": None if event is None else event.correlation_id},
        )
        for receiver in signals.callback_failed.receivers_for(self.sender):
            try:
                receiver(self.sender, event=event, callback=fn, error=exc)
            except Exception:
                logger.exception("A callback-failed receiver %r raised.", receiver)

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
ERASE         ``erased``
RESTORE       ``restored``
============  ===============

so ``register_callback("user_suspended", fn)`` runs ``fn(state_id, old_state,
new_state, transition_type)`` after a user was suspended. A :class:`CallbackDispatcher`
delivers an event: first the blinker signals of :mod:`flask_tiered_state.signals`,
then the named callbacks. Delivery is synchronous and happens after commit; a
receiver that raises is logged and reported through ``callback-failed`` and never
undoes the change.

An *asynchronous* callback (``register_callback(name, fn, asynchronous=True)``) is not
called after the commit: the mutation's transaction records a delivery for it in the
outbox (:mod:`.outbox`), and a dispatcher (``flask state dispatch``) calls it, at least
once, as ``fn(state_id, old_state, new_state, transition_type, event_id=...)``, retrying
with backoff. It is known across processes by its *key* (``module:qualname`` of the
function, or ``key=``), so every process must register it under the same key.
"""

from __future__ import annotations

import inspect
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
    "AsyncCallback",
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
    StateTransition.ERASE: "erased",
    StateTransition.RESTORE: "restored",
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


@dataclass(frozen=True, slots=True)
class AsyncCallback:
    """An asynchronous callback of one event name, delivered from the outbox.

    :param key: its name across processes (the deliveries table stores it).
    :param max_attempts: attempts before the delivery is dead (1 to 100).
    :param backoff: seconds before the first retry; each retry waits twice as long as
        the one before (at most an hour), times a random factor of 0.5 to 1.5.
    """

    event: str
    key: str
    fn: Callable[..., Any]
    max_attempts: int = 5
    backoff: float = 1.0


def _takes_event_id(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: let it try
        return True
    return any(
        p.kind is p.VAR_KEYWORD
        or (p.name == "event_id" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        for p in parameters
    )


class CallbackRegistry:
    """Callbacks per event name; copy-on-write, so dispatch reads without locking."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[str, tuple[Callback, ...]] = {}
        self._asynchronous: dict[str, tuple[AsyncCallback, ...]] = {}

    def register(
        self,
        name: str,
        fn: Callback,
        *,
        asynchronous: bool = False,
        max_attempts: int = 5,
        backoff: float = 1.0,
        key: str | None = None,
    ) -> None:
        if not callable(fn):
            raise InvalidRequestError(
                f"Callback for {name!r} must be callable as fn(state_id, old_state, new_state, "
                f"transition_type), not {fn!r}."
            )
        if type(asynchronous) is not bool:
            raise InvalidRequestError(f"asynchronous must be True or False, not {asynchronous!r}.")
        if not asynchronous:
            if key is not None or max_attempts != 5 or backoff != 1.0:
                raise InvalidRequestError(
                    "key, max_attempts and backoff are options of asynchronous callbacks: "
                    "pass asynchronous=True."
                )
            with self._lock:
                self._callbacks = {**self._callbacks, name: (*self._callbacks.get(name, ()), fn)}
            return
        self._register_async(name, fn, max_attempts=max_attempts, backoff=backoff, key=key)

    def _register_async(
        self, name: str, fn: Callback, *, max_attempts: int, backoff: float, key: str | None
    ) -> None:
        if type(max_attempts) is not int or not 1 <= max_attempts <= 100:
            raise InvalidRequestError(
                f"max_attempts must be a whole number from 1 to 100, not {max_attempts!r}."
            )
        if (
            isinstance(backoff, bool)
            or not isinstance(backoff, (int, float))
            or not (0 <= backoff <= 3600)
        ):
            raise InvalidRequestError(
                f"backoff must be a number of seconds from 0 to 3600, not {backoff!r}."
            )
        if not _takes_event_id(fn):
            raise InvalidRequestError(
                f"Asynchronous callback {fn!r} for {name!r} must take the keyword argument "
                "event_id (fn(state_id, old_state, new_state, transition_type, *, event_id)): "
                "it may run more than once, and the event id is what it de-duplicates by."
            )
        if key is None:
            key = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
        if not isinstance(key, str) or not 1 <= len(key) <= 300:
            raise InvalidRequestError(f"key must be a string of 1 to 300 characters, not {key!r}.")
        callback = AsyncCallback(name, key, fn, max_attempts, float(backoff))
        with self._lock:
            current = self._asynchronous.get(name, ())
            if any(c.key == key for c in current):
                raise InvalidRequestError(
                    f"An asynchronous callback with the key {key!r} is already registered for "
                    f"{name!r}; give this one its own key=.",
                    details={"event": name, "key": key},
                )
            self._asynchronous = {**self._asynchronous, name: (*current, callback)}

    def unregister(self, name: str, fn: Callback) -> bool:
        """Remove ``fn`` from ``name``; True if it was registered."""
        with self._lock:
            current = self._callbacks.get(name, ())
            kept = tuple(cb for cb in current if cb is not fn and cb != fn)
            self._callbacks = {**self._callbacks, name: kept}
            waiting = self._asynchronous.get(name, ())
            kept_async = tuple(c for c in waiting if c.fn is not fn and c.fn != fn)
            self._asynchronous = {**self._asynchronous, name: kept_async}
            return len(kept) != len(current) or len(kept_async) != len(waiting)

    def for_event(self, name: str) -> tuple[Callback, ...]:
        """The synchronous callbacks of ``name``."""
        return self._callbacks.get(name, ())

    def asynchronous(self, name: str) -> tuple[AsyncCallback, ...]:
        """The asynchronous callbacks of ``name``."""
        return self._asynchronous.get(name, ())

    def all_asynchronous(self) -> list[AsyncCallback]:
        """Every asynchronous callback, of every event."""
        return [c for callbacks in self._asynchronous.values() for c in callbacks]

    def by_key(self, name: str, key: str) -> AsyncCallback | None:
        """The asynchronous callback of ``name`` registered under ``key``."""
        return next((c for c in self._asynchronous.get(name, ()) if c.key == key), None)


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
        return bool(self.registry.for_event(name)) or any(
            s.has_receivers_for(self.sender) for s in _STATE_SIGNALS
        )

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

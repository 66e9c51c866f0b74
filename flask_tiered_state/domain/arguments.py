"""Checks of the small arguments of the manager's public calls."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import InvalidRequestError
from .model import StateTransition

__all__ = [
    "UPDATE_TRANSITIONS",
    "check_actor_reason",
    "check_positive_int",
    "check_transition",
]

#: What ``update_state`` accepts (CREATE is ``register_state``, ROLLBACK ``rollback_state``).
UPDATE_TRANSITIONS = (
    StateTransition.UPDATE,
    StateTransition.ACTIVATE,
    StateTransition.SUSPEND,
    StateTransition.RESUME,
    StateTransition.EXPIRE,
    StateTransition.DELETE,
)
MAX_ACTOR_LENGTH = 200
MAX_REASON_LENGTH = 10_000


def check_transition(
    value: object, allowed: Iterable[StateTransition] = tuple(StateTransition), *, what: str
) -> StateTransition:
    """``value`` (a StateTransition, or its value or name as a string) if allowed."""
    allowed = tuple(allowed)
    transition: StateTransition | None = None
    if isinstance(value, StateTransition):
        transition = value
    elif isinstance(value, str):
        try:
            transition = StateTransition(value.lower())
        except ValueError:
            transition = None
    if transition is None or transition not in allowed:
        names = ", ".join(t.value for t in allowed)
        raise InvalidRequestError(
            f"Invalid {what} {value!r}; allowed: {names}.",
            details={what: repr(value), "allowed": [t.value for t in allowed]},
        )
    return transition


def check_positive_int(value: object, name: str, *, maximum: int | None = None) -> int:
    """``value`` if it is an int of at least 1 (and at most ``maximum``)."""
    if type(value) is not int or value < 1 or (maximum is not None and value > maximum):
        bound = f" and at most {maximum}" if maximum is not None else ""
        raise InvalidRequestError(
            f"Invalid {name} {value!r}; {name} is an integer of at least 1{bound}.",
            details={name: repr(value)},
        )
    return value


def check_actor_reason(actor: object, reason: object) -> None:
    """``actor`` and ``reason`` are None or strings (up to 200 / 10,000 characters)."""
    for name, value, limit in (
        ("actor", actor, MAX_ACTOR_LENGTH),
        ("reason", reason, MAX_REASON_LENGTH),
    ):
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise InvalidRequestError(
                f"Invalid {name} {str(value)[:60]!r}; {name} is None or a string of at most "
                f"{limit} characters.",
                details={name: repr(value)[:200]},
            )

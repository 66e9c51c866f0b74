"""Checks of the small arguments of the manager's public calls, and their bounds.

The bounds keep every value within what the storage holds and compares, so a bad
argument is refused with :class:`~flask_tiered_state.errors.InvalidRequestError` (or
:class:`~flask_tiered_state.errors.ValidationError` for a state's fields) naming the
limit, never a database error:

- versions (``expected_version``, ``to_version``, ``if_version``, diff versions) are
  at most :data:`MAX_VERSION`, what the history's ``version`` column (INTEGER) holds;
- ``actor`` at most :data:`MAX_ACTOR_LENGTH` characters, ``reason``
  :data:`MAX_REASON_LENGTH`, a state's ``name`` :data:`MAX_NAME_LENGTH`; its
  ``metadata`` at most :data:`MAX_METADATA_KEYS` top-level keys and
  :data:`MAX_METADATA_BYTES` bytes as JSON (``data`` is bounded by the record's size,
  ``TIERED_STATE_MAX_STATE_BYTES``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import InvalidRequestError, ValidationError
from ..json_codec import dumps
from .model import StateTransition

__all__ = [
    "MAX_ACTOR_LENGTH",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_KEYS",
    "MAX_NAME_LENGTH",
    "MAX_REASON_LENGTH",
    "MAX_ROW_ID",
    "MAX_VERSION",
    "UPDATE_TRANSITIONS",
    "check_actor_reason",
    "check_name_metadata",
    "check_positive_int",
    "check_transition",
    "check_version",
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
#: The highest version number: the history's ``version`` column is a 32-bit INTEGER.
MAX_VERSION = 2**31 - 1
#: The highest row id (a delivery's): a signed 64-bit integer.
MAX_ROW_ID = 2**63 - 1
#: The longest display ``name`` of a state, in characters.
MAX_NAME_LENGTH = 500
#: The most top-level keys of a state's ``metadata``.
MAX_METADATA_KEYS = 256
#: The largest ``metadata`` of a state, in bytes of its JSON text (UTF-8).
MAX_METADATA_BYTES = 64 * 1024


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


def check_version(value: object, name: str) -> int:
    """``value`` if it is a version number: an int from 1 to :data:`MAX_VERSION`."""
    return check_positive_int(value, name, maximum=MAX_VERSION)


def check_name_metadata(
    name: str | None, metadata: dict[str, Any] | None, *, state_id: str
) -> None:
    """A state's ``name`` and ``metadata`` (None: not given) are within their bounds.

    :raises ValidationError: naming the field, its size and the limit.
    """
    errors: dict[str, list[str]] = {}
    if name is not None and len(name) > MAX_NAME_LENGTH:
        errors["name"] = [f"Is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed."]
    if metadata is not None:
        if len(metadata) > MAX_METADATA_KEYS:
            errors["metadata"] = [
                f"Has {len(metadata)} keys; at most {MAX_METADATA_KEYS} are allowed."
            ]
        else:
            size = len(dumps(metadata).encode("utf-8", "surrogatepass"))
            if size > MAX_METADATA_BYTES:
                errors["metadata"] = [
                    f"Is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed "
                    "(keep large values in data)."
                ]
    if errors:
        first = next(iter(errors))
        raise ValidationError(
            f"The state structure for {state_id!r} is invalid: {first}: {errors[first][0]}",
            errors,
        )


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

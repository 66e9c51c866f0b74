"""Validation of the state structure callers pass, and per-type validators.

The *state structure* that ``register_state`` / ``update_state`` take is a mapping
with the keys ``name``, ``type``, ``data`` and ``metadata`` (all optional). ``data``
and ``metadata`` are JSON objects; ``name`` a string. The record's managed fields
(``state_id``, ``status``, ``version``, ``created_at``, ``updated_at``) are never
taken from the caller: they may appear (so a record read with ``get_state`` can be
sent back) only with the record's current values.

Two kinds of checks:

- A type's *schema* (``register_state_type(..., schema=)``) checks the state's
  ``data`` only, whenever a change gives new data.
- A *validator* (``register_validator``) checks the whole proposed state document,
  ``{"state_id", "name", "type", "status", "data", "metadata", "version",
  "created_at", "updated_at"}`` as it would be stored, on every registration,
  transition, update and rollback (not on DELETE). It gets its own copy.

Either may be:

- a callable ``check(value) -> bool``: False rejects;
- a callable raising :class:`marshmallow.ValidationError` (its messages are kept);
  one raising ``TypeError``, ``ValueError``, ``KeyError`` or ``AttributeError`` (a
  value of a shape it did not expect) rejects too;
- a :class:`marshmallow.Schema` class or instance: ``schema.validate(value)`` errors
  reject.

A rejection raises :class:`~flask_tiered_state.errors.ValidationError` whose
``errors`` map field names to messages, and nothing is stored. The schema runs first;
when it rejects the data, the validators are not run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import marshmallow

from ..errors import ConfigurationError, ValidationError
from ..json_codec import check_encodable

__all__ = [
    "MANAGED_FIELDS",
    "STRUCTURE_FIELDS",
    "StateStructure",
    "Validator",
    "ValidatorRegistry",
    "check_json",
    "parse_structure",
    "run_checks",
]

#: Keys a caller may set.
STRUCTURE_FIELDS = ("name", "type", "data", "metadata")
#: Keys the manager owns.
MANAGED_FIELDS = ("state_id", "status", "version", "created_at", "updated_at")

#: What ``register_validator`` accepts.
Validator = Callable[[Any], Any] | marshmallow.Schema | type[marshmallow.Schema]
_MISSING = object()
#: What a validator becomes once normalised: ``check(data) -> errors`` (empty: valid).
_Check = Callable[[Any], dict[str, Any]]


class StateStructure:
    """The caller's structure, checked: the fields given (None: not given)."""

    __slots__ = ("data", "metadata", "name")

    def __init__(
        self,
        name: str | None,
        data: dict[str, Any] | None,
        metadata: dict[str, Any] | None,
    ) -> None:
        self.name, self.data, self.metadata = name, data, metadata


def parse_structure(
    structure: object,
    *,
    state_id: str,
    state_type: str,
    current: Mapping[str, Any] | None = None,
) -> StateStructure:
    """Check a caller's state structure and return its fields.

    :param current: the current record for an update (managed fields must equal it);
        None for a registration (managed fields other than ``state_id`` are refused).
    :raises ValidationError: naming the offending key and what is allowed.
    """
    if structure is None:
        return StateStructure(None, None, None)
    if not isinstance(structure, Mapping):
        raise ValidationError(
            f"The state structure for {state_id!r} must be a mapping with the keys "
            f"{', '.join(STRUCTURE_FIELDS)}, not {type(structure).__name__}.",
            {"_schema": [f"Expected a mapping, got {type(structure).__name__}."]},
        )
    errors: dict[str, list[str]] = {}
    for key in structure:
        if key in STRUCTURE_FIELDS:
            continue
        if key in MANAGED_FIELDS:
            expected = state_id if key == "state_id" else (current or {}).get(key, _MISSING)
            if structure[key] == expected:
                continue
            errors[str(key)] = [
                f"{key} is managed by the state manager and cannot be set "
                "(status changes by transitions; pass expected_version for version checks)."
            ]
        else:
            errors[str(key)] = [
                f"Unknown key; allowed: {', '.join(STRUCTURE_FIELDS)} "
                f"(and the managed {', '.join(MANAGED_FIELDS)} unchanged)."
            ]
    given_type = structure.get("type")
    if given_type is not None and str(getattr(given_type, "value", given_type)) != state_type:
        errors["type"] = [f"Type {given_type!r} disagrees with the state type {state_type!r}."]
    name = structure.get("name")
    if name is not None and not isinstance(name, str):
        errors["name"] = [f"Must be a string, not {type(name).__name__}."]
    for key in ("data", "metadata"):
        value = structure.get(key)
        if value is not None and not isinstance(value, Mapping):
            errors[key] = [f"Must be a JSON object (mapping), not {type(value).__name__}."]
    if errors:
        first = next(iter(errors))
        raise ValidationError(
            f"The state structure for {state_id!r} is invalid: {first}: {errors[first][0]}",
            errors,
        )
    data, metadata = structure.get("data"), structure.get("metadata")
    return StateStructure(
        name,
        None if data is None else dict(data),
        None if metadata is None else dict(metadata),
    )


def check_json(value: object, *, state_id: str, field: str) -> None:
    """Refuse values that are not plain JSON (sets, objects, NaN, non-string keys)."""
    try:
        check_encodable(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"The {field} of {state_id!r} is not JSON-serialisable: {exc}. Use dicts with "
            "string keys, lists, strings, finite numbers, booleans and None.",
            {field: [str(exc)]},
        ) from None


def _normalise(validator: object) -> _Check:
    if isinstance(validator, type) and issubclass(validator, marshmallow.Schema):
        validator = validator()
    if isinstance(validator, marshmallow.Schema):
        schema = validator

        def check_schema(data: Any) -> dict[str, Any]:
            return dict(schema.validate(data))

        return check_schema
    if callable(validator):
        fn = validator
        label = getattr(fn, "__qualname__", None) or repr(fn)

        def check_callable(data: Any) -> dict[str, Any]:
            try:
                ok = fn(data)
            except marshmallow.ValidationError as exc:
                messages: Any = exc.messages
                return dict(messages) if isinstance(messages, Mapping) else {"_schema": messages}
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                # data of an unexpected shape: a rejection, not a server error
                return {"_schema": [f"Rejected by validator {label}: {type(exc).__name__}: {exc}"]}
            if ok is False:
                return {"_schema": [f"Rejected by validator {label}."]}
            return {}

        return check_callable
    raise ConfigurationError(
        f"Validator {validator!r} is neither a callable(data) -> bool nor a marshmallow "
        "Schema (class or instance)."
    )


class ValidatorRegistry:
    """Validators (and one schema) per state type; copy-on-write for lock-free reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._validators: dict[str, tuple[tuple[object, _Check], ...]] = {}
        self._schemas: dict[str, _Check] = {}
        self._state_checks: dict[str, tuple[_Check, ...]] = {}

    def _rebuild(self, state_type: str) -> None:
        checks = tuple(check for _v, check in self._validators.get(state_type, ()))
        self._state_checks = {**self._state_checks, state_type: checks}

    def register(self, state_type: str, validator: object) -> None:
        """Add ``validator`` to the checks of ``state_type``."""
        check = _normalise(validator)
        with self._lock:
            current = self._validators.get(state_type, ())
            self._validators[state_type] = (*current, (validator, check))
            self._rebuild(state_type)

    def unregister(self, state_type: str, validator: object) -> bool:
        """Remove ``validator``; True if it was registered."""
        with self._lock:
            current = self._validators.get(state_type, ())
            kept = tuple(item for item in current if item[0] is not validator)
            self._validators[state_type] = kept
            self._rebuild(state_type)
            return len(kept) != len(current)

    def set_schema(self, state_type: str, schema: object) -> None:
        """Set (or with None, clear) the schema a type was registered with."""
        check = None if schema is None else _normalise(schema)
        with self._lock:
            schemas = dict(self._schemas)
            if check is None:
                schemas.pop(state_type, None)
            else:
                schemas[state_type] = check
            self._schemas = schemas

    def schema(self, state_type: str) -> _Check | None:
        """The check of ``state_type``'s schema, on ``data``."""
        return self._schemas.get(state_type)

    def state_checks(self, state_type: str) -> tuple[_Check, ...]:
        """The validators of ``state_type``, in order, on the whole state document."""
        return self._state_checks.get(state_type, ())


def run_checks(
    checks: tuple[_Check, ...], value: Any, *, state_id: str, state_type: str, what: str
) -> None:
    """Run every check on ``value``; merge their field messages into one ValidationError
    (``what`` names the value in its message: "data" or "state")."""
    errors: dict[str, Any] = {}
    for check in checks:
        for field_name, messages in check(value).items():
            errors.setdefault(field_name, [])
            errors[field_name].extend(messages if isinstance(messages, list) else [messages])
    if errors:
        fields = ", ".join(sorted(errors))
        first = next(iter(errors))
        subject = f"The data of {state_type} state" if what == "data" else f"The {state_type} state"
        raise ValidationError(
            f"{subject} {state_id!r} failed validation ({fields}; {first}: "
            f"{errors[first][0]}); nothing was stored.",
            errors,
        )

"""How :class:`~.store.TieredStore` checks and encodes what callers pass it: the canonical
JSON text of values, categories given as the enum or its string, TTLs and expected
versions; bad input raises :class:`~flask_tiered_state.errors.InvalidRequestError`."""

from __future__ import annotations

from ..errors import InvalidRequestError
from ..json_codec import dumps
from . import _write_checks
from .base import StateCategory

__all__ = ["as_category", "check_expected_version", "check_ttl", "dumps"]

_CATEGORIES = ", ".join(repr(c.value) for c in StateCategory)


def as_category(value: object) -> StateCategory:
    """``value`` as a :class:`StateCategory` (the enum or its string value)."""
    if isinstance(value, StateCategory):
        return value
    try:
        return StateCategory(value)
    except (ValueError, TypeError):
        raise InvalidRequestError(
            f"category must be a StateCategory or one of {_CATEGORIES}, not {value!r}.",
            details={"category": repr(value)},
        ) from None


def check_ttl(ttl_seconds: object) -> int | None:
    if ttl_seconds is None or (type(ttl_seconds) is int and ttl_seconds > 0):
        return ttl_seconds
    raise InvalidRequestError(
        f"ttl_seconds must be a positive whole number of seconds or None, not {ttl_seconds!r}.",
        details={"ttl_seconds": repr(ttl_seconds)},
    )


def check_expected_version(expected: object) -> int | None:
    """``expected`` if it is None or a whole number of at least 0, else
    :class:`InvalidRequestError` (the repositories' own check)."""
    return None if expected is None else _write_checks.check_expected_version(expected)

"""Argument checks shared by the repositories' write paths (values, versions, TTLs)."""

from __future__ import annotations

from ..errors import ConfigurationError, InvalidRequestError
from .base import StateCategory
from .keys import validate_key

_CATEGORIES = ", ".join(repr(c.value) for c in StateCategory)

__all__ = [
    "as_category",
    "check_expected_version",
    "check_optional_expected_version",
    "check_optional_ttl",
    "check_ttl",
    "check_value",
    "check_version",
    "check_write",
    "int_option",
    "seconds_option",
]


def check_value(key: str, value: object) -> str:
    """``value`` if it is a string (JSON text), else :class:`InvalidRequestError`."""
    if type(value) is str:
        return value
    raise InvalidRequestError(
        f"The value for {key!r} is a {type(value).__name__}; repositories store JSON text "
        "(str). Serialise it first, e.g. with json.dumps.",
        details={"key": key, "type": type(value).__name__},
    )


def check_ttl(ttl: object, name: str = "ttl_seconds", *, setting: bool = False) -> int:
    """``ttl`` if it is a positive int, else :class:`InvalidRequestError` (a call's
    argument) or, with ``setting``, :class:`ConfigurationError` (a constructor's)."""
    if type(ttl) is int and ttl > 0:
        return ttl
    text = f"{name} must be a positive whole number of seconds or None, not {ttl!r}."
    if setting:
        raise ConfigurationError(text)
    raise InvalidRequestError(text, details={name: repr(ttl)})


def check_version(version: object) -> int:
    """``version`` if it is an int of at least 1, else :class:`InvalidRequestError`."""
    if type(version) is int and version >= 1:
        return version
    raise InvalidRequestError(
        f"version must be a whole number of at least 1 or None (next version), not {version!r}.",
        details={"version": repr(version)},
    )


def check_expected_version(expected: object) -> int:
    """``expected`` if it is an int of at least 0, else :class:`InvalidRequestError`."""
    if type(expected) is int and expected >= 0:
        return expected
    raise InvalidRequestError(
        f"expected_version must be a whole number of at least 0 (0: the key must not exist) "
        f"or None, not {expected!r}.",
        details={"expected_version": repr(expected)},
    )


def check_write(key: object, value: object, version: object, ttl: object) -> None:
    """Check one write's key, value, explicit version and per-call TTL (None: none given)."""
    check_value(validate_key(key), value)
    if version is not None:
        check_version(version)
    if ttl is not None:
        check_ttl(ttl)


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


def check_optional_ttl(ttl: object) -> int | None:
    """``ttl`` if it is None or a positive int, else :class:`InvalidRequestError`."""
    return None if ttl is None else check_ttl(ttl)


def check_optional_expected_version(expected: object) -> int | None:
    """``expected`` if it is None or a whole number of at least 0."""
    return None if expected is None else check_expected_version(expected)


# -- constructor arguments and settings: ConfigurationError ------------------------


def int_option(name: str, value: object, *, minimum: int = 1, optional: bool = False) -> int | None:
    """``value`` if it is an int of at least ``minimum`` (or None, when ``optional``),
    else :class:`ConfigurationError` naming ``name``: the one check of a whole-number
    setting or constructor argument."""
    if value is None and optional:
        return None
    if type(value) is int and value >= minimum:
        return value
    allowed = f"a whole number of at least {minimum}" + (" or None" if optional else "")
    raise ConfigurationError(f"{name} must be {allowed}, not {value!r}.")


def seconds_option(name: str, value: object, *, optional: bool = True) -> float | None:
    """``value`` as a positive, finite number of seconds (or None, when ``optional``),
    else :class:`ConfigurationError` naming ``name``."""
    if value is None and optional:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 < value < float("inf")  # also refuses NaN
    ):
        allowed = "a positive, finite number of seconds" + (" or None" if optional else "")
        raise ConfigurationError(f"{name} must be {allowed}, not {value!r}.")
    return float(value)

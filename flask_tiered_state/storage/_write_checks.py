"""Argument checks shared by the repositories' write paths (values, versions, TTLs)."""

from __future__ import annotations

from ..errors import ConfigurationError, InvalidRequestError
from .keys import validate_key

__all__ = [
    "check_expected_version",
    "check_ttl",
    "check_value",
    "check_version",
    "check_write",
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

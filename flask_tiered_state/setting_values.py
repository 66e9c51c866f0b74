"""Parsers of ``TIERED_STATE_*`` values, used by :data:`~flask_tiered_state.settings.SETTINGS`.

Each takes ``(key, value)`` and returns the typed value, or raises
:class:`~flask_tiered_state.errors.ConfigurationError` naming the key, the value and
what is expected. Text forms from the environment are accepted: integers as decimal
digits and booleans as ``true/false``, ``1/0``, ``yes/no``, ``on/off``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ConfigurationError

__all__ = [
    "AccessControlHook",
    "access_control",
    "boolean",
    "fail",
    "integer",
    "key_text",
    "local_dir",
    "optional_boolean",
    "optional_str",
    "options",
    "seconds",
    "tier_url",
    "url_prefix",
]

#: ``hook(request, action) -> bool | str``: True or an actor name allows, anything else denies.
AccessControlHook = Callable[[Any, str], object]

_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True}
_BOOL_WORDS.update({"0": False, "false": False, "no": False, "off": False})
_KEY_CHARS_RE = re.compile(r"[A-Za-z0-9_\-.:/@+=]*")
_URL_PREFIX_RE = re.compile(r"(/[A-Za-z0-9._~\-]+)+")
_IMPORT_RE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def fail(key: str, value: object, expected: str) -> ConfigurationError:
    return ConfigurationError(
        f"{key} is {value!r}; expected {expected}.",
        details={"key": key, "value": repr(value), "expected": expected},
    )


def boolean(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.strip().lower()]
    raise fail(key, value, "True or False (or one of 1/0, true/false, yes/no, on/off)")


def integer(key: str, value: object, minimum: int, *, optional: bool = False) -> int | None:
    expected = f"an integer >= {minimum}" + (" or None" if optional else "")
    if value is None and optional:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise fail(key, value, expected)
    return value


def seconds(key: str, value: object) -> float:
    expected = "a finite number of seconds > 0"
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise fail(key, value, expected) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise fail(key, value, expected)
    if value == float("inf"):
        raise fail(key, value, expected)
    return float(value)


def optional_seconds(key: str, value: object) -> float | None:
    """:func:`seconds`, or None (given as None, an empty string or ``none``)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    return seconds(key, value)


def optional_str(key: str, value: object, expected: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise fail(key, value, expected)
    return value


def key_text(key: str, value: object, max_length: int) -> str:
    expected = f"a string of at most {max_length} characters from A-Z a-z 0-9 _ - . : / @ + ="
    if not isinstance(value, str) or len(value) > max_length:
        raise fail(key, value, expected)
    if not _KEY_CHARS_RE.fullmatch(value):
        raise fail(key, value, expected)
    return value


def url_prefix(key: str, value: object) -> str | None:
    expected = "None (off) or a URL path such as '/api/states' (leading '/', no trailing '/')"
    prefix = optional_str(key, value, expected)
    if prefix is not None and not _URL_PREFIX_RE.fullmatch(prefix):
        raise fail(key, value, expected)
    return prefix


def access_control(key: str, value: object) -> AccessControlHook | None:
    expected = "None, a callable hook(request, action) or an import string 'module:function'"
    if value is None or value == "":
        return None
    if callable(value):
        return value
    if not isinstance(value, str) or not _IMPORT_RE.fullmatch(value):
        raise fail(key, value, expected)
    module_name, _, attribute = value.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise fail(key, value, f"{expected} that can be imported ({exc})") from None
    if not callable(target):
        raise fail(key, value, expected)
    return target  # type: ignore[no-any-return]


def local_dir(key: str, value: object) -> str | None:
    expected = "None (the app's instance folder) or a directory path"
    if value is None or value == "":
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise fail(key, value, expected)
    return value


def log_level(key: str, value: object) -> int | None:
    """A logging level: a name ('INFO'), a number >= 0, or None (and 'none') for none."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off")):
        return None
    if isinstance(value, str):
        level = logging.getLevelName(value.strip().upper())
        if isinstance(level, int):
            return level
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise fail(key, value, "a logging level name (DEBUG, INFO, ...), a number >= 0 or None")


def optional_boolean(key: str, value: object) -> bool | None:
    return None if value is None else boolean(key, value)


def tier_url(key: str, value: object, *, optional: bool = True) -> str | None:
    """A tier's backend URL (checked against its backend by the settings as a whole)."""
    expected = "a backend URL such as redis://, postgresql://, sqlite:///, s3:// or file:///" + (
        " or None (the embedded default)" if optional else ""
    )
    if value is None or value == "":
        if optional:
            return None
        raise fail(key, value, expected)
    if not isinstance(value, str) or not re.match(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+$", value):
        raise fail(key, value, expected)
    return value


def options(key: str, value: object) -> dict[str, Any]:
    """A tier's backend options: a dict of keyword arguments, or its JSON text."""
    expected = "a dict of the backend's keyword arguments (or its JSON text), or None"
    if value is None or value == "":
        return {}
    parsed = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            raise fail(key, value, expected) from None
    if not isinstance(parsed, Mapping) or not all(isinstance(name, str) for name in parsed):
        raise fail(key, value, expected)
    return dict(parsed)

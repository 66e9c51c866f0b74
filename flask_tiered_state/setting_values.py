"""Parsers of ``TIERED_STATE_*`` values, used by :data:`~flask_tiered_state.settings.SETTINGS`.

Each takes ``(key, value)`` and returns the typed value, or raises
:class:`~flask_tiered_state.errors.ConfigurationError` naming the key, the value and
what is expected. Text forms from the environment are accepted: integers as decimal
digits and booleans as ``true/false``, ``1/0``, ``yes/no``, ``on/off``.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from typing import Any

from .errors import ConfigurationError

__all__ = [
    "S3_STORAGE_CLASSES",
    "AccessControlHook",
    "access_control",
    "boolean",
    "bucket",
    "database_uri",
    "endpoint",
    "fail",
    "integer",
    "key_text",
    "local_dir",
    "optional_boolean",
    "optional_str",
    "redis_url",
    "seconds",
    "storage_class",
    "url_prefix",
]

#: The S3 storage classes the COLD tier can read without a restore request.
S3_STORAGE_CLASSES = (
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "REDUCED_REDUNDANCY",
)

#: ``hook(request, action) -> bool | str``: True or an actor name allows, anything else denies.
AccessControlHook = Callable[[Any, str], object]

_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True}
_BOOL_WORDS.update({"0": False, "false": False, "no": False, "off": False})
_KEY_CHARS_RE = re.compile(r"[A-Za-z0-9_\-.:/@+=]*")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
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


def redis_url(key: str, value: object) -> str | None:
    expected = "None (in-process HOT tier) or a redis://, rediss:// or unix:// URL"
    url = optional_str(key, value, expected)
    if url is not None and not re.match(r"(rediss?|unix)://\S+$", url):
        raise fail(key, value, expected)
    return url


def database_uri(key: str, value: object) -> str | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    expected = "None (SQLite in the instance folder) or a SQLAlchemy database URL"
    uri = optional_str(key, value, expected)
    if uri is not None:
        try:
            make_url(uri)
        except (ArgumentError, ValueError):
            raise fail(key, value, expected) from None
    return uri


def bucket(key: str, value: object) -> str | None:
    expected = (
        "None (a directory in the instance folder) or an S3 bucket name: "
        "3-63 characters of a-z, 0-9, '.' and '-'"
    )
    bucket = optional_str(key, value, expected)
    if bucket is not None and not _BUCKET_RE.fullmatch(bucket):
        raise fail(key, value, expected)
    return bucket


def endpoint(key: str, value: object) -> str | None:
    expected = "None (AWS) or an http:// or https:// URL"
    url = optional_str(key, value, expected)
    if url is not None and not re.match(r"https?://[^\s/]+\S*$", url):
        raise fail(key, value, expected)
    return url


def key_text(key: str, value: object, max_length: int) -> str:
    expected = f"a string of at most {max_length} characters from A-Z a-z 0-9 _ - . : / @ + ="
    if not isinstance(value, str) or len(value) > max_length:
        raise fail(key, value, expected)
    if not _KEY_CHARS_RE.fullmatch(value):
        raise fail(key, value, expected)
    return value


def storage_class(key: str, value: object) -> str:
    if value not in S3_STORAGE_CLASSES:
        raise fail(
            key,
            value,
            "one of " + ", ".join(S3_STORAGE_CLASSES) + " (GLACIER and DEEP_ARCHIVE objects "
            "need a restore before every read, so the COLD tier cannot use them)",
        )
    return str(value)


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


def optional_boolean(key: str, value: object) -> bool | None:
    return None if value is None else boolean(key, value)

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

from .domain.audit import HistorySealer, load_audit_keys
from .domain.encryption import MasterKeys, load_master_keys
from .errors import ConfigurationError

__all__ = [
    "ALLOW_ALL",
    "AccessControlHook",
    "access_control",
    "allow_all",
    "boolean",
    "fail",
    "integer",
    "key_text",
    "local_dir",
    "optional_boolean",
    "optional_str",
    "options",
    "rate_limit",
    "rate_limit_extra",
    "rate_limit_routes",
    "rate_limit_storage_url",
    "rate_limits_installed",
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
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() == "none")):
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


#: The value of ``TIERED_STATE_ACCESS_CONTROL`` that serves the API and the dashboard to
#: anyone, said explicitly (without a hook, mounting them refuses to start).
ALLOW_ALL = "allow-all"


def allow_all(request: Any, action: str) -> bool:
    """The hook ``TIERED_STATE_ACCESS_CONTROL = "allow-all"`` stands for: allows everything."""
    return True


def master_keys(key: str, value: object) -> MasterKeys | None:
    """``TIERED_STATE_ENCRYPTION_KEYS``: the master keys, checked (see
    :func:`~flask_tiered_state.domain.encryption.load_master_keys`)."""
    if isinstance(value, MasterKeys):
        return value
    try:
        return load_master_keys(value)  # type: ignore[arg-type]
    except ConfigurationError as exc:
        # never echo the value: it is a secret
        raise ConfigurationError(
            f"{key}: {exc.message}", details={"key": key, "expected": "master keys"}
        ) from None


def audit_keys(key: str, value: object) -> HistorySealer | None:
    """``TIERED_STATE_AUDIT_KEYS``: the keys that seal the history rows, checked (see
    :func:`~flask_tiered_state.domain.audit.load_audit_keys`)."""
    if value is None or isinstance(value, HistorySealer):
        return value
    # its errors name the key and never quote a key's value (a secret)
    return load_audit_keys(value)  # type: ignore[arg-type]


def access_control(key: str, value: object) -> AccessControlHook | None:
    expected = (
        f"None, {ALLOW_ALL!r}, a callable hook(request, action) or an import string "
        "'module:function'"
    )
    if value is None or value == "":
        return None
    if value == ALLOW_ALL:
        return allow_all
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
    parsed = json_mapping(key, value, expected)
    if not all(isinstance(name, str) for name in parsed):
        raise fail(key, value, expected)
    return dict(parsed)


def json_mapping(key: str, value: object, expected: str) -> Mapping[Any, Any]:
    """A setting given as a dict or its JSON text: the mapping ({} for None or "")."""
    if value is None or value == "":
        return {}
    parsed = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            raise fail(key, value, expected) from None
    if not isinstance(parsed, Mapping):
        raise fail(key, value, expected)
    return parsed


# --------------------------------------------------------------------------- rate limits

#: What to install for rate limits (Flask-Limiter).
RATE_LIMIT_EXTRA = "flask-tiered-state[ratelimit]"
_ACTION_RE = re.compile(r"[a-z][a-z_]*(\.[a-z][a-z_]*)*")


def rate_limits_installed() -> bool:
    """True when Flask-Limiter (the ``ratelimit`` extra) can be imported."""
    try:
        importlib.import_module("flask_limiter")
    except ImportError:
        return False
    return True


def rate_limit(key: str, value: object) -> str | None:
    """A limit in Flask-Limiter's notation (``"300 per minute"``, ``"10/second;1000/hour"``),
    or None (or ``""``) for no limit."""
    if value is None or value == "":
        return None
    expected = (
        "a rate limit such as '300 per minute' or '10/second;1000/hour' "
        "(Flask-Limiter's notation), or None for no limit"
    )
    if not isinstance(value, str):
        raise fail(key, value, expected)
    try:
        from limits import parse_many
    except ImportError:
        return value  # rate_limit_extra refuses it: Flask-Limiter is missing
    try:
        parse_many(value)
    except ValueError:
        raise fail(key, value, expected) from None
    return value


def rate_limit_routes(key: str, value: object) -> dict[str, str | None]:
    """Limits of single routes: a dict of access-control action -> limit or None (or its
    JSON text). Whether each action is a mounted route's is checked when they mount."""
    expected = (
        "a dict of route action (as passed to the access-control hook, e.g. "
        "'states.register') -> rate limit such as '10 per minute', or None for no limit"
    )
    limits: dict[str, str | None] = {}
    for action, text in json_mapping(key, value, expected).items():
        if not isinstance(action, str) or not _ACTION_RE.fullmatch(action):
            raise fail(key, value, expected)
        try:
            limits[action] = rate_limit(key, text)
        except ConfigurationError:
            raise fail(key, value, f"{expected}; not {text!r} for {action!r}") from None
    return limits


def rate_limit_storage_url(key: str, value: object) -> str:
    """Where the rate-limit counters live: a storage URL of the ``limits`` library."""
    expected = (
        "a rate-limit storage URL: memory://, or redis://host:6379/0 (also rediss://, "
        "redis+sentinel://, redis+cluster://, memcached://, mongodb://) to share the counts "
        "between processes"
    )
    if not isinstance(value, str) or "://" not in value:
        raise fail(key, value, expected)
    return value


def rate_limit_extra(enabled: bool | None, changed: list[str], storage_url: str) -> None:
    """Refuse rate limits asked for (``enabled`` True, or ``changed`` keys set) without
    Flask-Limiter, and a storage URL whose scheme the ``limits`` library does not know.

    :raises ConfigurationError: naming the key and what to do.
    """
    if enabled is False:
        return
    if not rate_limits_installed():
        if enabled or changed:
            key = changed[0] if changed else "TIERED_STATE_RATE_LIMIT"
            raise ConfigurationError(
                f"{key} asks for rate limits, but Flask-Limiter is not installed: install "
                f"{RATE_LIMIT_EXTRA!r}, or set TIERED_STATE_RATE_LIMIT = False to go without "
                "them.",
                details={"key": key},
            )
        return
    import limits.storage

    known = sorted(
        {
            scheme
            for name in limits.storage.__all__
            for scheme in getattr(getattr(limits.storage, name), "STORAGE_SCHEME", None) or ()
        }
    )
    if storage_url.partition("://")[0] not in known:
        raise fail(
            "TIERED_STATE_RATE_LIMIT_STORAGE_URL",
            storage_url,
            f"a storage URL of the limits library, its scheme one of {', '.join(known)} "
            "(Flask serves synchronously: no 'async+')",
        )

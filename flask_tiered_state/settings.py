"""Typed, validated settings read once from ``app.config["TIERED_STATE_*"]``.

:data:`SETTINGS` is the one table of keys (name, type, default, documentation);
the configuration docs are generated from it and checked against it.
:func:`load_settings` fills every absent key of ``app.config`` with its default
(``app.config.setdefault``) and validates all of them into a frozen
:class:`TieredStateSettings`. A bad value raises
:class:`~flask_tiered_state.errors.ConfigurationError` naming the key, the value
and what is expected, at ``init_app`` rather than at first use.

Values coming from the environment are accepted in their text form: integers as
decimal digits and booleans as ``true/false``, ``1/0``, ``yes/no``, ``on/off``.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigurationError

__all__ = [
    "CONFIG_PREFIX",
    "S3_STORAGE_CLASSES",
    "SETTINGS",
    "AccessControlHook",
    "Setting",
    "TieredStateSettings",
    "load_settings",
]

CONFIG_PREFIX = "TIERED_STATE_"

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


def _fail(key: str, value: object, expected: str) -> ConfigurationError:
    return ConfigurationError(
        f"{key} is {value!r}; expected {expected}.",
        details={"key": key, "value": repr(value), "expected": expected},
    )


def _bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.strip().lower()]
    raise _fail(key, value, "True or False (or one of 1/0, true/false, yes/no, on/off)")


def _int(key: str, value: object, minimum: int, *, optional: bool = False) -> int | None:
    expected = f"an integer >= {minimum}" + (" or None" if optional else "")
    if value is None and optional:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(key, value, expected)
    return value


def _seconds(key: str, value: object) -> float:
    expected = "a finite number of seconds > 0"
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _fail(key, value, expected) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _fail(key, value, expected)
    if value == float("inf"):
        raise _fail(key, value, expected)
    return float(value)


def _optional_str(key: str, value: object, expected: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _fail(key, value, expected)
    return value


def _redis_url(key: str, value: object) -> str | None:
    expected = "None (in-process HOT tier) or a redis://, rediss:// or unix:// URL"
    url = _optional_str(key, value, expected)
    if url is not None and not re.match(r"(rediss?|unix)://\S+$", url):
        raise _fail(key, value, expected)
    return url


def _database_uri(key: str, value: object) -> str | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    expected = "None (SQLite in the instance folder) or a SQLAlchemy database URL"
    uri = _optional_str(key, value, expected)
    if uri is not None:
        try:
            make_url(uri)
        except (ArgumentError, ValueError):
            raise _fail(key, value, expected) from None
    return uri


def _bucket(key: str, value: object) -> str | None:
    expected = (
        "None (a directory in the instance folder) or an S3 bucket name: "
        "3-63 characters of a-z, 0-9, '.' and '-'"
    )
    bucket = _optional_str(key, value, expected)
    if bucket is not None and not _BUCKET_RE.fullmatch(bucket):
        raise _fail(key, value, expected)
    return bucket


def _endpoint(key: str, value: object) -> str | None:
    expected = "None (AWS) or an http:// or https:// URL"
    url = _optional_str(key, value, expected)
    if url is not None and not re.match(r"https?://[^\s/]+\S*$", url):
        raise _fail(key, value, expected)
    return url


def _key_text(key: str, value: object, max_length: int) -> str:
    expected = f"a string of at most {max_length} characters from A-Z a-z 0-9 _ - . : / @ + ="
    if not isinstance(value, str) or len(value) > max_length:
        raise _fail(key, value, expected)
    if not _KEY_CHARS_RE.fullmatch(value):
        raise _fail(key, value, expected)
    return value


def _storage_class(key: str, value: object) -> str:
    if value not in S3_STORAGE_CLASSES:
        raise _fail(
            key,
            value,
            "one of " + ", ".join(S3_STORAGE_CLASSES) + " (GLACIER and DEEP_ARCHIVE objects "
            "need a restore before every read, so the COLD tier cannot use them)",
        )
    return str(value)


def _url_prefix(key: str, value: object) -> str | None:
    expected = "None (off) or a URL path such as '/api/states' (leading '/', no trailing '/')"
    prefix = _optional_str(key, value, expected)
    if prefix is not None and not _URL_PREFIX_RE.fullmatch(prefix):
        raise _fail(key, value, expected)
    return prefix


def _access_control(key: str, value: object) -> AccessControlHook | None:
    expected = "None, a callable hook(request, action) or an import string 'module:function'"
    if value is None or value == "":
        return None
    if callable(value):
        return value
    if not isinstance(value, str) or not _IMPORT_RE.fullmatch(value):
        raise _fail(key, value, expected)
    module_name, _, attribute = value.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise _fail(key, value, f"{expected} that can be imported ({exc})") from None
    if not callable(target):
        raise _fail(key, value, expected)
    return target  # type: ignore[no-any-return]


def _local_dir(key: str, value: object) -> str | None:
    expected = "None (the app's instance folder) or a directory path"
    if value is None or value == "":
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise _fail(key, value, expected)
    return value


def _optional_bool(key: str, value: object) -> bool | None:
    return None if value is None else _bool(key, value)


@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration key: its name without the prefix, type, default and meaning."""

    name: str
    type: str
    default: Any
    doc: str
    parse: Callable[[str, Any], Any]

    @property
    def key(self) -> str:
        """The ``app.config`` key, e.g. ``TIERED_STATE_REDIS_URL``."""
        return CONFIG_PREFIX + self.name

    @property
    def attribute(self) -> str:
        """The :class:`TieredStateSettings` attribute, e.g. ``redis_url``."""
        return self.name.lower()


_MIB = 1024 * 1024

#: Every ``TIERED_STATE_*`` key, in documentation order.
SETTINGS: tuple[Setting, ...] = (
    Setting("REDIS_URL", "str | None", None,
            "Redis URL of the HOT tier; None keeps HOT in process memory.", _redis_url),
    Setting("DATABASE_URI", "str | None", None,
            "SQLAlchemy URL of the WARM tier and the history; None uses the Flask-SQLAlchemy "
            "``db`` given to the extension, else a SQLite file in the instance folder.",
            _database_uri),
    Setting("S3_BUCKET", "str | None", None,
            "S3 bucket of the COLD tier; None uses a directory in the instance folder.", _bucket),
    Setting("S3_ENDPOINT_URL", "str | None", None,
            "Endpoint of an S3-compatible service (MinIO, moto); None means AWS.", _endpoint),
    Setting("S3_PREFIX", "str", "", "Prefix of every object key in the bucket.",
            lambda k, v: _key_text(k, v, 200)),
    Setting("S3_STORAGE_CLASS", "str", "STANDARD_IA",
            "Storage class of COLD objects: " + ", ".join(S3_STORAGE_CLASSES) + ".",
            _storage_class),
    Setting("KEY_PREFIX", "str", "tiered_state:",
            "Prefix of every Redis key, so several apps can share one Redis database.",
            lambda k, v: _key_text(k, v, 64)),
    Setting("CACHE_MAX_ENTRIES", "int", 10_000,
            "Most records the in-process LRU cache holds.", lambda k, v: _int(k, v, 1)),
    Setting("CACHE_MAX_BYTES", "int", 64 * _MIB,
            "Most bytes of records the in-process LRU cache holds.", lambda k, v: _int(k, v, 1)),
    Setting("HOT_TTL_SECONDS", "int", 3600,
            "Time to live of HOT copies and of HOT-home records without their own TTL.",
            lambda k, v: _int(k, v, 1)),
    Setting("PROMOTE_AFTER_ACCESSES", "int", 5,
            "Reads within PROMOTION_WINDOW_SECONDS after which a record is copied to HOT.",
            lambda k, v: _int(k, v, 1)),
    Setting("PROMOTION_WINDOW_SECONDS", "float", 60.0,
            "The window in which PROMOTE_AFTER_ACCESSES reads are counted.", _seconds),
    Setting("DEMOTE_AFTER_IDLE_SECONDS", "float", 30 * 24 * 3600.0,
            "Time without reads or writes after which a WARM record is idle and may be "
            "demoted to COLD.", _seconds),
    Setting("MAX_STATE_BYTES", "int | None", _MIB,
            "Largest serialised record accepted (413 over HTTP); None means no limit.",
            lambda k, v: _int(k, v, 1, optional=True)),
    Setting("METRICS", "bool", True,
            "Collect tier and operation metrics (Prometheus when prometheus-client is installed).",
            _bool),
    Setting("REGISTER_ERROR_HANDLERS", "bool", True,
            "Answer every TieredStateError raised in the app, and every HTTP error under "
            "API_PREFIX, with a JSON body. The REST blueprint's own routes answer JSON always.",
            _bool),
    Setting("API_PREFIX", "str | None", None,
            "URL prefix of the REST blueprint, e.g. '/api/state'; None leaves it off.",
            _url_prefix),
    Setting("DASHBOARD_PREFIX", "str | None", None,
            "URL prefix of the dashboard blueprint, e.g. '/state-dashboard'; None leaves it off.",
            _url_prefix),
    Setting("ACCESS_CONTROL", "callable | str | None", None,
            "Hook called as hook(request, action) before every API and dashboard view, or its "
            "import string 'module:function'. True or an actor name allows (the name is recorded "
            "as the actor in history); anything else answers 403. None allows everything.",
            _access_control),
    Setting("CLI", "bool", True,
            "Register the ``flask state`` commands on ``app.cli``; False makes them refuse to run.",
            _bool),
    Setting("LOCAL_DIR", "str | None", None,
            "Directory of the embedded SQLite file and COLD directory; None means "
            "``<instance_path>/tiered_state``.", _local_dir),
    Setting("CREATE_TABLES", "bool | None", None,
            "Create missing tables at first use. None means True without ``db=`` and False with "
            "it (the app's migrations, ``db.create_all()`` or ``flask state init-db`` own them).",
            _optional_bool),
)  # fmt: skip

_BY_ATTRIBUTE = {setting.attribute: setting for setting in SETTINGS}


@dataclass(frozen=True, slots=True)
class TieredStateSettings:
    """The validated settings of one app; see :data:`SETTINGS` for each field's meaning."""

    redis_url: str | None = None
    database_uri: str | None = None
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_prefix: str = ""
    s3_storage_class: str = "STANDARD_IA"
    key_prefix: str = "tiered_state:"
    cache_max_entries: int = 10_000
    cache_max_bytes: int = 64 * _MIB
    hot_ttl_seconds: int = 3600
    promote_after_accesses: int = 5
    promotion_window_seconds: float = 60.0
    demote_after_idle_seconds: float = 30 * 24 * 3600.0
    max_state_bytes: int | None = _MIB
    metrics: bool = True
    register_error_handlers: bool = True
    api_prefix: str | None = None
    dashboard_prefix: str | None = None
    access_control: AccessControlHook | None = None
    cli: bool = True
    local_dir: str | None = None
    create_tables: bool | None = None

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> TieredStateSettings:
        """Validate the ``TIERED_STATE_*`` keys of ``config``; absent keys take their default.

        :raises ConfigurationError: naming the first bad key, its value and what is expected.
        """
        values = {
            setting.attribute: setting.parse(setting.key, config.get(setting.key, setting.default))
            for setting in SETTINGS
        }
        settings = cls(**values)
        if settings.api_prefix is not None and settings.api_prefix == settings.dashboard_prefix:
            raise _fail(
                CONFIG_PREFIX + "DASHBOARD_PREFIX",
                settings.dashboard_prefix,
                f"a URL prefix other than TIERED_STATE_API_PREFIX ({settings.api_prefix!r})",
            )
        return settings

    def to_dict(self) -> dict[str, Any]:
        """The settings by config key, for display (``flask state stats``, the dashboard)."""
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "access_control" and value is not None:
                value = f"{value.__module__}:{getattr(value, '__qualname__', repr(value))}"
            out[_BY_ATTRIBUTE[item.name].key] = value
        return out


def load_settings(
    config: MutableMapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> TieredStateSettings:
    """Fill ``config`` with a default for every absent ``TIERED_STATE_*`` key and validate.

    :param config: the app's ``app.config``; keys already set there win.
    :param overrides: defaults by lowercase name (``api_prefix="/api"``), as given to
        ``TieredState(**options)``; they replace the built-in defaults only.
    :raises ConfigurationError: for an unknown override name or a bad value.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(_BY_ATTRIBUTE))
    if unknown:
        raise ConfigurationError(
            f"Unknown TieredState option(s): {', '.join(unknown)}; known options: "
            f"{', '.join(sorted(_BY_ATTRIBUTE))} (or set TIERED_STATE_* keys in app.config).",
            details={"unknown": unknown},
        )
    for setting in SETTINGS:
        config.setdefault(setting.key, overrides.get(setting.attribute, setting.default))
    return TieredStateSettings.from_mapping(config)

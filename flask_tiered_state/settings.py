"""Typed, validated settings read once from ``app.config["TIERED_STATE_*"]``.

:data:`SETTINGS` is the one table of keys (name, type, default, documentation);
the configuration docs are generated from it and checked against it.
:func:`load_settings` fills every absent key of ``app.config`` with its default
(``app.config.setdefault``) and validates all of them into a frozen
:class:`TieredStateSettings`. A bad value raises
:class:`~flask_tiered_state.errors.ConfigurationError` naming the key, the value
and what is expected, at ``init_app`` rather than at first use; so does a
``TIERED_STATE_*`` key that is not a setting, since a typo would otherwise keep the
default without a word.

Values coming from the environment are accepted in their text form: integers as
decimal digits and booleans as ``true/false``, ``1/0``, ``yes/no``, ``on/off``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, fields
from typing import Any

from . import setting_values as values
from .errors import ConfigurationError

__all__ = [
    "CONFIG_PREFIX",
    "DOCUMENTED_AT",
    "S3_STORAGE_CLASSES",
    "SETTINGS",
    "AccessControlHook",
    "Setting",
    "TieredStateSettings",
    "check_unknown_keys",
    "load_settings",
]

CONFIG_PREFIX = "TIERED_STATE_"

#: The S3 storage classes the COLD tier can read without a restore request.
S3_STORAGE_CLASSES = values.S3_STORAGE_CLASSES

#: ``hook(request, action) -> bool | str``: True or an actor name allows, anything else denies.
AccessControlHook = values.AccessControlHook


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
            "Redis URL of the HOT tier; None keeps HOT in process memory.", values.redis_url),
    Setting("DATABASE_URI", "str | None", None,
            "SQLAlchemy URL of the WARM tier and the history; None uses the Flask-SQLAlchemy "
            "``db`` given to the extension, else a SQLite file in the instance folder.",
            values.database_uri),
    Setting("SQL_STATEMENT_TIMEOUT_SECONDS", "float | None", 5.0,
            "PostgreSQL's statement_timeout for the connections the library opens from "
            "DATABASE_URI: a statement running longer is cancelled and the call raises "
            "DeadlineExceededError. None leaves the server's setting. With a ``db`` of your own, "
            "set it in its engine options; CALL_TIMEOUT_SECONDS applies either way.",
            values.optional_seconds),
    Setting("SQL_LOCK_TIMEOUT_SECONDS", "float | None", 2.0,
            "PostgreSQL's lock_timeout for the same connections: how long a write waits for a "
            "row another transaction holds before it gives up with DeadlineExceededError.",
            values.optional_seconds),
    Setting("SQL_USE_COPY", "bool", True,
            "On PostgreSQL, write batches with COPY into a session temporary table, then merge. "
            "Set False behind PgBouncer in transaction mode, where session state does not "
            "survive the transaction.", values.boolean),
    Setting("S3_BUCKET", "str | None", None,
            "S3 bucket of the COLD tier; None uses a directory in the instance folder.",
            values.bucket),
    Setting("S3_ENDPOINT_URL", "str | None", None,
            "Endpoint of an S3-compatible service (MinIO, moto); None means AWS.", values.endpoint),
    Setting("S3_PREFIX", "str", "", "Prefix of every object key in the bucket.",
            lambda k, v: values.key_text(k, v, 200)),
    Setting("S3_STORAGE_CLASS", "str", "STANDARD_IA",
            "Storage class of COLD objects: " + ", ".join(S3_STORAGE_CLASSES) + ".",
            values.storage_class),
    Setting("REDIS_TIMEOUT_SECONDS", "float", 1.0,
            "Socket timeout of the Redis HOT tier: a Redis that does not answer within it is "
            "marked degraded and reads go to WARM (one retry on a fresh connection first).",
            values.seconds),
    Setting("S3_TIMEOUT_SECONDS", "float", 10.0,
            "Read timeout of each S3 request (connect: at most 2 seconds); botocore retries a "
            "failed request twice.", values.seconds),
    Setting("CALL_TIMEOUT_SECONDS", "float | None", 10.0,
            "The time budget of one call on one state (get, update, a store transaction), its "
            "round trips included: past it the call raises DeadlineExceededError (503) within "
            "one tenth of a second, even when a server stopped answering. None bounds each "
            "round trip by the timeouts above only.", values.optional_seconds),
    Setting("KEY_PREFIX", "str", "tiered_state:",
            "Prefix of every Redis key, so several apps can share one Redis database.",
            lambda k, v: values.key_text(k, v, 64)),
    Setting("CACHE_MAX_ENTRIES", "int", 10_000,
            "Most records the in-process LRU cache holds.", lambda k, v: values.integer(k, v, 1)),
    Setting("CACHE_MAX_BYTES", "int", 64 * _MIB,
            "Most bytes of records the in-process LRU cache holds.",
            lambda k, v: values.integer(k, v, 1)),
    Setting("CACHE_TTL_SECONDS", "int | None", 300,
            "Longest time, in seconds, a record stays in the in-process cache before it is read "
            "from its tier again: the backstop for changes made by other processes. None keeps "
            "entries until they are evicted or invalidated.",
            lambda k, v: values.integer(k, v, 1, optional=True)),
    Setting("CACHE_UNSYNCED_SECONDS", "float", 1.0,
            "While a process is not subscribed to the invalidation channel (Redis is down or "
            "unreachable from it), its cache serves an entry for at most this long after the "
            "entry was cached, since other processes' changes may go unheard.", values.seconds),
    Setting("DROP_REPLAY_SECONDS", "float | None", 1.0,
            "With a Redis HOT tier, how often every process replays the journal of stale copies "
            "another process could not drop (Redis was unreachable from it): the bound on how "
            "long such a copy can be read. None: only at start and when HOT recovers.",
            values.optional_seconds),
    Setting("INVALIDATION", "bool", True,
            "When the HOT tier is Redis, publish every change's cache invalidation through Redis "
            "and drop the cache entries other processes changed. False leaves other processes' "
            "caches to CACHE_TTL_SECONDS.", values.boolean),
    Setting("HOT_TTL_SECONDS", "int", 3600,
            "Time to live of HOT copies and of HOT-home records without their own TTL.",
            lambda k, v: values.integer(k, v, 1)),
    Setting("PROMOTE_AFTER_ACCESSES", "int", 5,
            "Reads within PROMOTION_WINDOW_SECONDS after which a record is copied to HOT.",
            lambda k, v: values.integer(k, v, 1)),
    Setting("PROMOTION_WINDOW_SECONDS", "float", 60.0,
            "The window in which PROMOTE_AFTER_ACCESSES reads are counted.", values.seconds),
    Setting("DEMOTE_AFTER_IDLE_SECONDS", "float", 30 * 24 * 3600.0,
            "Time without reads or writes after which a WARM record is idle and may be "
            "demoted to COLD.", values.seconds),
    Setting("MAX_STATE_BYTES", "int | None", _MIB,
            "Largest serialised record accepted (413 over HTTP); None means no limit.",
            lambda k, v: values.integer(k, v, 1, optional=True)),
    Setting("METRICS", "bool", True,
            "Collect tier and operation metrics (Prometheus when prometheus-client is installed).",
            values.boolean),
    Setting("REGISTER_ERROR_HANDLERS", "bool", True,
            "Answer every TieredStateError raised in the app, and every HTTP error under "
            "API_PREFIX, with a JSON body. The REST blueprint's own routes answer JSON always.",
            values.boolean),
    Setting("API_PREFIX", "str | None", None,
            "URL prefix of the REST blueprint, e.g. '/api/state'; None leaves it off.",
            values.url_prefix),
    Setting("DASHBOARD_PREFIX", "str | None", None,
            "URL prefix of the dashboard blueprint, e.g. '/state-dashboard'; None leaves it off.",
            values.url_prefix),
    Setting("ACCESS_CONTROL", "callable | str | None", None,
            "Hook called as hook(request, action) before every API and dashboard view, or its "
            "import string 'module:function'. True or an actor name allows (the name is recorded "
            "as the actor in history); anything else answers 403. None allows everything.",
            values.access_control),
    Setting("CLI", "bool", True,
            "Register the ``flask state`` commands on ``app.cli``; False makes them refuse to run.",
            values.boolean),
    Setting("LOCAL_DIR", "str | None", None,
            "Directory of the embedded SQLite file and COLD directory; None means "
            "``<instance_path>/tiered_state``.", values.local_dir),
    Setting("CREATE_TABLES", "bool | None", None,
            "Create missing tables at first use. None means True without ``db=`` and False with "
            "it (the app's migrations, ``db.create_all()`` or ``flask state init-db`` own them).",
            values.optional_boolean),
)  # fmt: skip

_BY_ATTRIBUTE = {setting.attribute: setting for setting in SETTINGS}
_BY_KEY = {setting.key: setting for setting in SETTINGS}


@dataclass(frozen=True, slots=True)
class TieredStateSettings:
    """The validated settings of one app; see :data:`SETTINGS` for each field's meaning."""

    redis_url: str | None = None
    database_uri: str | None = None
    sql_statement_timeout_seconds: float | None = 5.0
    sql_lock_timeout_seconds: float | None = 2.0
    sql_use_copy: bool = True
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_prefix: str = ""
    s3_storage_class: str = "STANDARD_IA"
    redis_timeout_seconds: float = 1.0
    s3_timeout_seconds: float = 10.0
    call_timeout_seconds: float | None = 10.0
    key_prefix: str = "tiered_state:"
    cache_max_entries: int = 10_000
    cache_max_bytes: int = 64 * _MIB
    cache_ttl_seconds: int | None = 300
    cache_unsynced_seconds: float = 1.0
    drop_replay_seconds: float | None = 1.0
    invalidation: bool = True
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
        parsed = {
            setting.attribute: setting.parse(setting.key, config.get(setting.key, setting.default))
            for setting in SETTINGS
        }
        settings = cls(**parsed)
        if settings.api_prefix is not None and settings.api_prefix == settings.dashboard_prefix:
            raise values.fail(
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


#: Where the keys are documented, for error messages.
DOCUMENTED_AT = (
    "the Configuration page of the documentation (docs/configuration.rst), generated from "
    "flask_tiered_state.settings.SETTINGS"
)


def _closest(name: str, known: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def check_unknown_keys(config: Mapping[str, Any]) -> None:
    """Refuse ``TIERED_STATE_*`` keys of ``config`` that are not settings (typos).

    :raises ConfigurationError: naming each unknown key and the closest known one.
    """
    unknown = sorted(
        key
        for key in config
        if isinstance(key, str) and key.upper().startswith(CONFIG_PREFIX) and key not in _BY_KEY
    )
    if not unknown:
        return
    names = [setting.name for setting in SETTINGS]
    suggestions: dict[str, str] = {}
    for key in unknown:
        match = _closest(key[len(CONFIG_PREFIX) :].upper(), names)
        if match is not None:
            suggestions[key] = CONFIG_PREFIX + match
    described = "; ".join(
        f"{key} (did you mean {suggestions[key]}?)" if key in suggestions else key
        for key in unknown
    )
    raise ConfigurationError(
        f"Unknown setting(s) in app.config: {described}. A misspelt key would silently keep "
        f"the default, so it is refused: rename or remove it. The TIERED_STATE_* settings "
        f"are documented in {DOCUMENTED_AT}.",
        details={"key": unknown[0], "unknown": unknown, "suggestions": suggestions},
    )


def load_settings(
    config: MutableMapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> TieredStateSettings:
    """Fill ``config`` with a default for every absent ``TIERED_STATE_*`` key and validate.

    :param config: the app's ``app.config``; keys already set there win.
    :param overrides: defaults by lowercase name (``api_prefix="/api"``), as given to
        ``TieredState(**options)``; they replace the built-in defaults only.
    :raises ConfigurationError: for an unknown override name, an unknown
        ``TIERED_STATE_*`` key in ``config`` or a bad value.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(_BY_ATTRIBUTE))
    if unknown:
        described = ", ".join(
            f"{name} (did you mean {match}?)" if (match := _closest(name, _BY_ATTRIBUTE)) else name
            for name in unknown
        )
        raise ConfigurationError(
            f"Unknown TieredState option(s): {described}; known options: "
            f"{', '.join(sorted(_BY_ATTRIBUTE))} (or set TIERED_STATE_* keys in app.config).",
            details={"unknown": unknown},
        )
    check_unknown_keys(config)
    for setting in SETTINGS:
        config.setdefault(setting.key, overrides.get(setting.attribute, setting.default))
    return TieredStateSettings.from_mapping(config)

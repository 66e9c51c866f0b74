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

:func:`config_from_environment` reads the settings from environment variables of the
same names (``TIERED_STATE_HOT_URL=redis://...``), refusing unknown ``TIERED_STATE_*``
variables the same way. Values coming from the environment are accepted in their text
form: integers as decimal digits, booleans as ``true/false``, ``1/0``, ``yes/no``,
``on/off``, dicts and lists as JSON, ``none`` for None where None is allowed.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import click
from flask.cli import FlaskGroup, NoAppException, ScriptInfo

from . import setting_values as values
from .domain.audit import HistorySealer
from .domain.encryption import MasterKeys
from .domain.registry import DEFAULT_MAX_STATES
from .errors import ConfigurationError
from .http_errors import escape_control
from .json_codec import DEFAULT_MAX_JSON_DEPTH, MAX_JSON_DEPTH
from .observability.slow import DEFAULT_SLOW_OPERATION_MS, slow_operation_setting
from .ops.backup import backup_url_setting
from .ops.recovery import check_recovery_settings, critical_keys_setting
from .ops.retention import backup_retention_setting, history_retention_setting

__all__ = [
    "CONFIG_PREFIX",
    "DOCUMENTED_AT",
    "NOT_SETTINGS_ENVIRONMENT",
    "RETIRED_SETTINGS",
    "SETTINGS",
    "AccessControlHook",
    "CommandLineConfigurationError",
    "Setting",
    "TieredStateSettings",
    "check_unknown_keys",
    "config_from_environment",
    "load_settings",
    "one_line_configuration_errors",
]

CONFIG_PREFIX = "TIERED_STATE_"

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
        """The ``app.config`` key, e.g. ``TIERED_STATE_HOT_URL``."""
        return CONFIG_PREFIX + self.name

    @property
    def attribute(self) -> str:
        """The :class:`TieredStateSettings` attribute, e.g. ``hot_url``."""
        return self.name.lower()


_MIB = 1024 * 1024
#: What a request body may have beyond 3 x the record it carries (the JSON around it).
REQUEST_HEADROOM_BYTES = 64 * 1024


def _json_depth(key: str, value: object) -> int:
    expected = f"an integer from 1 to {MAX_JSON_DEPTH}"
    try:
        depth = values.integer(key, value, 1)
    except ConfigurationError:
        raise values.fail(key, value, expected) from None
    if depth is None or depth > MAX_JSON_DEPTH:
        raise values.fail(key, value, expected)
    return depth


#: Every ``TIERED_STATE_*`` key, in documentation order.
SETTINGS: tuple[Setting, ...] = (
    Setting("HOT_URL", "str", "memory://",
            "URL of the HOT tier's backend: ``redis://host:6379/0`` (also ``rediss://``, "
            "``unix://``), or ``memory://`` for process memory.",
            lambda k, v: values.tier_url(k, v, optional=False)),
    Setting("HOT_OPTIONS", "dict", {},
            "Keyword arguments of the HOT backend, e.g. ``{\"socket_timeout\": 1.0}`` for "
            "Redis (see Backends).", values.options),
    Setting("WARM_URL", "str | None", None,
            "SQLAlchemy URL of the WARM tier and the history: ``postgresql://user@host/db`` "
            "(psycopg 3) or ``sqlite:////path/state.db``. None uses the Flask-SQLAlchemy "
            "``db`` given to the extension, else a SQLite file in the instance folder.",
            values.tier_url),
    Setting("WARM_OPTIONS", "dict", {},
            "Keyword arguments of the WARM backend, e.g. ``{\"statement_timeout\": 5.0, "
            "\"lock_timeout\": 2.0, \"use_copy\": false}`` for PostgreSQL (see Backends).",
            values.options),
    Setting("COLD_URL", "str | None", None,
            "URL of the COLD tier: ``s3://bucket/prefix?endpoint_url=...&storage_class=..."
            "&region_name=...`` or ``file:///path/to/dir``. None uses a directory in the "
            "instance folder.", values.tier_url),
    Setting("COLD_OPTIONS", "dict", {},
            "Keyword arguments of the COLD backend, e.g. ``{\"read_timeout\": 10}`` for S3 "
            "(see Backends).", values.options),
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
    Setting("CRITICAL_KEYS", "list[str]", [],
            "Globs over store keys that ``flask state recover`` (and RECOVER_ON_HOT_RESTART) "
            "puts back in HOT from WARM or COLD, e.g. ``[\"position:*\", \"risk_limits\", "
            "\"state:account-*\"]`` (a state is ``state:<id>``). See Operations.",
            critical_keys_setting),
    Setting("RECOVER_ON_HOT_RESTART", "bool", False,
            "Watch the Redis HOT tier (its run id, every second) and, when it restarted, place "
            "verified HOT copies of the CRITICAL_KEYS at once. Needs a redis:// HOT_URL and "
            "CRITICAL_KEYS.", values.boolean),
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
    Setting("MAX_JSON_DEPTH", "int", DEFAULT_MAX_JSON_DEPTH,
            "Most levels of arrays and objects a state's data or metadata may nest (``{\"a\": "
            "[1]}`` is 2), from 1 to 256. A write bringing deeper ones raises "
            "JSONTooDeepError (400 ``json_too_deep`` over HTTP), as does a request body too "
            "deep to parse.", _json_depth),
    Setting("MAX_REQUEST_BYTES", "int | None", None,
            "Largest request body the REST API reads: a larger one answers 413 "
            "``request_entity_too_large`` before it is parsed. None (the default) is "
            "3 x MAX_STATE_BYTES + 64 KiB (3.06 MiB: ``\\u`` escapes make a body up to 3 "
            "times the record it carries), or no limit when MAX_STATE_BYTES is None. An app's "
            "smaller ``MAX_CONTENT_LENGTH`` wins.",
            lambda k, v: values.integer(k, v, 1, optional=True)),
    Setting("MAX_STATES_PER_TYPE", "int | None", DEFAULT_MAX_STATES,
            "Quota of live (not deleted) states of each type registered without its own "
            "``max_states``, the built-in types (sessions included) among them: a registration "
            "past it answers 409 ``quota_exceeded``. None: no quota. Counted approximately "
            "under concurrency; see Security.",
            lambda k, v: values.integer(k, v, 1, optional=True)),
    Setting("ENCRYPTION_KEYS", "list[str] | str | callable | None", None,
            "The master keys of field encryption at rest, newest first: Fernet keys "
            "(``flask_tiered_state.generate_master_key()``), as a list, a text of keys "
            "separated by commas (from the environment), or a callable / ``\"module:function\"`` "
            "returning the list (a KMS or secrets manager plugs in there; called once, at "
            "``init_app``). The newest wraps new data keys; every listed key unwraps. None: no "
            "encryption (a type with ``encrypted_fields`` is then refused). See Security.",
            values.master_keys),
    Setting("AUDIT_KEYS", "str | list[str] | callable | None", None,
            "The HMAC keys that seal every history row, chained per state, so that "
            "``flask state audit verify`` detects rows and records changed in the database by "
            "anyone without the key: newest first, each at least 32 bytes (UTF-8), e.g. "
            "``secrets.token_urlsafe(32)``; one key, a list (a JSON list from the "
            "environment), or a callable / ``\"module:function\"`` returning them (called "
            "once, at ``init_app``). The newest seals new rows; every listed key verifies, so "
            "keep retired keys listed after it. None: rows are written unsealed. See Security.",
            values.audit_keys),
    Setting("EVENT_RETENTION_SECONDS", "float", 7 * 86400.0,
            "How long ``flask state dispatch`` keeps delivered deliveries of asynchronous "
            "callbacks and finished timers (applied, skipped, failed, cancelled) before it "
            "prunes them: 7 days by default. Pending and dead deliveries are never pruned.",
            values.seconds),
    Setting("HISTORY_RETENTION", "dict", {},
            "How much history ``flask state gc`` keeps in the history table, per state type: "
            "``{\"session\": {\"days\": 30}, \"*\": {\"versions\": 1000}}`` keeps each "
            "session's versions of the last 30 days and each other state's newest 1000 "
            "(``\"*\"``: every type not named; both keys in one policy: what either keeps). "
            "Older rows are archived to the COLD tier as compressed chunks and stay readable "
            "(``get_state_history(..., include_archived=True)``, ``get_state(..., as_of=...)``) "
            "and verifiable. Version 1, the last version and the rows of undelivered events "
            "always stay. {} (the default) keeps every row; see Operations.",
            history_retention_setting),
    Setting("BACKUP_RETENTION", "dict", {},
            "Which backups ``flask state gc`` keeps: ``{\"count\": 14, \"days\": 30}`` keeps "
            "the newest 14 and those of the last 30 days (one key or both: what either "
            "keeps). The newest backup and the backups a kept incremental one builds on are "
            "always kept. {} (the default) keeps every backup.",
            backup_retention_setting),
    Setting("IDEMPOTENCY_TTL_SECONDS", "float", 86400.0,
            "How long an idempotency key is remembered from its first use: a repeat within "
            "it gets the stored result (or a refusal). Past it the key is forgotten, a "
            "request with it runs again, and ``flask state dispatch`` prunes it.",
            values.seconds),
    Setting("METRICS", "bool", True,
            "Collect tier and operation metrics (Prometheus when prometheus-client is installed).",
            values.boolean),
    Setting("OPERATION_LOG_LEVEL", "str | int | None", logging.INFO,
            "Level of the structured record each state operation writes to the "
            "``flask_tiered_state.operations`` logger (its operation, state_id, "
            "transition_type and duration_ms are attributes of the record): a level name "
            "('DEBUG', 'INFO', ...) or number (20 is INFO); None writes none.", values.log_level),
    Setting("SLOW_OPERATION_MS", "float | None", DEFAULT_SLOW_OPERATION_MS,
            "A state change (from its call to its commit) or a tier call (a read, a write, a "
            "batch, a key scan) slower than this many milliseconds is logged at WARNING on the "
            "``flask_tiered_state.slow`` logger (operation, state_id, tier, duration_ms and "
            "correlation_id are attributes of the record) and counted in the metric "
            "``state_slow_operations_total``. None: off.", slow_operation_setting),
    Setting("REGISTER_ERROR_HANDLERS", "bool", True,
            "Register one app-wide handler, for TieredStateError only: a library exception "
            "escaping the app's own views answers the JSON error body with its status. An "
            "app's own handler of that class (or a subclass) wins. The REST blueprint and the "
            "dashboard answer their own errors either way.",
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
            "as the actor in history); anything else answers 403. 'allow-all' allows every "
            "request. None (no hook) refuses to mount the API or the dashboard, unless the app "
            "is TESTING; see Security.",
            values.access_control),
    Setting("RATE_LIMIT", "bool | None", None,
            "Rate-limit every route of the REST API and the dashboard per client, with "
            "Flask-Limiter (the ``ratelimit`` extra). None: on when Flask-Limiter is installed "
            "and the app is not TESTING; True: on (init_app fails without Flask-Limiter); "
            "False: off. See Security.", values.optional_boolean),
    Setting("RATE_LIMIT_READS", "str | None", "300 per minute",
            "Requests each client may make to each GET route: the actor the access-control "
            "hook names, else the remote address. Flask-Limiter's notation ('300 per minute', "
            "'10/second;1000/hour'); past it the route answers 429 with Retry-After. None: no "
            "limit.", values.rate_limit),
    Setting("RATE_LIMIT_WRITES", "str | None", "60 per minute",
            "Requests each client may make to each POST route (as RATE_LIMIT_READS). None: no "
            "limit.", values.rate_limit),
    Setting("RATE_LIMIT_ROUTES", "dict", {},
            "Limits of single routes by their access-control action, replacing READS or WRITES "
            "for them, e.g. ``{\"states.register\": \"10 per minute\", \"health\": null}`` "
            "(null: no limit).", values.rate_limit_routes),
    Setting("RATE_LIMIT_STORAGE_URL", "str", "memory://",
            "Where the rate-limit counters live, as a storage URL of the ``limits`` library: "
            "``memory://`` counts in each process; ``redis://host:6379/0`` shares the counts "
            "between workers and hosts (keys under KEY_PREFIX).", values.rate_limit_storage_url),
    Setting("CLI", "bool", True,
            "Register the ``flask state`` commands on ``app.cli``; False makes them refuse to run.",
            values.boolean),
    Setting("LOCAL_DIR", "str | None", None,
            "Directory of the embedded SQLite file and COLD directory; None means "
            "``<instance_path>/tiered_state``.", values.local_dir),
    Setting("BACKUP_URL", "str | None", None,
            "Where ``flask state backup`` writes and finds backups: a directory path, "
            "``file:///path/to/dir`` or ``s3://bucket/prefix?endpoint_url=...&region_name=...`` "
            "(a bucket or prefix apart from the COLD tier's: a backup kept beside the data it "
            "protects is lost with it). None means ``<instance_path>/backups``. See Operations.",
            backup_url_setting),
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

    hot_url: str = "memory://"
    hot_options: dict[str, Any] = field(default_factory=dict)
    warm_url: str | None = None
    warm_options: dict[str, Any] = field(default_factory=dict)
    cold_url: str | None = None
    cold_options: dict[str, Any] = field(default_factory=dict)
    call_timeout_seconds: float | None = 10.0
    key_prefix: str = "tiered_state:"
    cache_max_entries: int = 10_000
    cache_max_bytes: int = 64 * _MIB
    cache_ttl_seconds: int | None = 300
    cache_unsynced_seconds: float = 1.0
    drop_replay_seconds: float | None = 1.0
    invalidation: bool = True
    hot_ttl_seconds: int = 3600
    critical_keys: list[str] = field(default_factory=list)
    recover_on_hot_restart: bool = False
    promote_after_accesses: int = 5
    promotion_window_seconds: float = 60.0
    demote_after_idle_seconds: float = 30 * 24 * 3600.0
    max_state_bytes: int | None = _MIB
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    max_request_bytes: int | None = None
    max_states_per_type: int | None = DEFAULT_MAX_STATES
    encryption_keys: MasterKeys | None = None
    audit_keys: HistorySealer | None = None
    event_retention_seconds: float = 7 * 86400.0
    history_retention: dict[str, dict[str, int | float]] = field(default_factory=dict)
    backup_retention: dict[str, int | float] = field(default_factory=dict)
    idempotency_ttl_seconds: float = 86400.0
    metrics: bool = True
    operation_log_level: int | None = logging.INFO
    slow_operation_ms: float | None = DEFAULT_SLOW_OPERATION_MS
    register_error_handlers: bool = True
    api_prefix: str | None = None
    dashboard_prefix: str | None = None
    access_control: AccessControlHook | None = None
    rate_limit: bool | None = None
    rate_limit_reads: str | None = "300 per minute"
    rate_limit_writes: str | None = "60 per minute"
    rate_limit_routes: dict[str, str | None] = field(default_factory=dict)
    rate_limit_storage_url: str = "memory://"
    cli: bool = True
    local_dir: str | None = None
    backup_url: str | None = None
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
        settings._check_backends()
        check_recovery_settings(
            CONFIG_PREFIX + "RECOVER_ON_HOT_RESTART",
            settings.recover_on_hot_restart,
            settings.critical_keys,
            settings.hot_url,
        )
        changed = [s.key for s in SETTINGS if s.name.startswith("RATE_LIMIT_")
                   and getattr(settings, s.attribute) != s.default]  # fmt: skip
        values.rate_limit_extra(settings.rate_limit, changed, settings.rate_limit_storage_url)
        if settings.api_prefix is not None and settings.api_prefix == settings.dashboard_prefix:
            raise values.fail(
                CONFIG_PREFIX + "DASHBOARD_PREFIX",
                settings.dashboard_prefix,
                f"a URL prefix other than TIERED_STATE_API_PREFIX ({settings.api_prefix!r})",
            )
        return settings

    def _check_backends(self) -> None:
        """Check each configured tier's URL and options against its backend (its package
        is installed, it takes the URL and every option), without connecting anything."""
        from .storage.base import BackendContext, StateCategory
        from .storage.registry import check_backend

        embedded = {
            StateCategory.HOT: "memory://",
            StateCategory.WARM: "sqlite:///tiered_state.sqlite3",
            StateCategory.COLD: "file:cold",
        }
        for category, url, options in (
            (StateCategory.HOT, self.hot_url, self.hot_options),
            (StateCategory.WARM, self.warm_url, self.warm_options),
            (StateCategory.COLD, self.cold_url, self.cold_options),
        ):
            if url is None and not options:
                continue
            key = CONFIG_PREFIX + category.name
            context = BackendContext(category, key_prefix=self.key_prefix, local_dir=Path("."))
            try:
                check_backend(url or embedded[category], options, context)
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"{key}_URL / {key}_OPTIONS: {exc.message}",
                    details={"key": f"{key}_URL", **exc.details},
                ) from exc

    @property
    def request_bytes_limit(self) -> int | None:
        """The largest request body the REST API reads (see ``MAX_REQUEST_BYTES``)."""
        if self.max_request_bytes is not None:
            return self.max_request_bytes
        if self.max_state_bytes is None:
            return None
        return 3 * self.max_state_bytes + REQUEST_HEADROOM_BYTES

    def to_dict(self) -> dict[str, Any]:
        """The settings by config key, for display (``flask state stats``, the dashboard)."""
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "access_control" and value is values.allow_all:
                value = values.ALLOW_ALL
            elif item.name == "access_control" and value is not None:
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


#: Keys of earlier versions (without the prefix) -> the key that replaced them, and how
#: to write it; ``init_app`` refuses them with that advice.
RETIRED_SETTINGS = {
    "REDIS_URL": ("HOT_URL", "the same redis:// URL"),
    "DATABASE_URI": ("WARM_URL", "the same SQLAlchemy URL"),
    "S3_BUCKET": ("COLD_URL", "s3://BUCKET/PREFIX?endpoint_url=...&storage_class=..."),
    "S3_ENDPOINT_URL": ("COLD_URL", "s3://BUCKET/PREFIX?endpoint_url=..."),
    "S3_PREFIX": ("COLD_URL", "s3://BUCKET/PREFIX"),
    "S3_STORAGE_CLASS": ("COLD_URL", "s3://BUCKET/PREFIX?storage_class=..."),
    "SQL_USE_COPY": ("WARM_OPTIONS", '{"use_copy": false}'),
    "SQL_STATEMENT_TIMEOUT_SECONDS": ("WARM_OPTIONS", '{"statement_timeout": 5.0}'),
    "SQL_LOCK_TIMEOUT_SECONDS": ("WARM_OPTIONS", '{"lock_timeout": 2.0}'),
    "REDIS_TIMEOUT_SECONDS": ("HOT_OPTIONS", '{"socket_timeout": 1.0}'),
    "S3_TIMEOUT_SECONDS": ("COLD_OPTIONS", '{"read_timeout": 10.0}'),
}


def _retired_message(config: Mapping[str, Any], retired: list[str]) -> str:
    """Say what replaced each retired key; the S3 keys are folded into one URL."""
    parts = []
    names = [key[len(CONFIG_PREFIX) :] for key in retired]
    s3 = [n for n in names if n.startswith("S3_") and RETIRED_SETTINGS[n][0] == "COLD_URL"]
    if s3:
        bucket = config.get(CONFIG_PREFIX + "S3_BUCKET") or "BUCKET"
        prefix = config.get(CONFIG_PREFIX + "S3_PREFIX") or ""
        query = [
            f"{name}={config[CONFIG_PREFIX + key]}"
            for key, name in (("S3_ENDPOINT_URL", "endpoint_url"),
                              ("S3_STORAGE_CLASS", "storage_class"))
            if config.get(CONFIG_PREFIX + key)
        ]  # fmt: skip
        url = f"s3://{bucket}/{prefix}" + ("?" + "&".join(query) if query else "")
        keys = ", ".join(CONFIG_PREFIX + n for n in s3)
        parts.append(f"{keys}: write TIERED_STATE_COLD_URL = {url!r}")
    for name in names:
        if name in s3:
            continue
        new, how = RETIRED_SETTINGS[name]
        parts.append(f"{CONFIG_PREFIX}{name}: write {CONFIG_PREFIX}{new} = {how}")
    return (
        "Setting(s) of an earlier version in app.config, replaced by the backend URLs and "
        "options of each tier: " + "; ".join(parts) + ". See the Configuration page."
    )


def _described(
    unknown: list[str], suggest: Callable[[str], str | None]
) -> tuple[str, dict[str, str]]:
    """The unknown names, each with the key ``suggest(name)`` says it may mean, for an
    error's text; and those suggestions by name, for its details."""
    suggestions = {name: key for name in unknown if (key := suggest(name)) is not None}
    described = "; ".join(
        f"{name} (did you mean {suggestions[name]}?)" if name in suggestions else name
        for name in unknown
    )
    return described, suggestions


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
    retired = [key for key in unknown if key[len(CONFIG_PREFIX) :] in RETIRED_SETTINGS]
    if retired:
        raise ConfigurationError(
            _retired_message(config, retired),
            details={"key": retired[0], "retired": retired},
        )
    names = [setting.name for setting in SETTINGS]

    def suggest(key: str) -> str | None:
        match = _closest(key[len(CONFIG_PREFIX) :].upper(), names)
        return None if match is None else CONFIG_PREFIX + match

    described, suggestions = _described(unknown, suggest)
    raise ConfigurationError(
        f"Unknown setting(s) in app.config: {described}. A misspelt key would silently keep "
        f"the default, so it is refused: rename or remove it. The TIERED_STATE_* settings "
        f"are documented in {DOCUMENTED_AT}.",
        details={"key": unknown[0], "unknown": unknown, "suggestions": suggestions},
    )


#: Environment variables under the prefix that are not settings, and left alone: those of
#: this project's test suite (``TIERED_STATE_REQUIRE_SERVICES``, ``TIERED_STATE_CHROMIUM``,
#: ``TIERED_STATE_TEST_*``).
NOT_SETTINGS_ENVIRONMENT = re.compile(r"TIERED_STATE_(?:REQUIRE_SERVICES|CHROMIUM|TEST_[A-Z0-9_]+)")
#: The spelling of Flask's ``from_prefixed_env`` (``FLASK_`` + key), which earlier docs taught.
_FLASK_PREFIX = "FLASK_" + CONFIG_PREFIX


def _suggested_key(name: str) -> str | None:
    """The setting's key closest to ``name`` (a variable or key without the prefix); a
    retired name leads to the key that replaced it."""
    name = name.upper()
    if name in _BY_KEY or CONFIG_PREFIX + name in _BY_KEY:
        return CONFIG_PREFIX + name.removeprefix(CONFIG_PREFIX)
    match = _closest(name, [*(s.name for s in SETTINGS), *RETIRED_SETTINGS])
    if match is None:
        return None
    return CONFIG_PREFIX + RETIRED_SETTINGS.get(match, (match, ""))[0]


def config_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``TIERED_STATE_*`` settings set in ``environ`` (``os.environ``), by key, as
    text: each setting parses its text form. Other variables are left out.

    One spelling is read: the key itself (``TIERED_STATE_HOT_URL``). A variable that
    looks like a setting but is none -- a typo (``TIERED_STATE_REDIS_ULR``), a key of an
    earlier version, or Flask's ``FLASK_TIERED_STATE_*`` spelling -- is refused, since it
    would otherwise keep the default without a word::

        app.config.update(config_from_environment(os.environ))
        TieredState(app)

    :raises ConfigurationError: naming each unknown variable and the setting it may mean.
    """
    config: dict[str, Any] = {}
    unknown: list[str] = []
    for name, text in environ.items():
        if name in _BY_KEY:
            config[name] = text
        elif name.upper().startswith(_FLASK_PREFIX) or (
            name.upper().startswith(CONFIG_PREFIX) and not NOT_SETTINGS_ENVIRONMENT.fullmatch(name)
        ):
            unknown.append(name)
    if unknown:
        unknown.sort()
        described, suggestions = _described(
            unknown,
            lambda name: _suggested_key(name.upper().removeprefix("FLASK_")[len(CONFIG_PREFIX) :]),
        )
        raise ConfigurationError(
            f"Unknown environment variable(s): {described}. A misspelt TIERED_STATE_* variable "
            "would silently keep the default, so it is refused: rename or remove it (the "
            "settings: docs/configuration.rst).",
            details={"key": unknown[0], "unknown": unknown, "suggestions": suggestions},
        )
    return config


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


# Both bases keep the same one-line text in ``message`` (click declares it Final).
class CommandLineConfigurationError(ConfigurationError, click.ClickException):  # type: ignore[misc]
    """A :class:`~flask_tiered_state.errors.ConfigurationError` raised while the ``flask``
    command loads the app (see :func:`one_line_configuration_errors`): click prints it as
    one ``Error: ...`` line and exits with status 1. It is still a ``ConfigurationError``."""

    def __init__(self, error: ConfigurationError) -> None:
        message = escape_control(error.message)
        ConfigurationError.__init__(self, message, details=error.details)
        click.ClickException.__init__(self, message)


class _ListingConfigurationError(CommandLineConfigurationError, NoAppException):  # type: ignore[misc]
    """The same error while ``flask --help`` lists the commands: Flask's
    ``FlaskGroup.list_commands`` prints the traceback of any error from loading the app
    but a :class:`~flask.cli.NoAppException`, of which it prints the message alone. It
    is raised there only: ``FlaskGroup.get_command`` (``flask <command>``) takes a
    ``NoAppException`` to mean "no such command"."""

    # Should it ever reach click: one line and status 1, not UsageError's usage and 2.
    exit_code = 1
    show = click.ClickException.show


def _loading_from_flask_cli() -> bool:
    """Whether the ``flask`` command (or a test CLI runner) is running: a click context
    with Flask's :class:`~flask.cli.ScriptInfo` is active."""
    context = click.get_current_context(silent=True)
    return context is not None and context.find_object(ScriptInfo) is not None


def _listing_flask_commands() -> bool:
    """Whether the app is being loaded by ``FlaskGroup.list_commands`` (``flask --help``)."""
    listing = FlaskGroup.list_commands.__code__
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code is listing:
            return True
        frame = frame.f_back
    return False


@contextmanager
def one_line_configuration_errors() -> Iterator[None]:
    """Under the ``flask`` command, a :class:`~flask_tiered_state.errors.ConfigurationError`
    raised in the block (or the decorated app factory) is shown as one line -- ``Error:``
    and the message naming the key, the value and what is expected -- with exit status 1
    instead of Flask's traceback (``flask --help`` prints the line, then the commands it
    has without the app). Elsewhere (a WSGI server, tests) it propagates unchanged.
    ``init_app`` applies it to the extension's own settings; decorate an app factory to
    cover the app's other checks too::

        @one_line_configuration_errors()
        def create_app() -> Flask: ...

    :raises CommandLineConfigurationError: under the ``flask`` command.
    """
    try:
        yield
    except CommandLineConfigurationError:
        raise
    except ConfigurationError as exc:
        # Listing the commands (``flask --help``, shell completion) is the flask command
        # too, even where no click context is active (completion).
        if _listing_flask_commands():
            raise _ListingConfigurationError(exc) from None
        if not _loading_from_flask_cli():
            raise
        raise CommandLineConfigurationError(exc) from None

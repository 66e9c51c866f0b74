"""Settings: one table of keys, defaults written into app.config, every bad value refused
at init_app with the key, the value and what is expected."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from flask_tiered_state.app_state import default_manager
from flask_tiered_state.errors import ConfigurationError, IdempotencyKeyReusedError
from flask_tiered_state.extension import TieredState, get_app_state
from flask_tiered_state.settings import SETTINGS, TieredStateSettings, load_settings

from .conftest import AppFactory


def allow_all(request: Any, action: str) -> bool:
    return True


NOT_CALLABLE = 42


def test_the_table_and_the_settings_class_agree() -> None:
    fields = {
        f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        for f in dataclasses.fields(TieredStateSettings)
    }
    assert [s.attribute for s in SETTINGS] == list(fields)
    for setting in SETTINGS:
        assert fields[setting.attribute] == setting.default, setting.key
        assert setting.key == "TIERED_STATE_" + setting.name
        assert setting.doc.endswith((".", ".``")), setting.key
    required = {
        "HOT_URL", "HOT_OPTIONS", "WARM_URL", "WARM_OPTIONS", "COLD_URL", "COLD_OPTIONS",
        "KEY_PREFIX", "CACHE_MAX_ENTRIES", "CACHE_MAX_BYTES",
        "HOT_TTL_SECONDS", "PROMOTE_AFTER_ACCESSES", "PROMOTION_WINDOW_SECONDS",
        "DEMOTE_AFTER_IDLE_SECONDS", "MAX_STATE_BYTES", "METRICS", "REGISTER_ERROR_HANDLERS",
        "API_PREFIX", "DASHBOARD_PREFIX", "ACCESS_CONTROL", "CLI",
    }  # fmt: skip
    assert required <= {s.name for s in SETTINGS}


def test_init_app_writes_every_default_into_app_config(make_app: AppFactory) -> None:
    app = make_app()
    for setting in SETTINGS:
        assert app.config[setting.key] == setting.default
    assert get_app_state(app).settings == TieredStateSettings()


def test_config_wins_over_constructor_options(make_app: AppFactory) -> None:
    extension = TieredState(api_prefix="/from-options", hot_ttl_seconds=60)
    app = make_app(extension=extension, TIERED_STATE_API_PREFIX="/from-config")
    settings = get_app_state(app).settings
    assert settings.api_prefix == "/from-config"
    assert settings.hot_ttl_seconds == 60
    assert app.config["TIERED_STATE_HOT_TTL_SECONDS"] == 60


def test_an_unknown_option_is_refused_at_construction() -> None:
    with pytest.raises(ConfigurationError, match=r"Unknown TieredState option\(s\): hot_tll"):
        TieredState(hot_tll=5)


def test_a_bad_option_value_is_refused_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="TIERED_STATE_CACHE_MAX_ENTRIES is 0"):
        TieredState(cache_max_entries=0)


def test_text_forms_from_the_environment_are_accepted(tmp_path: Path) -> None:
    config = {
        "TIERED_STATE_CACHE_MAX_ENTRIES": "500",
        "TIERED_STATE_METRICS": "off",
        "TIERED_STATE_INVALIDATION": "0",
        "TIERED_STATE_WARM_OPTIONS": '{"use_copy": false}',
        "TIERED_STATE_COLD_OPTIONS": None,
        "TIERED_STATE_CACHE_TTL_SECONDS": "30",
        "TIERED_STATE_CLI": "Yes",
        "TIERED_STATE_PROMOTION_WINDOW_SECONDS": "2.5",
        "TIERED_STATE_MAX_STATE_BYTES": None,
        "TIERED_STATE_WARM_URL": "",
        "TIERED_STATE_LOCAL_DIR": tmp_path,
        "TIERED_STATE_ACCESS_CONTROL": f"{__name__}:allow_all",
    }
    settings = load_settings(config)
    assert settings.cache_max_entries == 500
    assert settings.metrics is False and settings.cli is True
    assert settings.invalidation is False and settings.warm_options == {"use_copy": False}
    assert settings.cache_ttl_seconds == 30
    assert settings.promotion_window_seconds == 2.5
    assert settings.max_state_bytes is None and settings.warm_url is None
    assert settings.cold_options == {}
    assert settings.local_dir == str(tmp_path)
    assert settings.access_control is allow_all
    assert settings.to_dict()["TIERED_STATE_ACCESS_CONTROL"].endswith(":allow_all")


BAD_VALUES: list[tuple[str, Any, str]] = [
    ("OPERATION_LOG_LEVEL", "LOUD", "logging level name"),
    ("OPERATION_LOG_LEVEL", -1, "logging level name"),
    ("HOT_URL", "no url here", "redis://"),
    ("HOT_URL", None, "backend URL"),
    ("HOT_URL", 6379, "redis://"),
    ("HOT_OPTIONS", ["socket_timeout"], "dict of the backend's keyword arguments"),
    ("HOT_OPTIONS", "{not json", "JSON text"),
    ("WARM_URL", "not a url", "postgresql://"),
    ("WARM_OPTIONS", {1: 2}, "dict of the backend's keyword arguments"),
    ("COLD_URL", 5, "s3://"),
    ("COLD_OPTIONS", "[1, 2]", "dict of the backend's keyword arguments"),
    ("KEY_PREFIX", "x" * 65, "at most 64 characters"),
    ("KEY_PREFIX", "app prefix:", "at most 64 characters"),
    ("CACHE_MAX_ENTRIES", 0, "integer >= 1"),
    ("CACHE_MAX_ENTRIES", "many", "integer >= 1"),
    ("CACHE_MAX_ENTRIES", True, "integer >= 1"),
    ("CACHE_MAX_BYTES", -1, "integer >= 1"),
    ("CACHE_MAX_BYTES", 1.5, "integer >= 1"),
    ("CACHE_TTL_SECONDS", 0, "integer >= 1 or None"),
    ("CACHE_TTL_SECONDS", "5m", "integer >= 1 or None"),
    ("INVALIDATION", None, "True or False"),
    ("HOT_TTL_SECONDS", 0, "integer >= 1"),
    ("PROMOTE_AFTER_ACCESSES", None, "integer >= 1"),
    ("PROMOTION_WINDOW_SECONDS", 0, "number of seconds > 0"),
    ("PROMOTION_WINDOW_SECONDS", "soon", "number of seconds > 0"),
    ("DEMOTE_AFTER_IDLE_SECONDS", float("inf"), "number of seconds > 0"),
    ("DEMOTE_AFTER_IDLE_SECONDS", None, "number of seconds > 0"),
    ("MAX_STATE_BYTES", 0, "integer >= 1 or None"),
    ("MAX_JSON_DEPTH", 0, "integer from 1 to 256"),
    ("MAX_JSON_DEPTH", 257, "integer from 1 to 256"),
    ("MAX_REQUEST_BYTES", 0, "integer >= 1 or None"),
    ("MAX_REQUEST_BYTES", "2MB", "integer >= 1 or None"),
    ("MAX_STATES_PER_TYPE", 0, "integer >= 1 or None"),
    ("MAX_STATES_PER_TYPE", 1.5, "integer >= 1 or None"),
    ("ENCRYPTION_KEYS", ["not-a-fernet-key"], "not a Fernet key"),
    ("ENCRYPTION_KEYS", 42, "must be a list of keys"),
    ("AUDIT_KEYS", "a-key-of-25-bytes-is-short", "an audit key needs at least 32"),
    ("AUDIT_KEYS", 42, "must be a key, a list of keys"),
    ("AUDIT_KEYS", "no_such_module_xyz:keys", "cannot be imported"),
    ("METRICS", "maybe", "True or False"),
    ("METRICS", None, "True or False"),
    ("REGISTER_ERROR_HANDLERS", 2, "True or False"),
    ("API_PREFIX", "api", "URL path"),
    ("API_PREFIX", "/api/", "URL path"),
    ("DASHBOARD_PREFIX", "/dash board", "URL path"),
    ("ACCESS_CONTROL", 42, "callable hook"),
    ("ACCESS_CONTROL", "no_such_module_xyz:hook", "can be imported"),
    ("ACCESS_CONTROL", f"{__name__}:missing", "can be imported"),
    ("ACCESS_CONTROL", f"{__name__}:NOT_CALLABLE", "callable hook"),
    ("ACCESS_CONTROL", "not an import string", "module:function"),
    ("CLI", "sometimes", "True or False"),
    ("LOCAL_DIR", 3, "directory path"),
    ("BACKUP_URL", "ftp://host/backups", "'s3://bucket/prefix'"),
    ("BACKUP_URL", "s3://Bad_Bucket/x", "3-63 characters"),
    ("CREATE_TABLES", "perhaps", "True or False"),
    ("CRITICAL_KEYS", [""], "a list of globs over store keys"),
    ("CRITICAL_KEYS", {"position": "*"}, "a list of globs over store keys"),
    ("RECOVER_ON_HOT_RESTART", "sometimes", "True or False"),
    ("SLOW_OPERATION_MS", 0, "a number of milliseconds > 0, or None (off)"),
    ("SLOW_OPERATION_MS", "slow", "a number of milliseconds > 0, or None (off)"),
    ("CALL_TIMEOUT_SECONDS", float("inf"), "number of seconds > 0"),
    ("CACHE_UNSYNCED_SECONDS", 0, "number of seconds > 0"),
    ("DROP_REPLAY_SECONDS", "often", "number of seconds > 0"),
    ("EVENT_RETENTION_SECONDS", 0, "number of seconds > 0"),
    ("EVENT_RETENTION_SECONDS", None, "number of seconds > 0"),
    ("EVENT_RETENTION_SECONDS", "a week", "number of seconds > 0"),
    ("HISTORY_RETENTION", {"user": {"versions": 0}}, "an integer >= 1"),
    ("HISTORY_RETENTION", {"*": {"days": -1}}, "a number of days > 0"),
    ("HISTORY_RETENTION", {"*": {"weeks": 2}}, '"versions" (an integer >= 1)'),
    ("HISTORY_RETENTION", {"*": {}}, '"versions" (an integer >= 1)'),
    ("HISTORY_RETENTION", "keep a year", "mapping of state type names"),
    ("BACKUP_RETENTION", {"count": 1.5}, "an integer >= 1"),
    ("BACKUP_RETENTION", {"keep": 3}, '"count" (an integer >= 1)'),
    ("IDEMPOTENCY_TTL_SECONDS", -1, "number of seconds > 0"),
    ("IDEMPOTENCY_TTL_SECONDS", float("nan"), "number of seconds > 0"),
    ("IDEMPOTENCY_TTL_SECONDS", True, "number of seconds > 0"),
    ("RATE_LIMIT", "sometimes", "True or False"),
    ("RATE_LIMIT_READS", "many", "a rate limit such as '300 per minute'"),
    ("RATE_LIMIT_WRITES", 60, "a rate limit such as '300 per minute'"),
    ("RATE_LIMIT_ROUTES", {"Not an action": "1/second"}, "a dict of route action"),
    ("RATE_LIMIT_ROUTES", {"health": "often"}, "not 'often' for 'health'"),
    ("RATE_LIMIT_STORAGE_URL", "redis", "a rate-limit storage URL"),
]


#: Settings holding keys: their errors never quote the value.
SECRET_SETTINGS = {"ENCRYPTION_KEYS", "AUDIT_KEYS"}


@pytest.mark.parametrize(("name", "value", "expected"), BAD_VALUES)
def test_a_bad_value_fails_init_app_naming_key_value_and_expectation(
    make_app: AppFactory, name: str, value: Any, expected: str
) -> None:
    key = "TIERED_STATE_" + name
    with pytest.raises(ConfigurationError) as caught:
        make_app(**{key: value})
    message = str(caught.value)
    if name in SECRET_SETTINGS:  # named, never quoted
        assert message.startswith(f"{key}") and repr(value) not in message
        assert "value" not in caught.value.details
    else:
        assert message.startswith(f"{key} is {value!r}; expected ")
    assert expected in message
    assert caught.value.details["key"] == key


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"TIERED_STATE_HOT_URL": "http://cache:6379"}, ["No backend serves http://", "redis://"]),
        ({"TIERED_STATE_HOT_URL": "memory://x"}, ["TIERED_STATE_HOT_URL", "'memory://' alone"]),
        ({"TIERED_STATE_HOT_OPTIONS": {"colour": 1}}, ["'colour'", "default_ttl_seconds"]),
        ({"TIERED_STATE_WARM_URL": "mysql://db/x"}, ["No backend serves mysql://"]),
        ({"TIERED_STATE_WARM_OPTIONS": {"use_cpy": False}}, ["'use_cpy'", "use_copy"]),
        ({"TIERED_STATE_COLD_URL": "s3://Bad_Bucket/x"}, ["'Bad_Bucket'", "3-63"]),
        ({"TIERED_STATE_COLD_URL": "s3://b-1/?storage_class=GLACIER"}, ["GLACIER", "restores"]),
        ({"TIERED_STATE_COLD_URL": "s3://b-1/?colour=red"}, ["colour", "endpoint_url"]),
        ({"TIERED_STATE_COLD_OPTIONS": {"fsync": "yes", "x": 1}}, ["'x'", "fsync"]),
    ],
)
def test_backend_urls_and_options_are_checked_at_init_app(
    make_app: AppFactory, config: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make_app(**config)
    for word in words:
        assert word in str(caught.value)


def test_the_settings_of_earlier_versions_name_what_replaced_them(make_app: AppFactory) -> None:
    app = make_app(
        init=False,
        TIERED_STATE_REDIS_URL="redis://cache:6379/0",
        TIERED_STATE_S3_BUCKET="archive",
        TIERED_STATE_S3_PREFIX="cold/",
        TIERED_STATE_S3_ENDPOINT_URL="http://minio:9000",
        TIERED_STATE_SQL_USE_COPY=False,
    )
    with pytest.raises(ConfigurationError) as caught:
        TieredState(app)
    message = str(caught.value)
    assert "TIERED_STATE_REDIS_URL: write TIERED_STATE_HOT_URL = the same redis:// URL" in message
    assert (
        "write TIERED_STATE_COLD_URL = 's3://archive/cold/?endpoint_url=http://minio:9000'"
        in message
    )
    assert 'TIERED_STATE_SQL_USE_COPY: write TIERED_STATE_WARM_OPTIONS = {"use_copy": false}' in (
        message
    )
    assert caught.value.details["retired"] == [
        "TIERED_STATE_REDIS_URL",
        "TIERED_STATE_S3_BUCKET",
        "TIERED_STATE_S3_ENDPOINT_URL",
        "TIERED_STATE_S3_PREFIX",
        "TIERED_STATE_SQL_USE_COPY",
    ]


def test_every_key_has_a_bad_value_test() -> None:
    tested = {name for name, _, _ in BAD_VALUES}
    assert tested == {s.name for s in SETTINGS}


def test_api_and_dashboard_prefixes_must_differ(make_app: AppFactory) -> None:
    with pytest.raises(ConfigurationError, match="TIERED_STATE_DASHBOARD_PREFIX is '/x'"):
        make_app(TIERED_STATE_API_PREFIX="/x", TIERED_STATE_DASHBOARD_PREFIX="/x")


def test_a_failed_init_app_leaves_the_app_unregistered(make_app: AppFactory) -> None:
    app = make_app(init=False, TIERED_STATE_HOT_TTL_SECONDS=-5)
    with pytest.raises(ConfigurationError):
        TieredState(app)
    assert "tiered_state" not in app.extensions
    app.config["TIERED_STATE_HOT_TTL_SECONDS"] = 5
    TieredState(app)
    assert get_app_state(app).settings.hot_ttl_seconds == 5


def test_cache_ttl_none_keeps_entries_until_evicted() -> None:
    settings = load_settings({"TIERED_STATE_CACHE_TTL_SECONDS": None})
    assert settings.cache_ttl_seconds is None
    defaults = load_settings({})
    assert (defaults.cache_ttl_seconds, defaults.invalidation, defaults.hot_url) == (
        300,
        True,
        "memory://",
    )


def test_a_misspelt_key_fails_init_app_with_the_closest_known_one(make_app: AppFactory) -> None:
    app = make_app(init=False, TIERED_STATE_HOT_ULR="redis://cache:6379/0")
    with pytest.raises(ConfigurationError) as caught:
        TieredState(app)
    message = str(caught.value)
    assert message.startswith(
        "Unknown setting(s) in app.config: TIERED_STATE_HOT_ULR "
        "(did you mean TIERED_STATE_HOT_URL?)."
    )
    assert "docs/configuration.rst" in message and "settings.SETTINGS" in message
    assert caught.value.details == {
        "key": "TIERED_STATE_HOT_ULR",
        "unknown": ["TIERED_STATE_HOT_ULR"],
        "suggestions": {"TIERED_STATE_HOT_ULR": "TIERED_STATE_HOT_URL"},
    }
    assert "tiered_state" not in app.extensions
    assert "TIERED_STATE_HOT_URL" not in app.config  # nothing written before the check
    del app.config["TIERED_STATE_HOT_ULR"]
    TieredState(app)


def test_every_unknown_key_is_named_with_a_suggestion_where_one_is_close(
    make_app: AppFactory,
) -> None:
    config = {
        "TIERED_STATE_CACHE_TTL": 60,
        "tiered_state_hot_ttl_seconds": 60,
        "TIERED_STATE_XYZZY": 1,
        "CACHE_TTL": 60,  # not ours: no prefix
        "REDIS_URL": "redis://elsewhere",
    }
    with pytest.raises(ConfigurationError) as caught:
        make_app(**config)
    message = str(caught.value)
    assert "TIERED_STATE_CACHE_TTL (did you mean TIERED_STATE_CACHE_TTL_SECONDS?)" in message
    assert "tiered_state_hot_ttl_seconds (did you mean TIERED_STATE_HOT_TTL_SECONDS?)" in message
    assert "; TIERED_STATE_XYZZY; " in message and "XYZZY (did you mean" not in message
    assert "'CACHE_TTL'" not in message and "REDIS_URL;" not in message
    assert caught.value.details["unknown"] == [
        "TIERED_STATE_CACHE_TTL",
        "TIERED_STATE_XYZZY",
        "tiered_state_hot_ttl_seconds",
    ]


def test_a_misspelt_option_suggests_the_closest_known_one() -> None:
    with pytest.raises(ConfigurationError, match=r"api_prefx \(did you mean api_prefix\?\)"):
        TieredState(api_prefx="/api")


def test_the_idempotency_ttl_is_how_long_the_apps_manager_remembers_a_key(
    make_app: AppFactory,
) -> None:
    app = make_app(TIERED_STATE_IDEMPOTENCY_TTL_SECONDS="0.5")
    manager = get_app_state(app).manager
    assert manager.idempotency.ttl == 0.5
    manager.register_state("u1", "user", {"data": {"plan": "free"}})
    manager.update_state("u1", {"data": {"plan": "pro"}}, idempotency_key="k-1")
    with pytest.raises(IdempotencyKeyReusedError):
        manager.update_state("u1", {"data": {"plan": "team"}}, idempotency_key="k-1")
    time.sleep(0.6)
    record = manager.update_state("u1", {"data": {"plan": "team"}}, idempotency_key="k-1")
    assert record["version"] == 3 and record["data"] == {"plan": "team"}
    assert get_app_state(make_app()).manager.idempotency.ttl == 86400.0


def test_the_default_manager_takes_the_idempotency_ttl_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERED_STATE_LOCAL_DIR", str(tmp_path))
    monkeypatch.setenv("TIERED_STATE_IDEMPOTENCY_TTL_SECONDS", "3600")
    manager = default_manager({})
    try:
        assert manager.idempotency.ttl == 3600.0
    finally:
        manager.close()
    monkeypatch.setenv("TIERED_STATE_IDEMPOTENCY_TTL_SECONDS", "0")
    # the variable's text is read as its setting reads text: "0" is the number 0.0
    with pytest.raises(ConfigurationError, match=r"TIERED_STATE_IDEMPOTENCY_TTL_SECONDS is 0\.0;"):
        default_manager({})


def test_the_default_manager_refuses_a_misspelt_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERED_STATE_LOCAL_DIR", str(tmp_path))
    monkeypatch.setenv("TIERED_STATE_HOT_ULR", "redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigurationError, match=r"TIERED_STATE_HOT_ULR.*TIERED_STATE_HOT_URL"):
        default_manager({})

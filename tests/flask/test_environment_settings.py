"""Settings from the environment: one spelling (the key itself), read as text by
``config_from_environment``; a variable that looks like a setting but is none is refused
with the setting it may mean, like an unknown key of ``app.config``."""

from __future__ import annotations

import pytest

from flask_tiered_state.errors import ConfigurationError
from flask_tiered_state.extension import get_app_state
from flask_tiered_state.settings import config_from_environment

from .conftest import AppFactory


def refusal(environ: dict[str, str]) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        config_from_environment(environ)
    return caught.value


def test_the_settings_are_read_as_text_and_other_variables_are_left_out() -> None:
    environ = {
        "TIERED_STATE_HOT_URL": "redis://127.0.0.1:6379/0",
        "TIERED_STATE_CACHE_MAX_ENTRIES": "50",
        "PATH": "/usr/bin",
        "FLASK_APP": "example_app:create_app",
        "TIERED_STATE_REQUIRE_SERVICES": "1",  # the test suite's own variables
        "TIERED_STATE_TEST_REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    assert config_from_environment(environ) == {
        "TIERED_STATE_HOT_URL": "redis://127.0.0.1:6379/0",
        "TIERED_STATE_CACHE_MAX_ENTRIES": "50",
    }


@pytest.mark.redis
def test_text_values_give_typed_settings_and_the_app_uses_them(
    make_app: AppFactory, redis_url: str, redis_prefix: str
) -> None:
    environ = {
        "TIERED_STATE_HOT_URL": redis_url,
        "TIERED_STATE_KEY_PREFIX": redis_prefix,
        "TIERED_STATE_CACHE_MAX_ENTRIES": "50",
        "TIERED_STATE_CACHE_TTL_SECONDS": "none",
        "TIERED_STATE_INVALIDATION": "off",
        "TIERED_STATE_HOT_OPTIONS": '{"socket_timeout": 2.5}',
    }
    app = make_app(**config_from_environment(environ))
    settings = get_app_state(app).settings
    assert settings.cache_max_entries == 50
    assert settings.cache_ttl_seconds is None
    assert settings.invalidation is False
    assert settings.hot_options == {"socket_timeout": 2.5}
    with app.app_context():
        manager = get_app_state(app).manager
        manager.register_state("alice", "user")
        assert manager.get_repositories().hot.backend == "redis"


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("TIERED_STATE_REDIS_ULR", "TIERED_STATE_HOT_URL"),  # a typo of a retired key
        ("FLASK_TIERED_STATE_REDIS_URL", "TIERED_STATE_HOT_URL"),  # the old docs' spelling
        ("FLASK_TIERED_STATE_HOT_URL", "TIERED_STATE_HOT_URL"),
        ("TIERED_STATE_HOT_ULR", "TIERED_STATE_HOT_URL"),
        ("TIERED_STATE_CACHE_MAX_ENTRY", "TIERED_STATE_CACHE_MAX_ENTRIES"),
        ("tiered_state_warm_url", "TIERED_STATE_WARM_URL"),
    ],
)
def test_a_misspelt_variable_is_refused_with_the_setting_it_may_mean(
    variable: str, meant: str
) -> None:
    error = refusal({variable: "redis://127.0.0.1:6379/0", "TIERED_STATE_METRICS": "true"})
    assert f"{variable} (did you mean {meant}?)" in error.message
    assert error.details["key"] == variable
    assert error.details["suggestions"] == {variable: meant}
    assert "\n" not in error.message


def test_an_unrelated_variable_under_the_prefix_is_refused_too() -> None:
    error = refusal({"TIERED_STATE_ZZZ": "1", "TIERED_STATE_QQQ": "2"})
    assert error.message.startswith(
        "Unknown environment variable(s): TIERED_STATE_QQQ; TIERED_STATE_ZZZ."
    )
    assert error.details["unknown"] == ["TIERED_STATE_QQQ", "TIERED_STATE_ZZZ"]

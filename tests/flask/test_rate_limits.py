"""Rate limits of the REST API and the dashboard (issue 13, finding 3: "no rate limit").

Flask-Limiter (the ``ratelimit`` extra) counts the requests of each client per route:
the actor the access-control hook names, else the remote address. Past the limit a
route answers 429 with ``Retry-After``, in the blueprint's error format. Counters in
memory, and in the real Redis shared by two apps (two workers).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, cast

import pytest
from flask import Blueprint, Flask, Request
from flask.testing import FlaskClient
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from flask_tiered_state import ratelimit
from flask_tiered_state.errors import ConfigurationError
from flask_tiered_state.extension import TieredState
from tests.conftest import free_port
from tests.flask.conftest import AppFactory

TOKENS = {"alice-token": "alice", "bob-token": "bob"}


def token_hook(request: Request, action: str) -> str | bool:
    """Allow a known token (naming its actor), deny everything else."""
    return TOKENS.get(request.headers.get("X-Token", ""), False)


def limited_app(make_app: AppFactory, **config: Any) -> Flask:
    settings = {f"TIERED_STATE_{name}": value for name, value in config.items()}
    return make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_RATE_LIMIT=True, **settings)


def served_app(make_app: AppFactory, **config: Any) -> Flask:
    """An app that is not ``TESTING``, as in production."""
    app = make_app(init=False, **config)
    app.config["TESTING"] = False
    TieredState(app)
    return app


def new_state(client: FlaskClient, number: int, **kwargs: Any) -> Any:
    body = {"state_id": f"rl-{number}", "type": "user", "data": {"plan": "free"}}
    return client.post("/api/states", json=body, **kwargs)


def assert_rate_limited(response: Any, *, limit: str, setting: str, window: int = 60) -> int:
    """A 429 in the JSON error format with ``Retry-After``; its seconds."""
    assert response.status_code == 429, response.get_data(as_text=True)
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= window
    body = response.get_json()
    assert body["error"] == "rate_limited"
    assert limit in body["message"] and setting in body["message"], body["message"]
    assert f"Retry in {retry_after} seconds" in body["message"]
    assert body["details"] == {"retry_after": retry_after, "limit": limit}
    assert body["correlation_id"] == response.headers["X-Correlation-ID"]
    return retry_after


# --------------------------------------------------------------------------- memory


def test_a_write_over_the_limit_answers_429_with_retry_after(make_app: AppFactory) -> None:
    app = limited_app(make_app, RATE_LIMIT_WRITES="2 per minute")
    client = app.test_client()
    assert [new_state(client, n).status_code for n in (1, 2)] == [201, 201]

    assert_rate_limited(
        new_state(client, 3), limit="2 per 1 minute", setting="TIERED_STATE_RATE_LIMIT_WRITES"
    )
    # Refused before the view: nothing was stored; reads have their own budget.
    assert client.get("/api/states/rl-3").status_code == 404
    assert client.get("/api/states/rl-1").status_code == 200


def test_each_read_route_has_its_own_budget(make_app: AppFactory) -> None:
    app = limited_app(make_app, RATE_LIMIT_READS="3 per minute")
    client = app.test_client()
    assert [client.get("/api/states").status_code for _ in range(3)] == [200] * 3
    assert_rate_limited(
        client.get("/api/states"), limit="3 per 1 minute", setting="TIERED_STATE_RATE_LIMIT_READS"
    )
    assert client.get("/api/health").status_code == 200
    # HEAD is a read, counted on the same route.
    assert client.head("/api/states").status_code == 429


def test_clients_are_the_actors_the_hook_names(make_app: AppFactory) -> None:
    app = limited_app(make_app, RATE_LIMIT_READS="2 per minute", ACCESS_CONTROL=token_hook)
    client = app.test_client()  # one remote address for both actors
    alice, bob = {"X-Token": "alice-token"}, {"X-Token": "bob-token"}
    assert [client.get("/api/states", headers=alice).status_code for _ in range(2)] == [200] * 2
    assert client.get("/api/states", headers=alice).status_code == 429
    assert client.get("/api/states", headers=bob).status_code == 200


def test_without_an_actor_clients_are_their_remote_addresses(make_app: AppFactory) -> None:
    app = limited_app(make_app, RATE_LIMIT_READS="1 per minute", ACCESS_CONTROL="allow-all")
    client = app.test_client()
    first, second = {"REMOTE_ADDR": "192.0.2.1"}, {"REMOTE_ADDR": "192.0.2.2"}
    assert client.get("/api/states", environ_base=first).status_code == 200
    assert client.get("/api/states", environ_base=first).status_code == 429
    assert client.get("/api/states", environ_base=second).status_code == 200


def test_denied_requests_count_against_their_address(make_app: AppFactory) -> None:
    # Guessing tokens is rate-limited too, without spending a real actor's budget.
    app = limited_app(make_app, RATE_LIMIT_READS="2 per minute", ACCESS_CONTROL=token_hook)
    client = app.test_client()
    guesses = [client.get("/api/states", headers={"X-Token": f"guess-{n}"}) for n in range(3)]
    assert [r.status_code for r in guesses] == [403, 403, 429]
    assert guesses[2].get_json()["error"] == "rate_limited"
    assert client.get("/api/states", headers={"X-Token": "alice-token"}).status_code == 200


def test_single_routes_take_their_own_limits(make_app: AppFactory) -> None:
    app = limited_app(
        make_app,
        RATE_LIMIT_READS="2 per minute",
        RATE_LIMIT_ROUTES={"states.read": "1 per minute", "health": None},
    )
    client = app.test_client()
    assert client.get("/api/states/nobody").status_code == 404
    assert_rate_limited(
        client.get("/api/states/nobody"),
        limit="1 per 1 minute",
        setting="TIERED_STATE_RATE_LIMIT_ROUTES",
    )
    assert {client.get("/api/health").status_code for _ in range(5)} == {200}


def test_a_limit_per_second_names_a_shorter_retry(make_app: AppFactory) -> None:
    app = limited_app(make_app, RATE_LIMIT_READS="1/second;100/hour")
    client = app.test_client()
    assert client.get("/api/states").status_code == 200
    response = client.get("/api/states")
    assert_rate_limited(
        response, limit="1 per 1 second", setting="TIERED_STATE_RATE_LIMIT_READS", window=1
    )


def test_the_dashboards_actions_are_limited(make_app: AppFactory) -> None:
    app = limited_app(
        make_app,
        DASHBOARD_PREFIX="/dashboard",
        RATE_LIMIT_ROUTES={"dashboard.events.retry": "1 per minute"},
    )
    client = app.test_client()
    # The first POST spends the budget (and is refused for its missing CSRF token).
    assert client.post("/dashboard/events/retry").status_code == 403
    response = client.post("/dashboard/events/retry")
    assert response.status_code == 429
    assert response.mimetype == "text/html"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "rate_limited" in response.get_data(as_text=True)
    assert client.get("/dashboard/").status_code == 200


def test_limits_are_on_by_default_but_in_testing(make_app: AppFactory) -> None:
    testing = make_app(TIERED_STATE_API_PREFIX="/api")
    assert ratelimit.get_limiter(testing) is None
    assert {testing.test_client().get("/api/nothing").status_code for _ in range(301)} == {404}

    served = served_app(
        make_app, TIERED_STATE_API_PREFIX="/api", TIERED_STATE_ACCESS_CONTROL="allow-all"
    )
    assert ratelimit.get_limiter(served) is not None
    client = served.test_client()
    assert {client.get("/api/nothing").status_code for _ in range(300)} == {404}
    assert_rate_limited(
        client.get("/api/nothing"),
        limit="300 per 1 minute",
        setting="TIERED_STATE_RATE_LIMIT_READS",
    )


def test_rate_limit_false_turns_them_off(make_app: AppFactory) -> None:
    app = served_app(
        make_app,
        TIERED_STATE_API_PREFIX="/api",
        TIERED_STATE_ACCESS_CONTROL="allow-all",
        TIERED_STATE_RATE_LIMIT=False,
        TIERED_STATE_RATE_LIMIT_READS="1 per minute",
    )
    assert ratelimit.get_limiter(app) is None
    assert {app.test_client().get("/api/states").status_code for _ in range(3)} == {200}


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("RATE_LIMIT_READS", "lots", "a rate limit such as '300 per minute'"),
        ("RATE_LIMIT_WRITES", 60, "a rate limit such as '300 per minute'"),
        ("RATE_LIMIT_ROUTES", {"states.delete": "1/second"}, "'states.delete', which is no"),
        # The dashboard's actions count when the dashboard is mounted (not here).
        ("RATE_LIMIT_ROUTES", {"dashboard.events.retry": "1/second"}, "no action of the"),
        ("RATE_LIMIT_ROUTES", {"health": "often"}, "not 'often' for 'health'"),
        ("RATE_LIMIT_ROUTES", ["health"], "a dict of route action"),
        ("RATE_LIMIT_ROUTES", "{not json", "a dict of route action"),
        ("RATE_LIMIT_STORAGE_URL", "redis", "a rate-limit storage URL"),
        ("RATE_LIMIT_STORAGE_URL", "nosuch://host", "its scheme one of memcached, memory"),
        ("RATE_LIMIT_STORAGE_URL", "async+memory://", "no 'async+'"),
        # pymemcache is in no extra: refused when the storage is built, at init_app
        ("RATE_LIMIT_STORAGE_URL", "memcached://cache:11211", "the limits library refuses"),
    ],
)
def test_bad_settings_are_refused_at_init_app(
    make_app: AppFactory, name: str, value: object, expected: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        limited_app(make_app, **{name: value})
    assert f"TIERED_STATE_{name}" in info.value.message
    assert expected in info.value.message


def test_settings_from_the_environment_are_read(make_app: AppFactory) -> None:
    app = limited_app(make_app, RATE_LIMIT_READS="", RATE_LIMIT_ROUTES='{"health": "1/minute"}')
    assert {app.test_client().get("/api/states").status_code for _ in range(5)} == {200}
    assert [app.test_client().get("/api/health").status_code for _ in range(2)] == [200, 429]


@pytest.fixture
def without_flask_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Imports of Flask-Limiter fail, as on an install without the extra."""
    monkeypatch.setitem(sys.modules, "flask_limiter", None)
    assert not ratelimit.available()


@pytest.mark.parametrize(
    ("name", "value"),
    [("RATE_LIMIT", True), ("RATE_LIMIT_WRITES", "5 per minute"),
     ("RATE_LIMIT_STORAGE_URL", "redis://127.0.0.1:6379/0")],
)  # fmt: skip
@pytest.mark.usefixtures("without_flask_limiter")
def test_limits_asked_for_without_the_extra_are_refused(
    make_app: AppFactory, name: str, value: object
) -> None:
    with pytest.raises(ConfigurationError) as info:
        make_app(TIERED_STATE_API_PREFIX="/api", **{f"TIERED_STATE_{name}": value})
    assert f"TIERED_STATE_{name}" in info.value.message
    assert "flask-tiered-state[ratelimit]" in info.value.message


@pytest.mark.usefixtures("without_flask_limiter")
def test_without_the_extra_the_default_warns_and_false_is_quiet(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    served = {"TIERED_STATE_API_PREFIX": "/api", "TIERED_STATE_ACCESS_CONTROL": "allow-all"}
    with caplog.at_level(logging.WARNING, "flask_tiered_state.ratelimit"):
        app = served_app(make_app, **served)
    assert ratelimit.get_limiter(app) is None
    assert "has no rate limits" in caplog.text and "flask-tiered-state[ratelimit]" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "flask_tiered_state.ratelimit"):
        served_app(
            make_app,
            TIERED_STATE_RATE_LIMIT=False,
            TIERED_STATE_RATE_LIMIT_WRITES="1 per minute",
            **served,
        )
    assert caplog.text == ""


# --------------------------------------------------------------------------- the app's own


def test_the_apps_own_limiter_and_limits_are_left_alone(make_app: AppFactory) -> None:
    app = make_app(
        init=False,
        TIERED_STATE_API_PREFIX="/api",
        TIERED_STATE_RATE_LIMIT=True,
        TIERED_STATE_RATE_LIMIT_READS="3 per minute",
        RATELIMIT_DEFAULT="1 per minute",  # the app's own Limiter's default
        RATELIMIT_APPLICATION="2 per minute",
    )
    own = Limiter(get_remote_address, app=app, storage_uri="memory://")

    @app.get("/work")
    def work() -> str:
        return "ok"

    TieredState(app)
    own.exempt(cast(Blueprint, app.blueprints["tiered_state_api"]))
    ours = ratelimit.get_limiter(app)
    assert ours is not None and app.extensions["limiter"] == {own, ours}
    client = app.test_client()
    # The app's route: its own limits only (ours would not refuse the 2nd request).
    assert [client.get("/work").status_code for _ in range(2)] == [200, 429]
    # Our routes: our limits only, not the app's RATELIMIT_DEFAULT / _APPLICATION.
    assert [client.get("/api/states").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_a_429_of_the_apps_own_limiter_on_our_routes_is_json(make_app: AppFactory) -> None:
    app = make_app(
        init=False, TIERED_STATE_API_PREFIX="/api", TIERED_STATE_RATE_LIMIT=True,
        TIERED_STATE_RATE_LIMIT_READS=None,
    )  # fmt: skip
    Limiter(get_remote_address, app=app, storage_uri="memory://", default_limits=["1/minute"])
    TieredState(app)
    client = app.test_client()
    assert client.get("/api/states").status_code == 200
    assert_rate_limited(
        client.get("/api/states"), limit="1 per 1 minute", setting="the app's own rate limits"
    )


def test_ratelimit_enabled_is_not_written_into_the_apps_config(make_app: AppFactory) -> None:
    app = limited_app(make_app)
    assert "RATELIMIT_ENABLED" not in app.config
    # So an own Limiter the app creates later, disabled, stays disabled.
    own = Limiter(get_remote_address, storage_uri="memory://", enabled=False)
    own.init_app(app)
    assert own.enabled is False


# --------------------------------------------------------------------------- Redis


@pytest.mark.redis
def test_workers_sharing_redis_share_the_counts(
    make_app: AppFactory, redis_url: str, redis_prefix: str
) -> None:
    shared = {
        "RATE_LIMIT_WRITES": "3 per minute",
        "RATE_LIMIT_STORAGE_URL": redis_url,
        "KEY_PREFIX": redis_prefix,
    }
    first = limited_app(make_app, **shared).test_client()
    second = limited_app(make_app, **shared).test_client()
    assert [new_state(first, 1).status_code, new_state(first, 2).status_code] == [201, 201]
    assert new_state(second, 3).status_code == 201
    assert_rate_limited(
        new_state(second, 4), limit="3 per 1 minute", setting="TIERED_STATE_RATE_LIMIT_WRITES"
    )
    assert new_state(first, 5).status_code == 429
    # Another app (its own key prefix) on the same Redis counts apart.
    other = limited_app(make_app, **{**shared, "KEY_PREFIX": redis_prefix + "other:"})
    assert new_state(other.test_client(), 6).status_code == 201

    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"*{redis_prefix}ratelimit*"))
        assert keys
        client.delete(*keys)
    finally:
        client.close()


def test_an_unreachable_storage_falls_back_to_memory(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = limited_app(make_app, RATE_LIMIT_WRITES="2 per minute", RATE_LIMIT_STORAGE_URL=url)
    client = app.test_client()
    statuses = [new_state(client, n).status_code for n in range(3)]
    assert statuses == [201, 201, 429]
    assert "falling back to in-memory storage" in caplog.text

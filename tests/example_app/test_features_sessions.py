"""Feature flags (rollout percentage, deterministic buckets) and login sessions (HOT, TTL)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app import create_app
from example_app.core import bucket_of, feature_id
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import get_app_state

from .conftest import active_user, admin_client, error, ok


def evaluate(client: FlaskClient, key: str, user_id: str) -> dict[str, Any]:
    return ok(client.get(f"/api/features/{key}/evaluate?user_id={user_id}"))


def test_a_rollout_is_deterministic_and_only_grows(
    client: FlaskClient, manager: StateManager
) -> None:
    flag = {"key": "new-checkout", "description": "One-page checkout", "rollout_percentage": 30}
    created = ok(client.post("/api/features", json=flag), 201)
    assert created["status"] == "created"
    users = [f"usr-{n:016x}" for n in range(200)]
    assert not any(evaluate(client, "new-checkout", u)["enabled"] for u in users[:20])

    ok(client.post("/api/features/new-checkout/enable", json={}))
    hot = manager.get_repositories().hot.fetch("state:" + feature_id("new-checkout"))
    assert hot is not None, "enabling a flag promotes it to HOT"
    at_30 = {u for u in users if evaluate(client, "new-checkout", u)["enabled"]}
    assert at_30 == {u for u in users if bucket_of("new-checkout", u) < 30}
    assert 30 < len(at_30) < 90  # about 30 % of 200
    assert at_30 == {u for u in users if evaluate(client, "new-checkout", u)["enabled"]}

    ok(client.post("/api/features/new-checkout/rollout", json={"rollout_percentage": 60}))
    at_60 = {u for u in users if evaluate(client, "new-checkout", u)["enabled"]}
    assert at_30 < at_60

    ok(client.post("/api/features/new-checkout/disable", json={}))
    assert not any(evaluate(client, "new-checkout", u)["enabled"] for u in users)
    resumed = ok(client.post("/api/features/new-checkout/enable", json={}))
    assert resumed["status"] == "active" and resumed["data"]["rollout_percentage"] == 60
    assert [f["data"]["key"] for f in ok(client.get("/api/features"))["items"]] == ["new-checkout"]


def test_a_users_flags(client: FlaskClient) -> None:
    user_id = active_user(client)["state_id"]
    for key, percentage in (("everyone", 100), ("nobody", 0)):
        body = {"key": key, "description": key, "rollout_percentage": percentage}
        ok(client.post("/api/features", json=body), 201)
        ok(client.post(f"/api/features/{key}/enable", json={}))
    flags = {
        f["feature"]: f["enabled"]
        for f in ok(client.get(f"/api/users/{user_id}/features"))["items"]
    }
    assert flags == {"everyone": True, "nobody": False}


def test_feature_input_is_checked(client: FlaskClient) -> None:
    bad = {"key": "Bad Key!", "description": "", "rollout_percentage": 101}
    errors = error(client.post("/api/features", json=bad), 422, "validation_error")["details"]
    assert set(errors["errors"]) == {"key", "description", "rollout_percentage"}
    error(client.get("/api/features/missing/evaluate?user_id=usr-1"), 404, "not_found")
    ok(client.post("/api/features", json={"key": "ok-flag", "description": "d"}), 201)
    error(client.get("/api/features/ok-flag/evaluate"), 400, "invalid_request")
    error(client.get("/api/features/ok-flag/evaluate?user_id=a%20b"), 400, "invalid_request")
    # a flag can be disabled before it was ever enabled; not twice
    assert ok(client.post("/api/features/ok-flag/disable", json={}))["status"] == "suspended"
    error(client.post("/api/features/ok-flag/disable", json={}), 409, "invalid_transition")
    error(
        client.post("/api/features/ok-flag/rollout", json={"rollout_percentage": "50"}),
        422,
        "validation_error",
    )


def test_login_sessions_live_in_the_hot_tier(client: FlaskClient, manager: StateManager) -> None:
    user = active_user(client)
    session = ok(client.post("/api/sessions", json={"email": "ada@example.com"}), 201)
    session_id = session["state_id"]
    assert session["type"] == "session" and session["expires_in"] == 1800
    assert session["data"]["user_id"] == user["state_id"]
    repositories = manager.get_repositories()
    hot = repositories.hot.fetch("state:" + session_id)
    assert hot is not None and repositories.warm.fetch("state:" + session_id) is None
    assert repositories.hot.fetch("state:" + user["state_id"]) is not None  # promoted

    assert ok(client.get(f"/api/sessions/{session_id}"))["state_id"] == session_id
    assert ok(client.delete(f"/api/sessions/{session_id}"))["logged_out"] is True
    error(client.get(f"/api/sessions/{session_id}"), 404, "not_found")
    error(client.post("/api/sessions", json={"email": "nobody@example.com"}), 404, "not_found")
    error(client.post("/api/sessions", json={"email": "nope"}), 422, "validation_error")


@pytest.fixture
def short_sessions(backend_config: dict[str, Any]) -> Any:
    app: Flask = create_app({**backend_config, "CREDIT_SESSION_TTL_SECONDS": "1"})
    yield app
    get_app_state(app).close()


def test_a_session_expires_with_its_ttl(short_sessions: Flask) -> None:
    client = admin_client(short_sessions)
    active_user(client)
    session = ok(client.post("/api/sessions", json={"email": "ada@example.com"}), 201)
    assert session["expires_in"] == 1
    ok(client.get(f"/api/sessions/{session['state_id']}"))
    time.sleep(1.3)
    error(client.get(f"/api/sessions/{session['state_id']}"), 404, "not_found")

"""Done means: an app with ``TieredState(app)`` and no configuration works end to end
over HTTP and the CLI, and the same tests pass with the app pointed at Redis,
PostgreSQL and S3 (moto server) by configuration alone."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask

from flask_tiered_state.extension import get_app_state

from .conftest import BOTH_BACKENDS, register

pytestmark = BOTH_BACKENDS


def cli_json(app: Flask, *args: str) -> Any:
    result = app.test_cli_runner().invoke(args=["state", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_backends_are_the_configured_ones(app: Flask) -> None:
    backends = [r.backend for r in get_app_state(app).manager.get_repositories()]
    services = app.config["TIERED_STATE_HOT_URL"] != "memory://"
    assert backends == (
        ["redis", "postgresql", "s3"] if services else ["memory", "sqlite", "filesystem"]
    )


def test_register_transition_history_over_http_and_cli(app: Flask) -> None:
    client = app.test_client()
    register(client, "alice", data={"plan": "free", "email": "a@example.com"})
    response = client.post(
        "/api/states/alice/transitions",
        json={"transition": "ACTIVATE", "reason": "email verified"},
        headers={"X-Correlation-ID": "signup-1"},
    )
    assert response.status_code == 200 and response.get_json()["status"] == "active"

    suspended = cli_json(app, "transition", "alice", "suspend", "--reason", "payment failed")
    assert suspended["status"] == "suspended"
    resumed = client.post("/api/states/alice/transitions", json={"transition": "resume"})
    assert resumed.get_json()["version"] == 4

    http_rows = client.get("/api/states/alice/history").get_json()["items"]
    cli_rows = cli_json(app, "history", "alice")["items"]
    assert http_rows == cli_rows
    assert [(r["transition"], r["to_status"]) for r in http_rows] == [
        ("create", "created"), ("activate", "active"), ("suspend", "suspended"),
        ("resume", "active"),
    ]  # fmt: skip
    assert http_rows[1]["correlation_id"] == "signup-1"
    assert http_rows[2]["reason"] == "payment failed"
    assert cli_json(app, "show", "alice") == client.get("/api/states/alice").get_json()


def test_search_paging_diff_and_rollback(app: Flask) -> None:
    client = app.test_client()
    for number in range(7):
        register(client, f"user-{number}", data={"plan": "pro" if number < 3 else "free"})
    page = client.get("/api/states?type=user&data.plan=pro&per_page=2").get_json()
    assert page["total"] == 3 and page["pages"] == 2
    listed = cli_json(app, "list", "--type", "user", "--filter", "data.plan=pro")
    assert listed["total"] == 3

    client.post("/api/states/user-0/transitions",
                json={"transition": "update", "data": {"plan": "team"}})  # fmt: skip
    diff = client.get("/api/states/user-0/diff?from=1&to=2").get_json()
    assert diff["changed"] == {"data.plan": {"from": "pro", "to": "team"}}
    rolled = client.post("/api/states/user-0/rollback", json={"to_version": 1})
    assert rolled.get_json()["data"] == {"plan": "pro"}


def test_tiers_promote_demote_and_sessions(app: Flask) -> None:
    client = app.test_client()
    register(client, "bob")
    register(client, "sess-1", "session", data={"user": "bob"})
    assert cli_json(app, "promote", "bob")["moved"] == ["bob"]
    assert cli_json(app, "demote", "bob")["moved"] == ["bob"]
    repositories = get_app_state(app).manager.get_repositories()
    assert repositories.cold.fetch("state:bob") is not None
    assert repositories.hot.fetch("state:sess-1") is not None  # HOT home, with a TTL
    archived = client.post("/api/states/bob/transitions", json={"transition": "activate"})
    assert archived.status_code == 200 and archived.get_json()["status"] == "active"
    assert client.get("/api/states/sess-1").get_json()["data"] == {"user": "bob"}
    assert sorted(cli_json(app, "keys", "*")) == ["bob", "sess-1"]
    health = client.get("/api/health").get_json()
    assert health["status"] == "healthy"
    assert cli_json(app, "health")["status"] == "healthy"

"""The demo's operations: seed-demo, archiving to COLD (endpoint and command), `/`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app import create_app
from example_app.config import from_environment
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import ConfigurationError
from flask_tiered_state.extension import get_app_state
from tests.conftest import services_config

from .conftest import admin_client, error, ok

SMALL = ["--users", "25", "--transactions", "150"]


def seed(app: Flask, *args: str) -> dict[str, Any]:
    result = app.test_cli_runner().invoke(args=["seed-demo", *SMALL, "--json", *args])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_seeding_is_realistic_and_idempotent(credit_app: Flask, manager: StateManager) -> None:
    first = seed(credit_app)
    assert first["created"]["user"] == 25 and first["created"]["transaction"] == 150
    assert first["created"]["feature"] == 6 and first["created"]["subscription"] > 5
    assert first["transitioned"]["transaction"] == 150  # every payment settled or failed
    users = manager.search_states("user", None, per_page=1).total
    payments = manager.search_states("transaction", {"status": "active"}, per_page=1).total
    failed = manager.search_states("transaction", {"status": "expired"}, per_page=1).total
    assert users == 25 and payments + failed == 150 and failed > 0
    assert manager.search_states("subscription", {"status": "active"}, per_page=1).total > 0
    active = manager.search_states("user", {"status": "active"}).items
    assert active and all(u["data"]["verified_at"] for u in active)

    again = seed(credit_app)
    assert set(again["created"].values()) == {0} and set(again["transitioned"].values()) == {0}
    assert manager.search_states("user", None, per_page=1).total == 25


def test_seed_shows_progress_and_a_summary(credit_app: Flask) -> None:
    result = credit_app.test_cli_runner().invoke(
        args=["seed-demo", "--users", "5", "--transactions", "20"]
    )
    assert result.exit_code == 0, result.output
    assert "Creating users" in result.output
    assert "created 6 features, 5 users" in result.output
    bad = credit_app.test_cli_runner().invoke(args=["seed-demo", "--users", "0"])
    assert bad.exit_code == 2 and "--users" in bad.output


def test_archiving_old_failed_payments(credit_app: Flask, manager: StateManager) -> None:
    seed(credit_app)
    client = admin_client(credit_app)
    runner = credit_app.test_cli_runner()
    dry = runner.invoke(
        args=["archive-transactions", "--older-than-days", "0", "--dry-run", "--json"]
    )
    candidates = json.loads(dry.stdout)["candidates"]
    expired = manager.search_states("transaction", {"status": "expired"}, per_page=1).total
    assert candidates == expired > 0

    some = ok(
        client.post("/api/admin/archive-transactions", json={"older_than_days": 0, "limit": 2})
    )
    assert some["archived"] == 2 and len(some["ids"]) == 2
    rest = runner.invoke(args=["archive-transactions", "--older-than-days", "0", "--json"])
    assert rest.exit_code == 0, rest.output
    assert json.loads(rest.stdout)["archived"] == candidates - 2

    archived = some["ids"][0]
    cold = manager.get_repositories().cold.fetch("state:" + archived)
    assert cold is not None and manager.get_repositories().warm.fetch("state:" + archived) is None
    assert ok(client.get(f"/api/payments/{archived}"))["status"] == "expired"
    assert manager.search_states("transaction", {"status": "expired"}, per_page=1).total == 0
    assert ok(client.post("/api/admin/archive-transactions", json={}))["archived"] == 0
    error(
        client.post("/api/admin/archive-transactions", json={"older_than_days": -1}),
        422,
        "validation_error",
    )
    human = runner.invoke(args=["archive-transactions"])
    assert human.exit_code == 0 and "Archived 0 of 0" in human.output


def test_the_overview_page_links_every_flow(credit_app: Flask, client: FlaskClient) -> None:
    seed(credit_app)
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for link in (
        'href="/dashboard/"',
        'href="/api/state/openapi.json"',
        "/api/users?status=active",
        "/api/payments?status=expired",
        "/api/plans",
        "/api/features",
        "/api/sessions",
        "archive-transactions",
        'href="/dashboard/states/usr-',
    ):
        assert link in html, link
    assert client.get("/dashboard/").status_code == 200
    assert client.get("/api/state/health").get_json()["status"] == "healthy"


def test_configuration_comes_from_the_environment(tmp_path: Any) -> None:
    environ = {
        "TIERED_STATE_HOT_URL": "redis://cache:6379/0",
        "CREDIT_SESSION_TTL_SECONDS": "60",
        "FLASK_SECRET_KEY": "s3cret",
        "HOME": "/root",
    }
    assert from_environment(environ) == {
        "TIERED_STATE_HOT_URL": "redis://cache:6379/0",
        "CREDIT_SESSION_TTL_SECONDS": "60",
        "SECRET_KEY": "s3cret",
    }
    # A misspelt setting is refused, not ignored (it would keep the default).
    with pytest.raises(
        ConfigurationError, match=r"TIERED_STATE_HOT_ULR \(did you mean TIERED_STATE_HOT_URL\?\)"
    ):
        from_environment({**environ, "TIERED_STATE_HOT_ULR": "redis://cache:6379/0"})


def test_the_environment_selects_the_backends(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("TIERED_STATE_LOCAL_DIR", str(tmp_path))
    monkeypatch.setenv("TIERED_STATE_DASHBOARD_PREFIX", "/ops/states")
    monkeypatch.setenv("CREDIT_SESSION_TTL_SECONDS", "90")
    app = create_app({"TESTING": True})
    try:
        assert app.extensions["credit_system"].session_ttl_seconds == 90
        assert admin_client(app).get("/ops/states/health").status_code == 200
        assert (tmp_path / "tiered_state.sqlite3").exists()
    finally:
        app.extensions["tiered_state"].close()
    monkeypatch.setenv("CREDIT_SESSION_TTL_SECONDS", "soon")
    with pytest.raises(ConfigurationError, match="CREDIT_SESSION_TTL_SECONDS"):
        create_app({"TESTING": True})


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.s3
def test_environment_variables_alone_move_the_app_onto_the_services(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    for key, value in services_config(request).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TIERED_STATE_LOCAL_DIR", str(tmp_path))  # keep ./instance untouched
    app = create_app()
    try:
        manager = get_app_state(app).manager
        assert [r.backend for r in manager.get_repositories()] == ["redis", "postgresql", "s3"]
        client = admin_client(app)
        body = {"email": "env@example.com", "full_name": "Env", "country": "NL"}
        assert client.post("/api/users", json=body).status_code == 201
        assert "HOT <code>redis://" in client.get("/").get_data(as_text=True)
    finally:
        get_app_state(app).close()

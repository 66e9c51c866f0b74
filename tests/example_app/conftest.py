"""The credit system app on both backends: the embedded defaults, and Redis +
PostgreSQL + S3 (moto server) chosen by configuration alone."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app import create_app
from example_app.config import APP_KEYS
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import get_app_state
from flask_tiered_state.settings import SETTINGS
from tests.conftest import SERVICES, services_config

#: The demo's tokens in the tests (``make run`` makes random ones in the instance folder).
TOKENS = {"admin": "admin-token-of-the-tests", "viewer": "viewer-token-of-the-tests"}
ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}
VIEWER = {"Authorization": f"Bearer {TOKENS['viewer']}"}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """create_app reads TIERED_STATE_* from the environment; tests choose their own. The
    tokens and the secret key come from the environment too, so no test writes
    ./instance/api_tokens.json or ./instance/secret_key."""
    demo_environment(monkeypatch, TOKENS)
    monkeypatch.setenv("FLASK_SECRET_KEY", "secret-key-of-the-example-app-tests-0123456789")


def demo_environment(monkeypatch: pytest.MonkeyPatch, tokens: Mapping[str, str]) -> None:
    """The environment ``create_app`` reads, for a test: none of the extension's
    settings or the app's own keys (``APP_KEYS``) from the caller's shell, and ``tokens``
    as the demo's tokens."""
    for name in (*(setting.key for setting in SETTINGS), *APP_KEYS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CREDIT_API_TOKENS", json.dumps(dict(tokens)))


def admin_client(app: Flask) -> FlaskClient:
    """A test client that sends the admin token with every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = ADMIN["Authorization"]
    return client


@pytest.fixture(params=["embedded", SERVICES])
def backend_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    config: dict[str, Any] = {"TESTING": True, "TIERED_STATE_LOCAL_DIR": str(tmp_path / "local")}
    if request.param == "services":
        config.update(services_config(request))
    return config


@pytest.fixture
def credit_app(backend_config: dict[str, Any]) -> Iterator[Flask]:
    """The app under test, closed before the services' fixtures clean up."""
    app = create_app(backend_config)
    yield app
    get_app_state(app).close()
    StateManager.reset_instance()


@pytest.fixture
def client(credit_app: Flask) -> FlaskClient:
    """The app's client, with the admin token."""
    return admin_client(credit_app)


@pytest.fixture
def manager(credit_app: Flask) -> StateManager:
    return get_app_state(credit_app).manager


def ok(response: Any, status: int = 200) -> dict[str, Any]:
    """The JSON body of a response that must have ``status``."""
    assert response.status_code == status, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The JSON error body of a response that must be ``status`` with ``code``."""
    assert response.status_code == status, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    assert body["error"] == code, body
    assert body["message"] and body["correlation_id"]
    return body


def active_user(client: FlaskClient, email: str = "ada@example.com") -> dict[str, Any]:
    """Register and verify a user."""
    user = ok(
        client.post("/api/users", json={"email": email, "full_name": "Ada", "country": "GB"}),
        201,
    )
    return ok(client.post(f"/api/users/{user['state_id']}/verify", json={}))


def subscribed_user(
    client: FlaskClient, email: str = "ada@example.com", plan: str = "pro"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An active user with an active subscription (its first payment succeeded)."""
    user = active_user(client, email)
    body = {"user_id": user["state_id"], "plan": plan}
    subscription = ok(client.post("/api/subscriptions", json=body), 201)
    payment = ok(client.post(f"/api/subscriptions/{subscription['state_id']}/renew", json={}), 201)
    ok(client.post(f"/api/payments/{payment['state_id']}/succeed", json={}))
    return user, ok(client.get(f"/api/subscriptions/{subscription['state_id']}"))

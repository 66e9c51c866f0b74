"""The demo is guarded by its token hook: the extension's REST API and dashboard, its own
``/api/*`` views and ``/``; the actor is the token's; a cross-site form drives nothing."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app import create_app
from example_app.access import TOKENS_FILE, load_tokens
from flask_tiered_state.errors import AccessDeniedError, ConfigurationError
from flask_tiered_state.extension import get_app_state

from .conftest import ADMIN, TOKENS, VIEWER, active_user, error, ok

NEW_USER = {"email": "ada@example.com", "full_name": "Ada", "country": "GB"}
#: One URL of each guarded area.
GUARDED = ("/", "/api/users", "/api/plans", "/api/state/states", "/api/state/openapi.json",
           "/dashboard/", "/dashboard/health")  # fmt: skip


@pytest.fixture
def anonymous(credit_app: Flask) -> FlaskClient:
    return credit_app.test_client()


def test_every_area_asks_for_a_token(anonymous: FlaskClient) -> None:
    for url in GUARDED:
        response = anonymous.get(url)
        assert response.status_code == 401, url
        # A browser asks for it: any user name, the token as the password.
        assert response.headers["WWW-Authenticate"] == 'Basic realm="Flask Credit System"', url
        wrong = anonymous.get(url, headers={"Authorization": "Bearer not-a-token-of-the-demo"})
        assert wrong.status_code == 401, url
        assert anonymous.get(url, headers=VIEWER).status_code == 200, url
    body = error(anonymous.post("/api/users", json=NEW_USER), 401, "unauthorized")
    assert "Authorization: Bearer" in body["message"]


def test_a_browser_sends_the_token_as_the_basic_password(anonymous: FlaskClient) -> None:
    basic = base64.b64encode(f"anyone:{TOKENS['viewer']}".encode()).decode()
    assert (
        anonymous.get("/dashboard/", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    )


def test_the_viewer_token_only_reads(anonymous: FlaskClient) -> None:
    refused = error(anonymous.post("/api/users", json=NEW_USER, headers=VIEWER), 403, "forbidden")
    assert refused["details"] == {"action": "credit.users.register", "actor": "viewer"}
    user = ok(anonymous.post("/api/users", json=NEW_USER, headers=ADMIN), 201)
    transition = {"transition": "suspend", "reason": "fraud check"}
    url = f"/api/state/states/{user['state_id']}/transitions"
    denied = error(anonymous.post(url, json=transition, headers=VIEWER), 403, "forbidden")
    assert denied["details"]["action"] == "states.transition.suspend"


def test_the_actor_is_the_tokens_not_the_clients_claim(client: FlaskClient) -> None:
    claimed = {"X-Actor": "ceo"}
    user = ok(client.post("/api/users", json=NEW_USER, headers=claimed), 201)
    ok(client.post(f"/api/users/{user['state_id']}/verify", json={}, headers=claimed))
    rows = ok(client.get(f"/api/users/{user['state_id']}/history"))["items"]
    assert [row["actor"] for row in rows] == ["admin", "admin"]


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("email=ada%40example.com&full_name=Ada&country=GB", "application/x-www-form-urlencoded"),
        (json.dumps(NEW_USER), "text/plain"),
        ("", "multipart/form-data; boundary=x"),
        ("", None),
    ],
)
def test_a_form_cannot_drive_a_mutating_endpoint(
    client: FlaskClient, data: str, content_type: str | None
) -> None:
    """What a cross-site HTML form can send (the browser adds the cached credentials)."""
    user_id = active_user(client)["state_id"]
    for url in ("/api/users", f"/api/users/{user_id}/suspend", "/api/features/x/enable"):
        response = client.post(url, data=data, content_type=content_type)
        error(response, 415, "unsupported_media_type")
    assert ok(client.get(f"/api/users/{user_id}"))["status"] == "active"


def test_the_tokens_are_made_once_readable_by_their_owner_only(tmp_path: Path) -> None:
    tokens = load_tokens({}, str(tmp_path))
    assert set(tokens) == {"admin", "viewer"} and len(set(tokens.values())) == 2
    assert stat.S_IMODE(os.stat(tmp_path / TOKENS_FILE).st_mode) == 0o600
    assert load_tokens({}, str(tmp_path)) == tokens
    with pytest.raises(ConfigurationError, match="CREDIT_API_TOKENS must map actors"):
        load_tokens({"CREDIT_API_TOKENS": {"root": "x" * 20}}, str(tmp_path))


def test_an_app_with_a_hook_of_its_own_keeps_it(tmp_path: Path) -> None:
    app = create_app(
        {"TIERED_STATE_LOCAL_DIR": str(tmp_path), "TIERED_STATE_ACCESS_CONTROL": "allow-all"}
    )
    try:
        assert app.test_client().get("/api/users").status_code == 200
        result = app.test_cli_runner().invoke(args=["api-tokens"])
        assert result.exit_code == 1 and "its own TIERED_STATE_ACCESS_CONTROL" in result.output
    finally:
        get_app_state(app).close()


def test_the_tokens_command_prints_them(credit_app: Flask) -> None:
    result = credit_app.test_cli_runner().invoke(args=["api-tokens", "--json"])
    assert result.exit_code == 0 and json.loads(result.output) == TOKENS


def test_a_newline_in_the_path_of_a_500_forges_no_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def buggy_hook(request: Any, action: str) -> bool:
        raise RuntimeError(f"the hook broke on {request.path}")

    config = {"TIERED_STATE_LOCAL_DIR": str(tmp_path), "TIERED_STATE_ACCESS_CONTROL": buggy_hook}
    app = create_app(config)
    try:
        response = app.test_client().get("/api/users/x%0AFORGED admin logged in")
        assert (
            response.status_code == 500 and response.get_json()["error"] == "internal_server_error"
        )
    finally:
        get_app_state(app).close()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    written = "\n".join(handler.format(r) for r in caplog.records if r.levelno >= logging.ERROR)
    assert "Exception on /api/users/x\\nFORGED admin logged in [GET]" in written
    assert not any(line.startswith("FORGED") for line in written.splitlines())


def test_the_actors_are_the_roles_of_acting_as_and_flask_state_as(credit_app: Flask) -> None:
    """The token hook is the manager's role map too: the viewer reads, the admin changes,
    under ``acting_as`` and ``flask state --as`` alike; a refusal changes nothing."""
    manager = get_app_state(credit_app).manager
    assert manager.roles is credit_app.config["TIERED_STATE_ACCESS_CONTROL"]
    flag = {"data": {"key": "beta", "description": "Beta pages", "rollout_percentage": 0}}
    manager.register_state("feature-x", "feature", flag)
    with manager.acting_as("viewer"):
        assert (manager.get_state("feature-x") or {}).get("version") == 1
        assert manager.get_state_history("feature-x")
        with pytest.raises(AccessDeniedError, match=r"Role 'viewer' may not do 'states\.register'"):
            manager.register_state("feature-y", "feature", flag)
    runner = credit_app.test_cli_runner()
    refused = runner.invoke(args=["state", "--as", "viewer", "transition", "feature-x", "suspend"])
    assert refused.exit_code == 1, refused.output
    assert "may not do 'states.transition.suspend'" in refused.output
    assert (manager.get_state("feature-x") or {}).get("status") == "created"
    done = runner.invoke(args=["state", "--as", "admin", "transition", "feature-x", "activate"])
    assert done.exit_code == 0, done.output
    assert manager.get_state_history("feature-x")[-1]["actor"] == "admin"
    unknown = runner.invoke(args=["state", "--as", "support", "show", "feature-x"])
    assert unknown.exit_code == 2
    assert "the app's roles are: admin, viewer." in unknown.output

"""Safe by default: the REST API and the dashboard are not mounted without an
access-control hook (unless "allow-all" is said, or the app is TESTING); the hook gets
an action per transition; mutating routes take JSON only."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_tiered_state import access
from flask_tiered_state.access import API_ACTIONS, TRANSITION_ACTIONS
from flask_tiered_state.dashboard import create_blueprint
from flask_tiered_state.errors import ConfigurationError
from flask_tiered_state.extension import EXTENSION_KEY, TieredState, get_app_state
from flask_tiered_state.settings import load_settings


def production_app(tmp_path: Path, **config: Any) -> Flask:
    """An app as deployed: not TESTING."""
    app = Flask("billing", instance_path=str(tmp_path / "instance"))
    app.config.update(**config)
    return app


@pytest.mark.parametrize(
    ("config", "mounted"),
    [
        ({"TIERED_STATE_API_PREFIX": "/api"}, "the REST API at '/api' (TIERED_STATE_API_PREFIX)"),
        (
            {"TIERED_STATE_DASHBOARD_PREFIX": "/dash"},
            "the dashboard at '/dash' (TIERED_STATE_DASHBOARD_PREFIX)",
        ),
        (
            {"TIERED_STATE_API_PREFIX": "/api", "TIERED_STATE_DASHBOARD_PREFIX": "/dash"},
            "the REST API at '/api' (TIERED_STATE_API_PREFIX) and the dashboard at '/dash' "
            "(TIERED_STATE_DASHBOARD_PREFIX)",
        ),
    ],
)
def test_mounting_without_a_hook_refuses_to_start(
    tmp_path: Path, config: dict[str, Any], mounted: str
) -> None:
    app = production_app(tmp_path, **config)
    with pytest.raises(ConfigurationError) as caught:
        TieredState(app)
    assert str(caught.value) == (
        f"App 'billing' mounts {mounted} without an access-control hook: set "
        "TIERED_STATE_ACCESS_CONTROL to a hook(request, action) (see the Security page of the "
        "docs), or to 'allow-all' to let anyone read and change every state."
    )
    assert caught.value.details == {"key": "TIERED_STATE_ACCESS_CONTROL"}
    assert EXTENSION_KEY not in app.extensions
    assert [rule.rule for rule in app.url_map.iter_rules()] == ["/static/<path:filename>"]


def test_allow_all_must_be_said(tmp_path: Path) -> None:
    app = production_app(
        tmp_path,
        TIERED_STATE_API_PREFIX="/api",
        TIERED_STATE_DASHBOARD_PREFIX="/dash",
        TIERED_STATE_ACCESS_CONTROL="allow-all",
    )
    TieredState(app)
    try:
        client = app.test_client()
        assert client.post("/api/states", json={"state_id": "a", "type": "user"}).status_code == 201
        assert client.get("/dash/").status_code == 200
        settings = get_app_state(app).settings
        assert settings.to_dict()["TIERED_STATE_ACCESS_CONTROL"] == "allow-all"
    finally:
        get_app_state(app).close()


def test_without_a_blueprint_no_hook_is_needed(tmp_path: Path) -> None:
    app = production_app(tmp_path)
    TieredState(app)
    assert EXTENSION_KEY in app.extensions


def test_a_testing_app_runs_without_a_hook_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(access, "_warned_testing", False)
    caplog.set_level(logging.WARNING, logger="flask_tiered_state.access")
    apps = [production_app(tmp_path / str(n), TESTING=True, TIERED_STATE_API_PREFIX="/api")
            for n in range(2)]  # fmt: skip
    for app in apps:
        TieredState(app)
    try:
        assert apps[0].test_client().get("/api/states").status_code == 200
        warnings = [r.getMessage() for r in caplog.records if r.name == "flask_tiered_state.access"]
        assert warnings == [
            "App 'billing' mounts the REST API at '/api' (TIERED_STATE_API_PREFIX) without "
            "TIERED_STATE_ACCESS_CONTROL: every request is allowed because the app is TESTING; "
            "outside tests it would refuse to start."
        ]
    finally:
        for app in apps:
            get_app_state(app).close()


def test_a_dashboard_registered_by_hand_is_checked_too(tmp_path: Path) -> None:
    app = production_app(tmp_path)
    settings = load_settings({"TIERED_STATE_DASHBOARD_PREFIX": "/dash"})
    with pytest.raises(ConfigurationError, match="without an access-control hook"):
        app.register_blueprint(create_blueprint(settings), url_prefix="/dash")


def test_the_hook_gets_the_transition_as_its_action(tmp_path: Path) -> None:
    seen: list[str] = []

    def only_updates(request: Any, action: str) -> bool:
        seen.append(action)
        return action in ("states.register", "states.transition.update")

    app = production_app(
        tmp_path, TIERED_STATE_API_PREFIX="/api", TIERED_STATE_ACCESS_CONTROL=only_updates
    )
    TieredState(app)
    try:
        client = app.test_client()
        url = "/api/states/alice/transitions"
        assert (
            client.post("/api/states", json={"state_id": "alice", "type": "user"}).status_code
            == 201
        )
        assert client.post(url, json={"transition": "UPDATE", "data": {"a": 1}}).status_code == 200
        denied = client.post(url, json={"transition": "suspend"})
        assert denied.status_code == 403
        assert denied.get_json()["details"] == {"action": "states.transition.suspend"}
        # A body naming no transition the API knows: the family's action, then refused.
        assert client.post(url, json={"transition": "explode"}).status_code == 403
        assert client.post(url, data="transition=suspend").status_code == 403
        assert seen == [
            "states.register",
            "states.transition.update",
            "states.transition.suspend",
            "states.transition",
            "states.transition",
        ]
    finally:
        get_app_state(app).close()


def test_every_transition_has_its_documented_action() -> None:
    assert (
        tuple(
            f"states.transition.{name}"
            for name in ("update", "activate", "suspend", "resume", "expire", "delete")
        )
        == TRANSITION_ACTIONS
    )
    assert set(TRANSITION_ACTIONS) < set(API_ACTIONS)
    security = (Path(__file__).parents[2] / "docs" / "security.rst").read_text(encoding="utf-8")
    for action in API_ACTIONS:
        assert f"``{action}``" in security, action


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("state_id=x&type=user", "application/x-www-form-urlencoded"),
        ('{"state_id": "x", "type": "user"}', "text/plain"),
        ("", "multipart/form-data; boundary=b"),
    ],
)
def test_a_cross_site_form_cannot_drive_the_api(
    tmp_path: Path, data: str, content_type: str
) -> None:
    app = production_app(
        tmp_path, TIERED_STATE_API_PREFIX="/api", TIERED_STATE_ACCESS_CONTROL="allow-all"
    )
    TieredState(app)
    try:
        client = app.test_client()
        client.post("/api/states", json={"state_id": "alice", "type": "user"})
        for url in ("/api/states", "/api/states/alice/transitions", "/api/states/alice/rollback"):
            response = client.post(url, data=data, content_type=content_type)
            assert response.status_code == 415, url
            assert response.get_json()["error"] == "unsupported_media_type"
    finally:
        get_app_state(app).close()

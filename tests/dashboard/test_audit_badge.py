"""The state page's tamper-evidence badge: verified, broken at version N (what), unsealed,
or no audit key; on both backends."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import get_app_state

from .conftest import build_app, populate

KEY = "dashboard-audit-key-" + "d" * 32


def badge(app: Flask, state_id: str) -> tuple[str, str, str]:
    """``(status, text, title)`` of the badge on the state's page."""
    response = app.test_client().get(f"/dash/states/{state_id}")
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    page = response.get_data(as_text=True)
    found = re.search(
        r'<span class="audit audit-(\w+)" id="audit" data-audit="\w+" title="([^"]*)">([^<]*)<',
        page,
    )
    assert found is not None, page[:3000]
    return found.group(1), found.group(3), found.group(2)


def sql(manager: StateManager, statement: str) -> None:
    with manager.history.engine.begin() as connection:
        connection.execute(sa.text(statement.format(h=manager.history.table.name)))


def test_the_badge_says_verified_broken_or_unsealed(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    app = build_app(tmp_path, TIERED_STATE_AUDIT_KEYS=KEY, **backend)
    manager = get_app_state(app).manager
    try:
        populate(manager)
        assert badge(app, "user-01")[:2] == ("verified", "history verified")
        assert badge(app, "sess-01")[0] == "verified"
        sql(manager, "UPDATE {h} SET actor = 'mallory' WHERE state_id = 'user-01' AND version = 3")
        status, text, title = badge(app, "user-01")
        assert (status, text) == ("broken", "history broken at version 3 (actor)")
        assert title == "its actor differs from the sealed one"
        sql(manager, "UPDATE {h} SET seal = NULL WHERE state_id = 'user-02'")
        assert badge(app, "user-02")[:2] == ("unsealed", "history unsealed (3 of 3 rows)")
    finally:
        get_app_state(app).close()


def test_without_audit_keys_the_badge_says_so(backend: dict[str, Any], tmp_path: Path) -> None:
    app = build_app(tmp_path, **backend)
    try:
        populate(get_app_state(app).manager)
        status, text, title = badge(app, "user-01")
        assert (status, text) == ("no_key", "no audit key")
        assert "TIERED_STATE_AUDIT_KEYS" in title
    finally:
        get_app_state(app).close()


def test_a_long_history_is_not_verified_on_each_page_view(
    backend: dict[str, Any], tmp_path: Path, monkeypatch: Any
) -> None:
    from flask_tiered_state.dashboard import views

    monkeypatch.setattr(views, "BADGE_MAX_ROWS", 2)
    app = build_app(tmp_path, TIERED_STATE_AUDIT_KEYS=KEY, **backend)
    manager = get_app_state(app).manager
    try:
        populate(manager)
        status, text, title = badge(app, "user-01")
        assert status == "unchecked" and "not verified here" in text
        assert "flask state audit verify user-01" in title
    finally:
        get_app_state(app).close()

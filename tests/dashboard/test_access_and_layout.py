"""The access-control hook guarding the dashboard, and the lifecycle diagram's layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flask_tiered_state.dashboard import DASHBOARD_ACTIONS
from flask_tiered_state.dashboard.lifecycle import NODE_H, NODE_W, layout
from flask_tiered_state.domain.lifecycle import DEFAULT_LIFECYCLE, Lifecycle
from flask_tiered_state.domain.model import StateStatus, StateTransition
from flask_tiered_state.errors import AccessDeniedError
from flask_tiered_state.extension import get_app_state

from .conftest import build_app, populate

#: The actions of the POSTs (tested in test_events_and_timers.py); the others are pages'.
POST_ACTIONS = {"dashboard.events.retry", "dashboard.timers.cancel"}
PAGES = (
    "/dash/",
    "/dash/states",
    "/dash/states/user-01",
    "/dash/events",
    "/dash/tiers",
    "/dash/health",
    "/dash/backups",
    "/dash/lookup?state_id=user-01",
)


@pytest.fixture
def guarded(tmp_path: Path) -> Any:
    seen: list[tuple[str, str]] = []
    verdict: dict[str, Any] = {"value": "ops@example.com"}

    def hook(request: Any, action: str) -> object:
        seen.append((request.path, action))
        value = verdict["value"]
        if isinstance(value, Exception):
            raise value
        return value

    app = build_app(tmp_path, TIERED_STATE_ACCESS_CONTROL=hook)
    populate(get_app_state(app).manager)
    yield app, seen, verdict
    get_app_state(app).close()


def test_every_page_asks_the_hook_with_its_action(guarded: Any) -> None:
    app, seen, _ = guarded
    client = app.test_client()
    for url in PAGES:
        assert client.get(url).status_code in (200, 302), url
    assert {action for _, action in seen} == set(DASHBOARD_ACTIONS.values()) - POST_ACTIONS
    assert ("/dash/states/user-01", "dashboard.state") in seen


@pytest.mark.parametrize("denial", [False, None, "", 0])
def test_a_denial_is_an_html_403_on_every_page(guarded: Any, denial: object) -> None:
    app, _, verdict = guarded
    verdict["value"] = denial
    client = app.test_client()
    for url in PAGES:
        response = client.get(url)
        assert response.status_code == 403, url
        assert response.mimetype == "text/html"
        text = response.get_data(as_text=True)
        assert "denied by the access-control hook" in text and "user-01</h1>" not in text
    stylesheet = client.get("/dash/static/dashboard.css")  # the 403 page keeps its style
    assert stylesheet.status_code == 200
    stylesheet.close()


def test_the_hook_may_raise_its_own_denial(guarded: Any) -> None:
    app, _, verdict = guarded
    verdict["value"] = AccessDeniedError("Only the on-call engineer may look at states.")
    response = app.test_client().get("/dash/states")
    assert response.status_code == 403
    assert "Only the on-call engineer" in response.get_data(as_text=True)


def test_the_dashboard_is_off_unless_configured(tmp_path: Path) -> None:
    app = build_app(tmp_path, TIERED_STATE_DASHBOARD_PREFIX=None)
    assert app.test_client().get("/dash/").status_code == 404
    assert not any(rule.rule.startswith("/dash") for rule in app.url_map.iter_rules())


def _overlap(a: tuple[float, float], b: tuple[float, float], w: float, h: float) -> bool:
    return abs(a[0] - b[0]) < w and abs(a[1] - b[1]) < h


def test_the_default_lifecycle_graph() -> None:
    graph = layout(DEFAULT_LIFECYCLE, "active")
    assert [n.status for n in graph.nodes] == [s.value for s in StateStatus]
    assert [n.status for n in graph.nodes if n.current] == ["active"]
    assert {n.status for n in graph.nodes if n.next} == {"suspended", "expired", "deleted"}
    edges = {(e.source, e.target): e.label for e in graph.edges}
    assert edges[("", "created")] == "create"
    assert edges[("suspended", "active")] == "activate / resume"
    assert edges[("active", "suspended")] == "suspend"
    assert sum(label == "delete" for label in edges.values()) == 4
    assert graph.loops == [("update", ["created", "active", "suspended"])]
    assert graph.allowed == ["update", "suspend", "expire", "delete"]
    assert {(e.source, e.target) for e in graph.edges if e.next} == {
        ("active", "suspended"),
        ("active", "expired"),
        ("active", "deleted"),
    }
    labels = [(e.label_x, e.label_y) for e in graph.edges]
    for i, a in enumerate(labels):
        assert not any(_overlap(a, b, 40, 12) for b in labels[i + 1 :]), "labels overlap"
        for node in graph.nodes:
            assert not _overlap(a, (node.x, node.y), NODE_W / 2, NODE_H / 2), "label on a node"


def test_a_custom_lifecycle_graph_shows_only_its_statuses() -> None:
    lifecycle = Lifecycle(
        {
            StateTransition.ACTIVATE: ((StateStatus.CREATED,), StateStatus.ACTIVE),
            StateTransition.EXPIRE: ((StateStatus.ACTIVE,), StateStatus.EXPIRED),
        }
    )
    graph = layout(lifecycle, "expired")
    assert [n.status for n in graph.nodes] == ["created", "active", "expired"]
    assert graph.allowed == [] and not any(e.next for e in graph.edges)
    assert layout(lifecycle).current is None

"""The dashboard in headless Chromium: clean pages, search, a live timeline.

Screenshots are saved in ``test-artifacts/`` for a human to look at.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_tiered_state.domain.dispatcher import EventDispatcher
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import get_app_state
from flask_tiered_state.ops.backup import BackupManager
from flask_tiered_state.ops.capture import StateCapture

from .conftest import LiveServer, Watched, build_app, populate

pytestmark = pytest.mark.browser

PAGES = {
    "overview": "/dash/",
    "states": "/dash/states",
    "search": "/dash/states?type=user&q=data.country%3DDE",
    "state": "/dash/states/user-01?from=1&to=3",
    "session": "/dash/states/sess-01",
    "events": "/dash/events",
    "tiers": "/dash/tiers",
    "health": "/dash/health",
    "backups": "/dash/backups",
    "not-found": "/dash/states/nobody",
}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[LiveServer, Flask]]:
    app = build_app(tmp_path)
    populate(get_app_state(app).manager)
    server = LiveServer(app)
    yield server, app
    server.stop()
    get_app_state(app).close()
    StateManager.reset_instance()


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    tab = Watched(browser)
    yield tab
    tab.close()


def test_every_page_loads_without_console_errors(
    live: tuple[LiveServer, Flask], watched: Watched, artifacts: Path
) -> None:
    server, app = live
    state = get_app_state(app)
    where = os.path.join(state.instance_path, "backups")  # no TIERED_STATE_BACKUP_URL
    BackupManager(manager=state.manager, destination=where).create_backup(include_history=True)
    StateCapture.for_manager(state.manager, where).capture_full_state(label="browser test")
    page = watched.page
    for name, path in PAGES.items():
        response = page.goto(server.url + path)
        assert response is not None
        assert response.status == (404 if name == "not-found" else 200), name
        assert page.locator("header.top nav a").count() == 6
        # The stylesheet applied (no CSP or loading problem): the header is dark.
        background = page.eval_on_selector("header.top", "e => getComputedStyle(e).backgroundColor")
        assert background == "rgb(15, 31, 51)", name
        page.screenshot(path=str(artifacts / f"dashboard-{name}.png"), full_page=True)
    # A 404 document is reported by Chromium as a failed resource; nothing else may be.
    problems = [p for p in watched.problems if "404" not in p]
    assert problems == []
    assert len(watched.problems) <= 1


def test_a_search_narrows_the_list(live: tuple[LiveServer, Flask], watched: Watched) -> None:
    server, _ = live
    page = watched.page
    page.goto(server.url + "/dash/states")
    rows = page.locator("#results tbody tr[data-href]")
    assert rows.count() == 13
    page.select_option("#search select[name=type]", "user")
    page.fill("#search input[name=q]", "data.country=DE data.plan=free")
    page.click("#search button[type=submit]")
    page.wait_for_url("**/dash/states?*q=*")
    ids = sorted(rows.locator("td:first-child a").all_inner_texts())
    assert ids == ["user-01", "user-02", "user-04"]
    assert page.input_value("#search input[name=q]") == "data.country=DE data.plan=free"
    # A click anywhere on a row opens the state (dashboard.js).
    rows.first.locator("td:nth-child(2)").click()
    page.wait_for_url("**/dash/states/user-0*")
    assert page.locator("#timeline li").count() >= 2
    assert watched.problems == []


def test_a_transition_made_through_the_api_appears_on_the_timeline(
    live: tuple[LiveServer, Flask], watched: Watched, artifacts: Path
) -> None:
    server, _ = live
    page = watched.page
    page.goto(server.url + "/dash/states/user-04")
    assert page.locator("#timeline li").count() == 2
    assert page.get_attribute("svg.lifecycle g.node.current", "data-status") == "active"

    body = json.dumps({"transition": "suspend", "reason": "chargeback opened"}).encode()
    request = urllib.request.Request(
        server.url + "/api/states/user-04/transitions",
        data=body,
        headers={"Content-Type": "application/json", "X-Correlation-ID": "browser-test-1"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["status"] == "suspended"

    page.reload()
    entries = page.locator("#timeline li")
    assert entries.count() == 3
    newest = entries.first
    assert newest.get_attribute("data-version") == "3"
    assert newest.locator(".transition").inner_text() == "suspend"
    assert "chargeback opened" in newest.inner_text()
    assert "browser-test-1" in newest.inner_text()
    assert page.get_attribute("svg.lifecycle g.node.current", "data-status") == "suspended"

    # Choosing versions shows their diff at once (the form submits itself).
    page.select_option("#diff-form select[name=from]", "1")
    page.wait_for_url("**from=1*")
    assert "status" in page.locator("#diff").inner_text()
    page.screenshot(
        path=str(artifacts / "dashboard-timeline-after-api-transition.png"), full_page=True
    )
    assert watched.problems == []


def test_retry_a_dead_delivery_and_cancel_a_timer_from_the_browser(
    live: tuple[LiveServer, Flask], browser: Any, artifacts: Path
) -> None:
    server, app = live
    manager = get_app_state(app).manager

    def broken(state_id: str, old: Any, new: Any, transition: Any, *, event_id: str) -> None:
        raise RuntimeError(f"the mailer refused {state_id}")

    manager.register_callback("user_expired", broken, asynchronous=True, key="mail",
                              max_attempts=1)  # fmt: skip
    manager.update_state("user-04", None, "expire")
    with EventDispatcher(manager) as dispatcher:
        dispatcher.run_once()
    (dead,) = manager.get_events("dead")
    timer = manager.schedule_transition("user-01", "resume", after=timedelta(days=7),
                                        reason="suspension ends")  # fmt: skip

    for name, viewport in (("desktop", (1280, 900)), ("phone", (390, 844))):
        tab = Watched(browser)
        tab.page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
        tab.page.goto(server.url + "/dash/events")
        tab.page.screenshot(path=str(artifacts / f"dashboard-events-{name}.png"), full_page=True)
        tab.page.goto(server.url + "/dash/states/user-01")
        tab.page.locator("#timers").screenshot(path=str(artifacts / f"dashboard-timers-{name}.png"))
        assert tab.problems == []
        tab.close()

    tab = Watched(browser)
    try:
        page = tab.page
        page.goto(server.url + "/dash/events?status=dead")
        page.click(f'#events tr[data-id="{dead["id"]}"] button')  # a real form POST
        page.wait_for_url("**/dash/events?status=dead&retried=1")
        assert "1 delivery will be attempted again" in page.locator("#retried").inner_text()
        assert manager.get_events("dead") == []
        page.goto(server.url + "/dash/states/user-01")
        assert page.locator("#scheduled tbody tr").count() == 1
        page.click(f'#scheduled tr[data-timer="{timer["timer_id"]}"] button')
        page.wait_for_url("**/dash/states/user-01?cancelled=1#timers")
        assert page.locator("#cancelled").inner_text() == "The timer was cancelled."
        assert manager.get_scheduled("user-01") == []
        assert tab.problems == []
    finally:
        tab.close()


#: The narrowest viewport the dashboard is laid out for (a small phone held upright).
NARROW = {"width": 400, "height": 800}

_OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [];
  for (const element of document.querySelectorAll("body *")) {
    const box = element.getBoundingClientRect();
    if (box.width === 0 || element.closest(".table-scroll, pre")) continue;
    if (box.left < -0.5 || box.right > width + 0.5) {
      const name = element.tagName.toLowerCase() + (element.id ? "#" + element.id : "") +
                   [...element.classList].map((c) => "." + c).join("");
      wide.push(`${name} ${Math.round(box.left)}..${Math.round(box.right)}`);
    }
  }
  return {scroll: document.documentElement.scrollWidth, width, wide: wide.slice(0, 10)};
}"""


def test_every_page_fits_a_400_px_wide_screen(
    live: tuple[LiveServer, Flask], browser: Any, artifacts: Path
) -> None:
    """No horizontal scrolling and no element past the viewport's edge at 400 px; wide
    tables scroll inside their card (``.table-scroll``), code blocks inside themselves."""
    server, app = live
    state = get_app_state(app)
    manager = state.manager
    where = os.path.join(state.instance_path, "backups")
    BackupManager(manager=manager, destination=where).create_backup(include_history=True)
    StateCapture.for_manager(manager, where).capture_full_state(label="a narrow screen")
    manager.schedule_transition("user-01", "resume", after=timedelta(days=7), reason="ends")
    manager.demote_to_cold("user-05")
    for _ in range(3):
        manager.get_state("user-01")
    tab = Watched(browser)
    try:
        tab.page.set_viewport_size(NARROW)
        for name, path in {**PAGES, "archived": "/dash/states/user-05"}.items():
            tab.page.goto(server.url + path)
            found = tab.page.evaluate(_OVERFLOW)
            tab.page.screenshot(path=str(artifacts / f"dashboard-{name}-400px.png"), full_page=True)
            assert found["width"] == NARROW["width"], name
            assert found["wide"] == [], name
            assert found["scroll"] <= found["width"], name
        assert [p for p in tab.problems if "404" not in p] == []
    finally:
        tab.close()

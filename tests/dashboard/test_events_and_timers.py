"""The events page (deliveries of asynchronous callbacks, with retries), the scheduled
transitions on a state's page (with cancel), and the protections of those POSTs: the
access-control hook, the same-origin check and the CSRF token."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_tiered_state.dashboard.forms import CSRF_COOKIE
from flask_tiered_state.domain.dispatcher import EventDispatcher
from flask_tiered_state.extension import get_app_state

from .conftest import build_app, populate

ORIGIN = {"Origin": "http://localhost"}


def broken(state_id: str, old: Any, new: Any, transition: Any, *, event_id: str) -> None:
    raise RuntimeError(f"the mailer refused {state_id}")


def fine(state_id: str, old: Any, new: Any, transition: Any, *, event_id: str) -> None:
    pass


def with_deliveries(app: Flask) -> dict[str, int]:
    """Deliveries in every status; their ids by name (``dead``, ``failed``, ``delivered``)."""
    manager = get_app_state(app).manager
    manager.register_callback("user_expired", broken, asynchronous=True, key="mail-once",
                              max_attempts=1)  # fmt: skip
    manager.register_callback("user_expired", fine, asynchronous=True, key="audit")
    manager.register_callback("user_suspended", broken, asynchronous=True, key="mail-again",
                              max_attempts=5, backoff=3600.0)  # fmt: skip
    manager.update_state("user-04", None, "expire")
    manager.update_state("user-05", None, "suspend")
    with EventDispatcher(manager) as dispatcher:
        dispatcher.run_once()
    by_callback = {row["callback"]: row["id"] for row in manager.get_events(limit=10)}
    return {
        "dead": by_callback["mail-once"],
        "delivered": by_callback["audit"],
        "failed": by_callback["mail-again"],
    }


def token_of(client: FlaskClient, url: str) -> str:
    page = client.get(url).get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def status_of(app: Flask, delivery_id: int) -> tuple[str, int]:
    rows = get_app_state(app).manager.get_events(limit=100)
    row = next(r for r in rows if r["id"] == delivery_id)
    return row["status"], row["attempts"]


def rows_of(page: str) -> dict[str, str]:
    """Delivery id -> the status the table shows."""
    table = page.split('id="events"', 1)[1].split("</table>", 1)[0]
    return dict(re.findall(r'<tr data-id="(\d+)" data-status="(\w+)">', table))


def test_the_events_page_counts_and_lists_deliveries(dash_app: Flask) -> None:
    ids = with_deliveries(dash_app)
    client = dash_app.test_client()
    page = client.get("/dash/events").get_data(as_text=True)
    counts = page.split('id="event-counts"', 1)[1].split("</div>", 1)[0]
    figures = dict(re.findall(r'data-status="(\w+)">\s*<span class="label">\w+</span>\s*'
                              r'<span class="figure num">(\d+)</span>', counts))  # fmt: skip
    assert figures == {"pending": "1", "failed": "1", "dead": "1", "delivered": "1"}
    assert rows_of(page) == {str(ids["dead"]): "dead", str(ids["failed"]): "failed",
                             str(ids["delivered"]): "delivered"}  # fmt: skip
    assert "RuntimeError: the mailer refused user-04" in page
    assert 'href="/dash/states/user-04"' in page
    # A Retry button on the dead and failed rows only; "retry all dead" above the table.
    table = page.split('id="events"', 1)[1]
    retry_ids = re.findall(r'name="id" value="(\d+)"', table)
    assert sorted(retry_ids) == sorted([str(ids["dead"]), str(ids["failed"])])
    assert "Retry all dead (1)" in page
    assert '<a href="/dash/events">Events</a>' in page or 'href="/dash/events"' in page
    for status, expected in (("dead", "dead"), ("failed", "failed"), ("delivered", "delivered")):
        only = client.get(f"/dash/events?status={status}").get_data(as_text=True)
        assert rows_of(only) == {str(ids[expected]): expected}, status


def test_bad_event_filters_answer_400(dash_app: Flask) -> None:
    client = dash_app.test_client()
    for query, words in (("status=lost", "Unknown event status"), ("limit=0", "limit"),
                         ("limit=100000", "limit")):  # fmt: skip
        response = client.get(f"/dash/events?{query}")
        assert response.status_code == 400, query
        assert words in response.get_data(as_text=True), query
    assert client.get("/dash/events/retry").status_code == 405


def test_a_retry_makes_a_delivery_due_again(dash_app: Flask) -> None:
    ids = with_deliveries(dash_app)
    client = dash_app.test_client()
    token = token_of(client, "/dash/events?status=dead")
    assert client.get_cookie(CSRF_COOKIE, path="/dash/") is not None
    response = client.post(
        "/dash/events/retry",
        data={"id": str(ids["dead"]), "csrf_token": token, "status": "dead"},
        headers=ORIGIN,
    )
    assert response.status_code == 303
    assert response.location == "/dash/events?status=dead&retried=1"
    assert status_of(dash_app, ids["dead"]) == ("pending", 0)
    banner = client.get(response.location).get_data(as_text=True)
    assert "1 delivery will be attempted again at once" in banner
    # The failed one too, through its Referer when the browser sends no Origin.
    failed = client.post(
        "/dash/events/retry",
        data={"id": str(ids["failed"]), "csrf_token": token},
        headers={"Referer": "http://localhost/dash/events"},
    )
    assert failed.status_code == 303 and status_of(dash_app, ids["failed"]) == ("pending", 0)
    # A delivered one is never retried.
    client.post("/dash/events/retry", data={"id": str(ids["delivered"]), "csrf_token": token},
                headers=ORIGIN)  # fmt: skip
    assert status_of(dash_app, ids["delivered"])[0] == "delivered"


def test_retry_all_dead(dash_app: Flask) -> None:
    ids = with_deliveries(dash_app)
    client = dash_app.test_client()
    token = token_of(client, "/dash/events")
    response = client.post("/dash/events/retry", data={"all_dead": "1", "csrf_token": token},
                           headers=ORIGIN)  # fmt: skip
    assert response.status_code == 303 and response.location.endswith("retried=1")
    assert status_of(dash_app, ids["dead"]) == ("pending", 0)
    assert status_of(dash_app, ids["failed"]) == ("pending", 1)  # not dead: left alone
    again = client.post("/dash/events/retry", data={"all_dead": "1", "csrf_token": token},
                        headers=ORIGIN)  # fmt: skip
    assert "Nothing to retry" in client.get(again.location).get_data(as_text=True)
    for bad in ({}, {"id": "x"}, {"id": "-1"}):
        refused = client.post("/dash/events/retry", data={**bad, "csrf_token": token},
                              headers=ORIGIN)  # fmt: skip
        assert refused.status_code == 400, bad
        assert "Choose the deliveries to retry" in refused.get_data(as_text=True)


def test_a_retry_without_the_same_origin_or_the_token_is_refused(dash_app: Flask) -> None:
    ids = with_deliveries(dash_app)
    client = dash_app.test_client()
    token = token_of(client, "/dash/events")
    refusals = [
        ({"csrf_token": token}, {}, "names no origin"),
        ({"csrf_token": token}, {"Origin": "https://evil.example"}, "comes from"),
        ({"csrf_token": token}, {"Origin": "null"}, "comes from"),
        ({"csrf_token": token}, {"Referer": "https://evil.example/dash/events"}, "another site"),
        ({"csrf_token": token}, {**ORIGIN, "Sec-Fetch-Site": "cross-site"}, "cross-site page"),
        ({}, ORIGIN, "CSRF token"),
        ({"csrf_token": token[::-1]}, ORIGIN, "CSRF token"),
    ]
    for form, headers, words in refusals:
        response = client.post("/dash/events/retry", data={"id": str(ids["dead"]), **form},
                               headers=headers)  # fmt: skip
        assert response.status_code == 403, (form, headers)
        assert response.mimetype == "text/html"
        assert words in response.get_data(as_text=True), (form, headers)
    # A browser without the cookie (another one, or the cookie was never set) has no token.
    stranger = dash_app.test_client()
    response = stranger.post(
        "/dash/events/retry", data={"id": str(ids["dead"]), "csrf_token": token}, headers=ORIGIN
    )
    assert response.status_code == 403
    assert status_of(dash_app, ids["dead"]) == ("dead", 1)


def test_the_token_cookie_is_strict_and_scoped_to_the_dashboard(dash_app: Flask) -> None:
    response = dash_app.test_client().get("/dash/events")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(CSRF_COOKIE + "=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dash/" in cookie
    # Pages without a form set none.
    assert "Set-Cookie" not in dash_app.test_client().get("/dash/tiers").headers


@pytest.fixture
def guarded(tmp_path: Path) -> Any:
    seen: list[tuple[str, str, str]] = []
    denied: set[str] = set()

    def hook(request: Any, action: str) -> object:
        seen.append((request.method, request.path, action))
        return action not in denied

    app = build_app(tmp_path, TIERED_STATE_ACCESS_CONTROL=hook)
    populate(get_app_state(app).manager)
    yield app, seen, denied
    get_app_state(app).close()


def test_the_actions_ask_the_hook_with_their_own_action(guarded: Any) -> None:
    app, seen, denied = guarded
    ids = with_deliveries(app)
    manager = get_app_state(app).manager
    timer = manager.schedule_transition("user-06", "suspend", after=timedelta(days=1))
    client = app.test_client()
    token = token_of(client, "/dash/events")
    denied.update({"dashboard.events.retry", "dashboard.timers.cancel"})
    retry = client.post("/dash/events/retry", data={"id": str(ids["dead"]), "csrf_token": token},
                        headers=ORIGIN)  # fmt: skip
    cancel = client.post(f"/dash/states/user-06/timers/{timer['timer_id']}/cancel",
                         data={"csrf_token": token}, headers=ORIGIN)  # fmt: skip
    assert retry.status_code == cancel.status_code == 403
    assert "denied by the access-control hook" in retry.get_data(as_text=True)
    assert ("POST", "/dash/events/retry", "dashboard.events.retry") in seen
    assert ("GET", "/dash/events", "dashboard.events") in seen
    assert any(action == "dashboard.timers.cancel" for _, _, action in seen)
    assert status_of(app, ids["dead"]) == ("dead", 1)
    assert [t["timer_id"] for t in manager.get_scheduled("user-06")] == [timer["timer_id"]]
    denied.clear()
    allowed = client.post("/dash/events/retry", data={"id": str(ids["dead"]),
                          "csrf_token": token}, headers=ORIGIN)  # fmt: skip
    assert allowed.status_code == 303


def test_the_state_page_lists_its_timers_and_cancels_one(dash_app: Flask) -> None:
    manager = get_app_state(dash_app).manager
    later = manager.schedule_transition("user-01", "resume", after=timedelta(days=7),
                                        reason="suspension ends", if_version=3)  # fmt: skip
    other = manager.schedule_transition("user-02", "delete", after=timedelta(days=30))
    stale = manager.schedule_transition("user-01", "expire", after=timedelta(0), if_version=1)
    with EventDispatcher(manager) as dispatcher:
        dispatcher.run_once()  # the stale timer is skipped: user-01 is at version 3
    client = dash_app.test_client()
    page = client.get("/dash/states/user-01").get_data(as_text=True)
    section = page.split('id="timers"', 1)[1].split("</section>", 1)[0]
    scheduled = section.split('id="scheduled"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r'data-timer="(\w+)"', scheduled) == [later["timer_id"]]
    assert "resume" in scheduled and "suspension ends" in scheduled and "in 7 d" in scheduled
    outcomes = section.split('id="timer-outcomes"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r'data-timer="(\w+)"', outcomes) == [stale["timer_id"]]
    assert '<span class="status status-skipped">skipped</span>' in outcomes
    assert other["timer_id"] not in section

    token = re.search(r'name="csrf_token" value="([^"]+)"', section)
    assert token is not None
    url = f"/dash/states/user-01/timers/{later['timer_id']}/cancel"
    assert client.post(url, data={"csrf_token": token.group(1)}).status_code == 403  # no origin
    assert manager.get_scheduled("user-01")[0]["timer_id"] == later["timer_id"]
    done = client.post(url, data={"csrf_token": token.group(1)}, headers=ORIGIN)
    assert done.status_code == 303
    assert done.location == "/dash/states/user-01?cancelled=1#timers"
    assert manager.get_scheduled("user-01") == []
    after = client.get(done.location).get_data(as_text=True)
    assert "The timer was cancelled." in after
    assert "No transition is scheduled for this state." in after
    assert '<span class="status status-cancelled">cancelled</span>' in after
    # Again, or through another state's URL: nothing is cancelled.
    again = client.post(url, data={"csrf_token": token.group(1)}, headers=ORIGIN)
    assert again.location.endswith("cancelled=0#timers")
    assert "Nothing was cancelled" in client.get(again.location).get_data(as_text=True)
    wrong_state = f"/dash/states/user-01/timers/{other['timer_id']}/cancel"
    client.post(wrong_state, data={"csrf_token": token.group(1)}, headers=ORIGIN)
    assert [t["timer_id"] for t in manager.get_scheduled("user-02")] == [other["timer_id"]]
    bad = client.post("/dash/states/user-01/timers/nope/cancel",
                      data={"csrf_token": token.group(1)}, headers=ORIGIN)  # fmt: skip
    assert bad.status_code == 400 and "32 hexadecimal digits" in bad.get_data(as_text=True)


def test_a_state_without_timers(dash_app: Flask) -> None:
    page = dash_app.test_client().get("/dash/states/user-07").get_data(as_text=True)
    section = page.split('id="timers"', 1)[1].split("</section>", 1)[0]
    assert "0 scheduled" in section and "No transition is scheduled" in section
    assert 'id="timer-outcomes"' not in section

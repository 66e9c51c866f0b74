"""The demo's main story in headless Chromium, through its pages only:
log in -> register -> verify -> subscribe -> pay -> a payment fails -> the user is
suspended and told why -> the dashboard shows it -> resume.

Screenshots of each page are saved in ``test-artifacts/credit-*.png``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from example_app import create_app
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import get_app_state
from tests.dashboard.conftest import LiveServer, Watched

from .conftest import TOKENS

pytestmark = pytest.mark.browser


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[LiveServer, Flask]]:
    app = create_app({"TESTING": True, "TIERED_STATE_LOCAL_DIR": str(tmp_path / "local")})
    server = LiveServer(app)
    yield server, app
    server.stop()
    get_app_state(app).close()
    StateManager.reset_instance()


class Tab(Watched):
    """A watched page of the demo, with its forms' helpers."""

    def submit(self, selector: str) -> None:
        """Click a submit button and wait for the page it leads to."""
        with self.page.expect_navigation():
            self.page.click(selector)

    def status(self) -> str:
        value: str = self.page.get_attribute("h1 .status", "data-status")
        return value


def test_the_main_story_in_a_browser(
    live: tuple[LiveServer, Flask],
    browser: Any,
    artifacts: Path,
) -> None:
    server, app = live
    tab = Tab(browser)
    page = tab.page

    def shot(name: str) -> None:
        page.screenshot(path=str(artifacts / f"credit-{name}.png"), full_page=True)

    try:
        # Not logged in: the login page, then back where we wanted to go.
        page.goto(server.url + "/app/users")
        assert page.url.startswith(server.url + "/app/login")
        shot("login")
        page.fill("#token", TOKENS["admin"])
        tab.submit("#login button[type=submit]")
        assert page.url == server.url + "/app/users"
        assert page.inner_text("#actor") == "admin"
        shot("users")

        # Register.
        page.click("header.top nav >> text=Register")
        page.wait_for_url("**/app/users/new")
        page.fill("#email", "ada")
        tab.submit("#register button[type=submit]")
        assert page.inner_text('[data-field="email"] .field-error') == "Not a valid email address."
        shot("register-errors")
        page.fill("#email", "ada@example.com")
        page.fill("#full_name", "Ada Lovelace")
        page.fill("#country", "GB")
        tab.submit("#register button[type=submit]")
        assert re.search(r"/app/users/usr-[0-9a-f]+$", page.url)
        user_id = page.url.rsplit("/", 1)[1]
        assert tab.status() == "created"

        # Verify, subscribe, pay.
        tab.submit('button[data-action="verify"]')
        assert tab.status() == "active"
        page.select_option("#subscribe-plan", "pro")
        tab.submit("#subscribe button[type=submit]")
        subscription = page.locator("#subscriptions tbody tr[data-id]")
        assert subscription.locator(".status").inner_text() == "created"
        tab.submit('#subscriptions button[data-action="pay"]')
        assert page.locator("#payments .status").first.inner_text() == "pending"
        tab.submit('#payments button[data-action="succeed"]')
        assert subscription.locator(".status").inner_text() == "active"
        assert page.locator("#payments .status").first.inner_text() == "settled"
        shot("user-subscribed")

        # The next payment fails: the user and the subscription are suspended, and told why.
        tab.submit('#subscriptions button[data-action="pay"]')
        pending = page.locator("#payments tr[data-id]", has=page.locator("form.fail"))
        payment_id = pending.get_attribute("data-id")
        pending.locator("form.fail input[type=text]").fill("card declined")
        tab.submit('#payments button[data-action="fail"]')
        assert tab.status() == "suspended"
        assert subscription.locator(".status").inner_text() == "suspended"
        notices = page.locator("#notifications li").all_inner_texts()
        assert any(
            f"Your account is suspended: payment {payment_id} failed: card declined." in n
            for n in notices
        ), notices
        assert any("Your pro subscription is suspended (payment failed)" in n for n in notices)
        shot("user-suspended")

        # The payment's own page: failed, final.
        page.click(f'#payments tr[data-id="{payment_id}"] td:first-child a')
        page.wait_for_url(f"**/app/payments/{payment_id}")
        assert page.inner_text("h1 .status") == "failed"
        assert page.inner_text("#allowed") == "delete"
        shot("payment-failed")
        page.go_back()

        # The dashboard shows the same state, without asking for the token again.
        with page.expect_navigation():
            page.click(f'.heading a[data-dashboard="{user_id}"]')
        assert page.url == f"{server.url}/dashboard/states/{user_id}"
        current = page.get_attribute("svg.lifecycle g.node.current", "data-status")
        assert current == "suspended"
        assert "card declined" in page.locator("#timeline li").first.inner_text()
        page.go_back()

        # Resume.
        page.fill("#resume-reason", "paid by bank transfer")
        tab.submit("#resume button[type=submit]")
        assert tab.status() == "active"
        assert "The user is active again." in page.inner_text("#flashes")
        shot("user-resumed")

        for name, path in (
            ("subscriptions", "/app/subscriptions"),
            ("payments", "/app/payments"),
            ("features", "/app/features"),
            ("sessions", "/app/sessions"),
        ):
            page.goto(server.url + path)
            # The stylesheet applied: the header is dark.
            background = page.eval_on_selector(
                "header.top", "e => getComputedStyle(e).backgroundColor"
            )
            assert background == "rgb(16, 42, 67)", name
            shot(name)
        # The refused registration answered 422 (Chromium reports a 4xx document as a
        # failed resource); nothing else may be reported.
        assert [p for p in tab.problems if "status of 422" not in p] == []
        assert len(tab.problems) == 1
    finally:
        tab.context.close()

    history = get_app_state(app).manager.get_state_history(user_id)
    assert [(r["transition"], r["actor"]) for r in history] == [
        ("create", "admin"),
        ("activate", "admin"),
        ("suspend", "billing-bot"),
        ("resume", "admin"),
    ]


def test_the_pages_fit_a_phone(
    live: tuple[LiveServer, Flask],
    browser: Any,
    artifacts: Path,
) -> None:
    server, _ = live
    tab = Tab(browser, width=390)
    try:
        page = tab.page
        page.goto(server.url + "/app/login")
        page.fill("#token", TOKENS["viewer"])
        tab.submit("#login button[type=submit]")
        page.goto(server.url + "/app/users/new")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390
        page.screenshot(path=str(artifacts / "credit-register-phone.png"), full_page=True)
        assert tab.problems == []
    finally:
        tab.context.close()

"""The demo's pages (``/app``): login by token, every page and form, CSRF, bad input.

Each action is checked where a person relies on it: the state it changed (read back
through the JSON API), its history row naming the token's actor, and the page that
follows. Bad input shows the field messages (422), a form without its CSRF token is
refused with a 400 page, and nothing answers a 500.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape
from pathlib import Path
from typing import Any

import marshmallow
import pytest
from flask import Flask

from example_app import accounts, create_app
from example_app.core import user_id_for
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateType
from flask_tiered_state.errors import ValidationError
from flask_tiered_state.extension import get_app_state

from .conftest import TOKENS, active_user, admin_client, ok

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    """A test client that logs in through the login page, and sends forms as a browser:
    urlencoded, with the page's CSRF token."""

    def __init__(self, app: Flask, actor: str | None = "admin") -> None:
        self.client = app.test_client()
        self.token = ""
        if actor is not None:
            page = self.get("/app/login")
            response = self.post("/app/login", {"token": TOKENS[actor]})
            assert response.status_code == 302, page

    def get(self, url: str, status: int = 200) -> str:
        response = self.client.get(url)
        assert response.status_code == status, (url, response.status_code)
        text = response.get_data(as_text=True)
        found = _CSRF.search(text)
        if found:
            self.token = found.group(1)
        return text

    def post(self, url: str, data: dict[str, Any] | None = None, *, csrf: bool = True) -> Any:
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.token)
        return self.client.post(url, data=form)

    def submit(self, url: str, data: dict[str, Any] | None = None, status: int = 302) -> str:
        """POST a form; the page it leads to (followed redirect) or shows."""
        response = self.post(url, data)
        assert response.status_code == status, (url, response.get_data(as_text=True)[-3000:])
        if status == 302:
            return self.get(response.headers["Location"])
        text: str = response.get_data(as_text=True)
        return text


def field_errors(page: str) -> list[str]:
    return re.findall(r'<p class="field-error">([^<]+)</p>', page)


def flashes(page: str) -> list[str]:
    return re.findall(r'<p class="flash flash-\w+" role="status">([^<]+)</p>', page)


def field_html(page: str, field_id: str) -> str:
    """One field of a form as the page shows it: its label, input and messages."""
    label = f'<label for="{re.escape(field_id)}">'
    found = re.search(rf'<div class="field[^"]*" data-field="\w+">\s*{label}.*?</div>', page, re.S)
    assert found is not None, f"no field {field_id} on the page"
    return found.group(0)


def refused_field(page: str, field_id: str) -> tuple[list[str], str]:
    """A field's messages, and the value it shows (what was typed, or the option
    chosen), checking it is marked invalid."""
    html = field_html(page, field_id)
    assert 'class="field invalid"' in html and 'aria-invalid="true"' in html, html
    return [unescape(message) for message in field_errors(html)], typed(page, field_id)


def typed(page: str, field_id: str) -> str:
    """The value a field shows: its input's value, or its select's chosen option."""
    html = field_html(page, field_id)
    found = re.search(r'<option selected value="([^"]*)"', html) or re.search(
        rf'<input[^>]* id="{re.escape(field_id)}"[^>]* value="([^"]*)"', html
    )
    assert found is not None, html
    return found.group(1)


def rule(
    field: str, message: str, breaks: Callable[[dict[str, Any]], bool]
) -> Callable[[dict[str, Any]], bool]:
    """A rule of the domain (a validator of a whole state): the states it ``breaks``
    are refused with ``message`` on ``field``."""

    def check(state: dict[str, Any]) -> bool:
        if breaks(state):
            raise marshmallow.ValidationError({field: [message]})
        return True

    return check


@pytest.fixture
def browser(credit_app: Flask) -> Browser:
    return Browser(credit_app)


def test_pages_ask_for_a_token_once_and_keep_the_apis_guard(credit_app: Flask) -> None:
    anonymous = Browser(credit_app, actor=None)
    response = anonymous.client.get("/app/users?status=active")
    assert response.status_code == 302
    assert response.headers["Location"] == "/app/login?next=/app/users?status%3Dactive"
    anonymous.get("/app/login")
    wrong = anonymous.submit("/app/login", {"token": "not-a-token-of-the-demo"}, 422)
    assert "This is not a token of the demo" in " ".join(field_errors(wrong))
    empty = anonymous.submit("/app/login", {"token": ""}, 422)
    assert field_errors(empty) == ["Paste a token of the demo."]
    # Only pages of this site are followed after logging in.
    response = anonymous.post("/app/login?next=//evil.example/", {"token": TOKENS["admin"]})
    assert response.headers["Location"] == "/app/users"

    # Logged in: the pages, the overview and the dashboard open without a header ...
    for url in ("/app/users", "/", "/dashboard/"):
        assert anonymous.client.get(url).status_code == 200, url
    # ... but the JSON API still wants the token in the request, as before.
    assert anonymous.client.get("/api/users").status_code == 401
    assert anonymous.client.get("/api/state/states").status_code == 401
    page = anonymous.submit("/app/logout")
    assert "Logged out" in " ".join(flashes(page))
    assert anonymous.client.get("/app/users").status_code == 302


def test_the_session_cookie_never_holds_the_token(credit_app: Flask) -> None:
    browser = Browser(credit_app)
    cookie = browser.client.get_cookie("session")
    assert cookie is not None
    assert TOKENS["admin"] not in cookie.value
    with browser.client.session_transaction() as session:
        assert TOKENS["admin"] not in repr(dict(session))


def test_the_viewer_looks_but_cannot_change(credit_app: Flask) -> None:
    user_id = active_user(admin_client(credit_app))["state_id"]
    viewer = Browser(credit_app, actor="viewer")
    page = viewer.get(f"/app/users/{user_id}")
    assert 'id="actor">viewer<' in page
    refused = viewer.post(f"/app/users/{user_id}/suspend", {"suspend-reason": "fraud"})
    assert refused.status_code == 403
    assert "The viewer token may only read" in refused.get_data(as_text=True)
    assert ok(admin_client(credit_app).get(f"/api/users/{user_id}"))["status"] == "active"


def test_a_form_without_its_csrf_token_is_refused_with_a_page(
    browser: Browser, credit_app: Flask
) -> None:
    user_id = active_user(admin_client(credit_app), "bob@example.com")["state_id"]
    for url, data in (
        ("/app/users/new", {"email": "ada@example.com", "full_name": "Ada", "country": "GB"}),
        (f"/app/users/{user_id}/suspend", {"suspend-reason": "fraud"}),
        ("/app/features", {"create-key": "x-ray", "create-description": "X"}),
    ):
        for form in (data, {**data, "csrf_token": "forged"}):
            response = browser.client.post(url, data=form)
            assert response.status_code == 400, url
            text = response.get_data(as_text=True)
            assert "CSRF token is missing or invalid" in text and "<html" in text
    api = admin_client(credit_app)
    assert ok(api.get(f"/api/users/{user_id}"))["status"] == "active"
    assert api.get(f"/api/users/{user_id_for('ada@example.com')}").status_code == 404
    # A login form too: nobody can log a browser in from another site.
    fresh = Browser(credit_app, actor=None)
    assert fresh.post("/app/login", {"token": TOKENS["admin"]}, csrf=False).status_code == 400


def test_register_shows_each_fields_message_and_then_the_user(
    browser: Browser, credit_app: Flask
) -> None:
    browser.get("/app/users/new")
    bad = browser.submit(
        "/app/users/new", {"email": "not-an-email", "full_name": "", "country": "gb"}, 422
    )
    assert field_errors(bad) == [
        "Not a valid email address.",
        "Missing data for required field.",
        "String does not match expected pattern.",
    ]
    assert 'value="not-an-email"' in bad  # what was typed is kept
    body = {"email": "Ada@Example.com", "full_name": "Ada Lovelace", "country": "GB"}
    page = browser.submit("/app/users/new", body)
    user_id = user_id_for("ada@example.com")
    assert "<h1>Ada Lovelace" in page and f"/dashboard/states/{user_id}" in page
    again = browser.submit("/app/users/new", body, 422)
    assert "is already registered" in " ".join(flashes(again))
    history = ok(admin_client(credit_app).get(f"/api/users/{user_id}/history"))["items"]
    assert [(r["transition"], r["actor"]) for r in history] == [("create", "admin")]


def test_verify_suspend_resume_from_the_users_page(browser: Browser, credit_app: Flask) -> None:
    api = admin_client(credit_app)
    user = ok(
        api.post(
            "/api/users", json={"email": "ada@example.com", "full_name": "A", "country": "GB"}
        ),
        201,
    )
    url = f"/app/users/{user['state_id']}"
    browser.get(url)
    page = browser.submit(f"{url}/verify")
    assert "Email verified" in " ".join(flashes(page))
    assert 'class="status status-active"' in page
    twice = browser.submit(f"{url}/verify")  # a refused transition is a message, not an error
    assert "already verified" in " ".join(flashes(twice))

    empty = browser.submit(f"{url}/suspend", {"suspend-reason": ""}, 422)
    assert field_errors(empty) == ["Missing data for required field."]
    page = browser.submit(f"{url}/suspend", {"suspend-reason": "fraud check"})
    assert "Your account is suspended: fraud check." in page
    page = browser.submit(f"{url}/resume", {"resume-reason": "cleared"})
    assert 'class="status status-active"' in page
    rows = ok(api.get(f"/api/users/{user['state_id']}/history"))["items"]
    assert [(r["transition"], r["actor"], r["reason"]) for r in rows][1:] == [
        ("activate", "admin", "email verified"),
        ("suspend", "admin", "fraud check"),
        ("resume", "admin", "cleared"),
    ]


def _payment_ids(page: str, action: str) -> list[str]:
    return re.findall(rf"/app/payments/(txn-[0-9a-f]+)/{action}", page)


def test_subscribe_pay_fail_and_pay_again(browser: Browser, credit_app: Flask) -> None:
    user_id = active_user(admin_client(credit_app))["state_id"]
    url = f"/app/users/{user_id}"
    browser.get(url)
    bad = browser.submit(
        f"{url}/subscriptions",
        {"subscribe-plan": "gold", "subscribe-billing_cycle": "monthly",
         "subscribe-currency": "EUR", "subscribe-trial_days": "forty"},
        422,
    )  # fmt: skip
    assert sorted(field_errors(bad)) == ["Not a valid choice.", "Not a valid integer value."]
    page = browser.submit(
        f"{url}/subscriptions",
        {"subscribe-plan": "pro", "subscribe-billing_cycle": "monthly",
         "subscribe-currency": "EUR", "subscribe-trial_days": "0"},
    )  # fmt: skip
    (sub_id,) = re.findall(r"/app/subscriptions/(sub-[0-9a-f]+)/pay", page)
    assert "waiting for its first payment" in page

    page = browser.submit(f"/app/subscriptions/{sub_id}/pay")
    (first,) = _payment_ids(page, "succeed")
    page = browser.submit(f"/app/payments/{first}/succeed")
    assert "The payment succeeded" in " ".join(flashes(page))
    assert ok(admin_client(credit_app).get(f"/api/subscriptions/{sub_id}"))["status"] == "active"

    page = browser.submit(f"/app/subscriptions/{sub_id}/pay")
    (renewal,) = _payment_ids(page, "succeed")
    empty = browser.submit(f"/app/payments/{renewal}/fail", {f"fail-{renewal}-reason": ""}, 422)
    assert field_errors(empty) == ["Missing data for required field."]
    page = browser.submit(
        f"/app/payments/{renewal}/fail", {f"fail-{renewal}-reason": "card declined"}
    )
    assert re.search(r"<h1>\S+ <span class=\"status status-suspended\"", page)
    assert flashes(page) == [
        "The payment failed.",
        "The billing rules suspended the user: see the notifications.",
    ]
    assert f"Your account is suspended: payment {renewal} failed: card declined." in page
    assert "Your pro subscription is suspended (payment failed); pay to resume it." in page
    payment_page = browser.get(f"/app/payments/{renewal}")
    assert 'status-expired" data-status="expired">failed<' in payment_page
    assert '<strong id="allowed">delete</strong>' in payment_page

    page = browser.submit(f"/app/subscriptions/{sub_id}/pay")
    (retry,) = _payment_ids(page, "succeed")
    browser.get(f"/app/payments/{retry}")
    page = browser.submit(f"/app/payments/{retry}/succeed", {"back": "payment"})
    assert 'data-status="active">settled<' in page
    api = admin_client(credit_app)
    assert ok(api.get(f"/api/users/{user_id}"))["status"] == "active"
    assert ok(api.get(f"/api/subscriptions/{sub_id}"))["status"] == "active"


def test_one_off_payments_and_the_lists(browser: Browser, credit_app: Flask) -> None:
    user_id = active_user(admin_client(credit_app))["state_id"]
    url = f"/app/users/{user_id}"
    browser.get(url)
    bad = browser.submit(f"{url}/payments", {"pay-amount_cents": "-5", "pay-currency": "XXX"}, 422)
    assert sorted(field_errors(bad)) == [
        "Must be greater than or equal to 1 and less than or equal to 10000000.",
        "Not a valid choice.",
    ]
    page = browser.submit(
        f"{url}/payments",
        {"pay-amount_cents": "1234", "pay-currency": "GBP", "pay-description": "t-shirt"},
    )
    (txn,) = _payment_ids(page, "succeed")
    listed = browser.get("/app/payments?status=created")
    assert txn in listed and "12.34 GBP" in listed and ">pending<" in listed
    assert txn not in browser.get("/app/payments?status=expired")
    assert "/dashboard/states/" + txn in browser.get(f"/app/payments/{txn}")
    assert user_id in browser.get("/app/users?status=active")
    found = browser.client.get("/app/users?email=ADA@example.com")
    assert found.headers["Location"] == f"/app/users/{user_id}"
    assert "No user has the email address" in browser.get("/app/users?email=bob@example.com")
    assert "No users" in browser.get("/app/users?status=suspended")
    browser.get("/app/subscriptions")
    browser.get("/app/users/nobody", 404)
    browser.get(f"/app/payments/{user_id}", 404)  # a user is not a payment


def test_feature_flags_from_the_page(browser: Browser, credit_app: Flask) -> None:
    user_id = active_user(admin_client(credit_app))["state_id"]
    browser.get("/app/features")
    bad = browser.submit(
        "/app/features",
        {"create-key": "Bad Key", "create-description": "", "create-rollout_percentage": "x"},
        422,
    )
    assert sorted(field_errors(bad)) == [
        "2 to 40 characters: lowercase letters, digits and &#39;-&#39;",
        "Missing data for required field.",
        "Not a valid integer value.",
    ]
    created = {"create-key": "new-checkout", "create-description": "the new checkout",
               "create-rollout_percentage": "100"}  # fmt: skip
    page = browser.submit("/app/features", created)
    assert 'data-key="new-checkout"' in page
    page = browser.submit("/app/features/new-checkout/enable")
    assert "new-checkout is on." in flashes(page)
    on = browser.get("/app/features?email=ada@example.com")
    assert re.search(r'data-feature="new-checkout"><span class="status status-on"', on)
    high = browser.submit(
        "/app/features/new-checkout/rollout",
        {"rollout-new-checkout-rollout_percentage": "150"},
        422,
    )
    assert field_errors(high) == [
        "Must be greater than or equal to 0 and less than or equal to 100."
    ]
    browser.submit("/app/features/new-checkout/disable")
    user_page = browser.get(f"/app/users/{user_id}")
    assert re.search(r'data-feature="new-checkout"><span class="status status-off"', user_page)
    assert browser.post("/app/features/nothing/enable").status_code == 302  # a flash: not found
    assert browser.post("/app/features/nothing/rollout", {}).status_code == 404


def test_login_sessions_from_the_page(browser: Browser, credit_app: Flask) -> None:
    browser.get("/app/sessions")
    bad = browser.submit("/app/sessions", {"email": "nobody"}, 422)
    assert field_errors(bad) == ["Not a valid email address."]
    unknown = browser.submit("/app/sessions", {"email": "nobody@example.com"}, 422)
    assert "No user with id" in " ".join(flashes(unknown))
    assert typed(unknown, "email") == "nobody@example.com"
    active_user(admin_client(credit_app))
    page = browser.submit("/app/sessions", {"email": "ada@example.com"})
    (session_id,) = re.findall(r'<code id="session-id">(sess-[0-9a-f]+)</code>', page)
    assert f"/dashboard/states/{session_id}" in page
    found = browser.client.get(f"/app/sessions?session_id={session_id}")
    assert found.headers["Location"] == f"/app/sessions/{session_id}"
    browser.submit(f"/app/sessions/{session_id}/close")
    browser.get(f"/app/sessions/{session_id}", 404)


# -- a refused form is shown again: 422, what was typed, each field's message ----------

NO_TRIAL = "The team plan has no free trial."


def test_a_subscription_the_domain_refuses_keeps_the_form(
    browser: Browser, credit_app: Flask, manager: StateManager
) -> None:
    team_trial = rule(
        "trial_days",
        NO_TRIAL,
        lambda s: s["data"]["plan"] == "team" and s["data"]["trial_ends_at"] is not None,
    )
    manager.register_validator(StateType.SUBSCRIPTION, team_trial)
    url = f"/app/users/{active_user(admin_client(credit_app))['state_id']}"
    browser.get(url)
    form = {"subscribe-plan": "team", "subscribe-billing_cycle": "yearly",
            "subscribe-currency": "GBP", "subscribe-trial_days": "14"}  # fmt: skip
    refused = browser.submit(f"{url}/subscriptions", form, 422)
    assert refused_field(refused, "subscribe-trial_days") == ([NO_TRIAL], "14")
    chosen = [typed(refused, f"subscribe-{name}") for name in ("plan", "billing_cycle", "currency")]
    assert chosen == ["team", "yearly", "GBP"]
    assert "failed validation" in " ".join(flashes(refused))
    assert "No subscription." in refused

    done = browser.post(f"{url}/subscriptions", {**form, "subscribe-trial_days": "0"})
    assert done.status_code == 302 and done.headers["Location"] == f"{url}#billing"
    # A refusal without field messages (one live subscription per user) keeps the form too.
    again = browser.submit(f"{url}/subscriptions", {**form, "subscribe-plan": "basic"}, 422)
    assert "already has subscription" in " ".join(flashes(again))
    assert typed(again, "subscribe-plan") == "basic"


ONE_OFF_LIMIT = "A one-off payment is at most 500.00; subscribe for more."


def test_a_one_off_payment_the_domain_refuses_keeps_the_form(
    browser: Browser, credit_app: Flask, manager: StateManager
) -> None:
    limit = rule(
        "amount_cents",
        ONE_OFF_LIMIT,
        lambda s: s["data"]["kind"] == "one_off" and s["data"]["amount_cents"] > 50_000,
    )
    manager.register_validator(StateType.TRANSACTION, limit)
    url = f"/app/users/{active_user(admin_client(credit_app))['state_id']}"
    browser.get(url)
    form = {"pay-amount_cents": "60000", "pay-currency": "GBP", "pay-description": "a sofa"}
    refused = browser.submit(f"{url}/payments", form, 422)
    assert refused_field(refused, "pay-amount_cents") == ([ONE_OFF_LIMIT], "60000")
    assert (typed(refused, "pay-currency"), typed(refused, "pay-description")) == ("GBP", "a sofa")
    assert "failed validation" in " ".join(flashes(refused))
    assert "No payment." in refused

    done = browser.post(f"{url}/payments", {**form, "pay-amount_cents": "45000"})
    assert done.status_code == 302 and done.headers["Location"] == f"{url}#billing"
    assert len(_payment_ids(browser.get(url), "succeed")) == 1


TICKET = "Name the support ticket, e.g. 'fraud check #123'."
WHO = "Say who cleared the suspension."


def test_a_suspension_or_resumption_the_domain_refuses_keeps_the_form(
    browser: Browser, credit_app: Flask, manager: StateManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticket = rule(
        "reason",
        TICKET,
        lambda s: s["status"] == "suspended" and "#" not in s["data"]["suspended_reason"],
    )
    manager.register_validator(StateType.USER, ticket)
    user_id = active_user(admin_client(credit_app))["state_id"]
    url = f"/app/users/{user_id}"
    browser.get(url)
    refused = browser.submit(f"{url}/suspend", {"suspend-reason": "fraud"}, 422)
    assert refused_field(refused, "suspend-reason") == ([TICKET], "fraud")
    assert "failed validation" in " ".join(flashes(refused))
    assert 'class="status status-active"' in refused

    done = browser.post(f"{url}/suspend", {"suspend-reason": "fraud check #12"})
    assert done.status_code == 302 and done.headers["Location"] == url

    def who_cleared(*_args: Any, **_kwargs: Any) -> dict[str, Any]:
        raise ValidationError("The resumption was refused.", {"reason": [WHO]})

    with monkeypatch.context() as patch:
        patch.setattr(accounts, "resume_user", who_cleared)
        refused = browser.submit(f"{url}/resume", {"resume-reason": "cleared"}, 422)
    assert refused_field(refused, "resume-reason") == ([WHO], "cleared")
    assert "The resumption was refused." in flashes(refused)
    assert 'class="status status-suspended"' in refused

    done = browser.post(f"{url}/resume", {"resume-reason": "cleared by Bob"})
    assert done.status_code == 302 and done.headers["Location"] == url
    # A page gone stale (the user was resumed meanwhile): the page as it is now, 422.
    stale = browser.submit(f"{url}/resume", {"resume-reason": "cleared"}, 422)
    assert flashes(stale) and 'class="status status-active"' in stale
    assert ok(admin_client(credit_app).get(f"/api/users/{user_id}"))["status"] == "active"


DECLINE_CODE = "Give the processor's decline code, e.g. 'card declined (05)'."


def test_a_failure_the_domain_refuses_keeps_the_form_on_either_page(
    browser: Browser, credit_app: Flask, manager: StateManager
) -> None:
    api = admin_client(credit_app)
    user_id = active_user(api)["state_id"]
    body = {"user_id": user_id, "amount_cents": 1234}
    txn = ok(api.post("/api/payments", json=body), 201)["state_id"]
    code = rule(
        "reason",
        DECLINE_CODE,
        lambda s: s["status"] == "expired" and "(" not in s["data"]["failure_reason"],
    )
    manager.register_validator(StateType.TRANSACTION, code)
    reason = f"fail-{txn}-reason"
    browser.get(f"/app/payments/{txn}")
    refused = browser.submit(
        f"/app/payments/{txn}/fail", {reason: "card declined", "back": "payment"}, 422
    )
    assert refused_field(refused, reason) == ([DECLINE_CODE], "card declined")
    assert "<h1>Payment 12.34 EUR" in refused and "failed validation" in " ".join(flashes(refused))
    from_user_page = browser.submit(f"/app/payments/{txn}/fail", {reason: "declined"}, 422)
    assert refused_field(from_user_page, reason) == ([DECLINE_CODE], "declined")
    assert f'action="/app/users/{user_id}/subscriptions"' in from_user_page

    form = {reason: "card declined (05)", "back": "payment"}
    done = browser.post(f"/app/payments/{txn}/fail", form)
    assert done.status_code == 302 and done.headers["Location"] == f"/app/payments/{txn}"


EARLY = "At most 50% before the flag is enabled."


def test_a_flag_the_domain_refuses_keeps_the_form(
    browser: Browser, credit_app: Flask, manager: StateManager
) -> None:
    early = rule(
        "rollout_percentage",
        EARLY,
        lambda s: s["status"] == "created" and s["data"]["rollout_percentage"] > 50,
    )
    manager.register_validator(StateType.FEATURE, early)
    browser.get("/app/features")
    created = {"create-key": "new-checkout", "create-description": "the new checkout",
               "create-rollout_percentage": "0"}  # fmt: skip
    browser.submit("/app/features", created)
    field = "rollout-new-checkout-rollout_percentage"
    refused = browser.submit("/app/features/new-checkout/rollout", {field: "80"}, 422)
    assert refused_field(refused, field) == ([EARLY], "80")
    assert "failed validation" in " ".join(flashes(refused))
    done = browser.post("/app/features/new-checkout/rollout", {field: "40"})
    assert done.status_code == 302 and done.headers["Location"] == "/app/features"
    assert "new-checkout: rollout set to 40%." in flashes(browser.get("/app/features"))

    # The key is taken: the form is shown again with what was typed (no field message).
    twice = browser.submit("/app/features", {**created, "create-description": "again"}, 422)
    assert "already exists" in " ".join(flashes(twice))
    assert (typed(twice, "create-key"), typed(twice, "create-description")) == (
        "new-checkout",
        "again",
    )


def test_an_app_with_a_hook_of_its_own_needs_no_login(tmp_path: Path) -> None:
    app = create_app(
        {"TIERED_STATE_LOCAL_DIR": str(tmp_path), "TIERED_STATE_ACCESS_CONTROL": "allow-all"}
    )
    try:
        client = app.test_client()
        assert client.get("/app/users").status_code == 200
        login = client.get("/app/login")
        assert login.status_code == 302 and login.headers["Location"] == "/app/users"
    finally:
        get_app_state(app).close()
        StateManager.reset_instance()

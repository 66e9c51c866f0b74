"""What a suspension tells the user, what a failed first payment does, and a payment's own
lifecycle -- whichever way the change comes in (this app's API or the extension's REST API)."""

from __future__ import annotations

import re
from typing import Any

from flask.testing import FlaskClient

from example_app.billing import TRANSACTION_LABELS

from .conftest import active_user, error, ok, subscribed_user


def _notices(client: FlaskClient, user_id: str) -> list[tuple[str, str]]:
    items = ok(client.get(f"/api/users/{user_id}/notifications"))["items"]
    return sorted((n["data"]["kind"], n["data"]["message"]) for n in items)


def test_a_suspension_through_the_rest_api_notifies_its_real_reason(client: FlaskClient) -> None:
    user_id = active_user(client)["state_id"]
    transition = {"transition": "suspend", "reason": "payment failed"}
    suspended = ok(client.post(f"/api/state/states/{user_id}/transitions", json=transition))
    assert suspended["status"] == "suspended"
    assert _notices(client, user_id) == [
        ("user_suspended", "Your account is suspended: payment failed.")
    ]


def test_a_failed_renewal_notifies_the_failure_it_came_from(client: FlaskClient) -> None:
    user, subscription = subscribed_user(client)
    payment = ok(client.post(f"/api/subscriptions/{subscription['state_id']}/renew", json={}), 201)
    ok(client.post(f"/api/payments/{payment['state_id']}/fail", json={"reason": "card declined"}))
    notices = dict(_notices(client, user["state_id"]))
    assert notices["user_suspended"] == (
        f"Your account is suspended: payment {payment['state_id']} failed: card declined."
    )
    assert "payment failed" in notices["subscription_suspended"]


def test_a_failed_first_payment_leaves_the_subscription_waiting_and_says_so(
    client: FlaskClient,
) -> None:
    user_id = active_user(client)["state_id"]
    body = {"user_id": user_id, "plan": "basic", "trial_days": 7}
    subscription = ok(client.post("/api/subscriptions", json=body), 201)
    sub_id = subscription["state_id"]
    first = ok(client.post(f"/api/subscriptions/{sub_id}/renew", json={}), 201)
    ok(client.post(f"/api/payments/{first['state_id']}/fail", json={"reason": "card declined"}))

    # It never started: nothing to suspend, and its trial runs on.
    waiting = ok(client.get(f"/api/subscriptions/{sub_id}"))
    assert (waiting["status"], waiting["version"]) == ("created", 1)
    timers = ok(client.get(f"/api/subscriptions/{sub_id}/timers"))["items"]
    assert [t["reason"] for t in timers if t["status"] == "scheduled"] in ([], ["trial ended"])
    notices = dict(_notices(client, user_id))
    assert notices["payment_failed"] == (
        "Your first payment for basic (monthly) failed (card declined); the subscription "
        "starts when a payment succeeds."
    )
    assert "subscription_suspended" not in notices
    # ... as the home page says.
    home = " ".join(client.get("/").get_data(as_text=True).split())
    assert "one still waiting for its first payment stays <em>created</em>" in home

    # Paying starts it and resumes the user the failure suspended.
    second = ok(client.post(f"/api/subscriptions/{sub_id}/renew", json={}), 201)
    ok(client.post(f"/api/payments/{second['state_id']}/succeed", json={}))
    assert ok(client.get(f"/api/subscriptions/{sub_id}"))["status"] == "active"
    assert ok(client.get(f"/api/users/{user_id}"))["status"] == "active"


def _payment(client: FlaskClient) -> dict[str, Any]:
    user_id = active_user(client)["state_id"]
    return ok(client.post("/api/payments", json={"user_id": user_id, "amount_cents": 500}), 201)


def test_a_payment_has_its_own_lifecycle(client: FlaskClient) -> None:
    payment = _payment(client)
    url = f"/api/state/states/{payment['state_id']}/transitions"
    refused = error(client.post(url, json={"transition": "suspend"}), 409, "invalid_transition")
    assert "suspend" in refused["message"]
    assert sorted(refused["details"]["allowed"]) == ["activate", "delete", "expire", "update"]
    settled = ok(client.post(f"/api/payments/{payment['state_id']}/succeed", json={}))
    assert settled["status"] == "active"
    # Settled is final: no resume, no expire, no update.
    for transition in ("resume", "expire", "update"):
        error(client.post(url, json={"transition": transition}), 409, "invalid_transition")
    assert TRANSACTION_LABELS["created"] == "pending"
    assert (TRANSACTION_LABELS["active"], TRANSACTION_LABELS["expired"]) == ("settled", "failed")


def test_the_dashboard_draws_a_payments_lifecycle_not_a_users(client: FlaskClient) -> None:
    payment = _payment(client)

    def drawn(state_id: str) -> set[str]:
        page = client.get(f"/dashboard/states/{state_id}").get_data(as_text=True)
        return set(re.findall(r'<g class="node[^"]*" data-status="(\w+)"', page))

    assert drawn(payment["state_id"]) == {"created", "active", "expired", "deleted"}
    assert "suspended" in drawn(payment["data"]["user_id"])

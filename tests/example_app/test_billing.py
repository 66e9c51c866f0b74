"""Subscriptions and payments, and the billing rules the callbacks and signals run."""

from __future__ import annotations

from flask.testing import FlaskClient

from flask_tiered_state import signals
from flask_tiered_state.domain.manager import StateManager

from .conftest import active_user, error, ok, subscribed_user


def test_a_first_payment_starts_the_subscription(client: FlaskClient) -> None:
    user = active_user(client)
    body = {"user_id": user["state_id"], "plan": "team", "billing_cycle": "yearly"}
    subscription = ok(client.post("/api/subscriptions", json=body), 201)
    assert subscription["status"] == "created"
    assert subscription["data"]["price_cents"] == 79_000
    sub_id = subscription["state_id"]

    body = {"user_id": user["state_id"], "subscription_id": sub_id}
    payment = ok(client.post("/api/payments", json=body), 201)
    assert payment["status"] == "created" and payment["data"]["amount_cents"] == 79_000
    paid = ok(client.post(f"/api/payments/{payment['state_id']}/succeed", json={}))
    assert paid["status"] == "active" and paid["data"]["settled_at"]

    started = ok(client.get(f"/api/subscriptions/{sub_id}"))
    assert started["status"] == "active"
    assert started["data"]["last_payment_id"] == payment["state_id"]
    assert started["data"]["current_period_start"] < started["data"]["current_period_end"]
    history = ok(client.get(f"/api/state/states/{sub_id}/history"))["items"]
    assert [(r["transition"], r["actor"]) for r in history] == [
        ("create", "admin"),  # the token's actor
        ("activate", "billing-bot"),
    ]


def test_a_failed_payment_suspends_subscription_and_user_and_notifies(
    client: FlaskClient, manager: StateManager
) -> None:
    user, subscription = subscribed_user(client)
    user_id, sub_id = user["state_id"], subscription["state_id"]
    payment = ok(client.post(f"/api/subscriptions/{sub_id}/renew", json={}), 201)
    seen: list[tuple[str, str]] = []
    with signals.state_transitioned.connected_to(
        lambda sender, **kw: seen.append((kw["state_id"], kw["to_status"])), sender=manager
    ):
        failed = ok(
            client.post(
                f"/api/payments/{payment['state_id']}/fail", json={"reason": "card declined"}
            )
        )
    assert failed["status"] == "expired" and failed["data"]["failure_reason"] == "card declined"
    assert seen == [(payment["state_id"], "expired"), (sub_id, "suspended"), (user_id, "suspended")]
    assert ok(client.get(f"/api/subscriptions/{sub_id}"))["status"] == "suspended"
    suspended = ok(client.get(f"/api/users/{user_id}"))
    assert suspended["status"] == "suspended"
    assert suspended["data"]["suspended_reason"] == "payment failed"

    kinds = {
        n["data"]["kind"] for n in ok(client.get(f"/api/users/{user_id}/notifications"))["items"]
    }
    assert kinds == {"user_suspended", "subscription_suspended"}
    error(client.post("/api/sessions", json={"email": "ada@example.com"}), 409, "business_rule")


def test_paying_again_resumes_subscription_and_user(client: FlaskClient) -> None:
    user, subscription = subscribed_user(client)
    user_id, sub_id = user["state_id"], subscription["state_id"]
    failing = ok(client.post(f"/api/subscriptions/{sub_id}/renew", json={}), 201)
    ok(client.post(f"/api/payments/{failing['state_id']}/fail", json={"reason": "expired card"}))
    retry = ok(client.post(f"/api/subscriptions/{sub_id}/renew", json={}), 201)
    ok(client.post(f"/api/payments/{retry['state_id']}/succeed", json={}))

    resumed = ok(client.get(f"/api/subscriptions/{sub_id}"))
    assert resumed["status"] == "active" and resumed["data"]["renewals"] == 1
    assert resumed["data"]["last_payment_id"] == retry["state_id"]
    assert ok(client.get(f"/api/users/{user_id}"))["status"] == "active"
    payments = ok(client.get(f"/api/users/{user_id}/transactions"))
    assert payments["total"] == 3
    assert (
        ok(client.get("/api/payments?status=expired"))["items"][0]["state_id"]
        == failing["state_id"]
    )


def test_plan_changes_cancellation_and_rules(client: FlaskClient) -> None:
    user, subscription = subscribed_user(client, plan="basic")
    sub_id = subscription["state_id"]
    changed = ok(
        client.post(
            f"/api/subscriptions/{sub_id}/plan", json={"plan": "pro", "billing_cycle": "yearly"}
        )
    )
    assert (changed["name"], changed["data"]["price_cents"]) == ("pro (yearly)", 29_000)
    second = {"user_id": user["state_id"], "plan": "team"}
    error(client.post("/api/subscriptions", json=second), 409, "business_rule")
    cancelled = ok(client.post(f"/api/subscriptions/{sub_id}/cancel", json={"reason": "moving"}))
    assert cancelled["status"] == "expired"
    error(client.post(f"/api/subscriptions/{sub_id}/renew", json={}), 409, "business_rule")
    assert ok(client.post("/api/subscriptions", json=second), 201)["status"] == "created"
    assert ok(client.get("/api/plans"))["plans"]["pro"]["monthly"] == 2_900


def test_billing_input_is_checked(client: FlaskClient, manager: StateManager) -> None:
    user_id = active_user(client)["state_id"]
    newcomer = ok(
        client.post(
            "/api/users", json={"email": "new@example.com", "full_name": "N", "country": "FR"}
        ),
        201,
    )
    body = {"user_id": newcomer["state_id"], "plan": "pro"}
    error(client.post("/api/subscriptions", json=body), 409, "business_rule")
    error(
        client.post("/api/subscriptions", json={"user_id": user_id, "plan": "gold"}),
        422,
        "validation_error",
    )
    error(client.post("/api/payments", json={"user_id": user_id}), 409, "business_rule")
    bad = {"user_id": user_id, "amount_cents": -5, "currency": "XXX"}
    errors = error(client.post("/api/payments", json=bad), 422, "validation_error")["details"]
    assert set(errors["errors"]) == {"amount_cents", "currency"}
    one_off = ok(client.post("/api/payments", json={"user_id": user_id, "amount_cents": 1234}), 201)
    assert one_off["data"]["kind"] == "one_off"
    error(
        client.post(f"/api/payments/{one_off['state_id']}/fail", json={}), 422, "validation_error"
    )
    ok(client.post(f"/api/payments/{one_off['state_id']}/succeed", json={}))
    error(
        client.post(f"/api/payments/{one_off['state_id']}/succeed", json={}),
        409,
        "invalid_transition",
    )
    error(client.get(f"/api/subscriptions/{one_off['state_id']}"), 404, "not_found")


def test_the_validators_guard_every_way_in(client: FlaskClient) -> None:
    """The marshmallow schema and the price rule run on writes through the REST API too."""
    _, subscription = subscribed_user(client)
    path = f"/api/state/states/{subscription['state_id']}/transitions"
    cheap = {**subscription["data"], "price_cents": 1}
    body = {"transition": "update", "data": cheap}
    error(client.post(path, json=body), 422, "validation_error")
    body["data"] = {**subscription["data"], "plan": "platinum"}
    error(client.post(path, json=body), 422, "validation_error")
    raw = {"state_id": "usr-raw", "type": "user", "data": {"email": "x"}}
    error(client.post("/api/state/states", json=raw), 422, "validation_error")

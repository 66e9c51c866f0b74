"""Subscriptions end by themselves (durable timers), and the asynchronous callbacks of
the outbox: receipts and notices recorded once per event, whatever the deliveries."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app.core import parse_iso
from example_app.terms import PERIOD_ENDED, TRIAL_ENDED
from example_app.wiring import ASYNC_KEYS, NOTIFICATION
from flask_tiered_state.domain.dispatcher import DispatchReport, EventDispatcher
from flask_tiered_state.domain.manager import StateManager

from .conftest import active_user, error, ok, subscribed_user
from .test_operations import seed


def dispatch(manager: StateManager, at: datetime | None = None) -> DispatchReport:
    """Run a dispatcher until it finds nothing to do, its clock at ``at`` (default: now)."""
    clock = time.time if at is None else (lambda: at.timestamp())
    with EventDispatcher(manager, clock=clock) as dispatcher:
        return dispatcher.run(once=True)


def end_timers(manager: StateManager, state_id: str, status: str = "scheduled") -> list[Any]:
    return [
        t for t in manager.get_scheduled(state_id, status=status) if t["transition"] == "expire"
    ]


def notifications(manager: StateManager, user_id: str, kind: str) -> list[dict[str, Any]]:
    found = manager.search_states(NOTIFICATION, {"data.user_id": user_id, "data.kind": kind})
    return list(found.items)


def last_change(manager: StateManager, state_id: str) -> dict[str, Any]:
    return manager.get_state_history(state_id)[-1]


def test_a_paid_period_ends_at_its_end_and_not_a_second_before(
    client: FlaskClient, manager: StateManager
) -> None:
    user, subscription = subscribed_user(client)
    sub_id, end = subscription["state_id"], parse_iso(subscription["data"]["current_period_end"])
    assert end_timers(manager, sub_id) == []  # set by an asynchronous callback: not yet

    report = dispatch(manager)
    assert report.timers_applied == 0 and report.dead == 0
    [timer] = end_timers(manager, sub_id)
    assert timer["due_at"] == end.timestamp() and timer["reason"] == PERIOD_ENDED
    assert timer["if_version"] == subscription["version"]
    listed = ok(client.get(f"/api/subscriptions/{sub_id}/timers"))["items"]
    assert [t["timer_id"] for t in listed] == [timer["timer_id"]]

    assert dispatch(manager, at=end - timedelta(seconds=1)).timers_applied == 0
    assert manager.get_state(sub_id)["status"] == "active"  # type: ignore[index]

    assert dispatch(manager, at=end).timers_applied == 1
    ended = manager.get_state(sub_id)
    assert ended is not None and ended["status"] == "expired"
    change = last_change(manager, sub_id)
    assert (change["transition"], change["actor"], change["reason"]) == (
        "expire",
        "scheduler",
        PERIOD_ENDED,
    )
    assert [t["timer_id"] for t in end_timers(manager, sub_id, "applied")] == [timer["timer_id"]]
    [notice] = notifications(manager, user["state_id"], "subscription_expired")
    assert notice["data"]["message"].startswith("Your pro (monthly) subscription has ended")
    assert dispatch(manager, at=end + timedelta(days=400)).work == 0  # applied once only


def test_a_renewal_before_the_end_moves_the_timer(
    client: FlaskClient, manager: StateManager
) -> None:
    _, subscription = subscribed_user(client)
    sub_id, first_end = subscription["state_id"], subscription["data"]["current_period_end"]
    dispatch(manager)
    [old] = end_timers(manager, sub_id)

    payment = ok(client.post(f"/api/subscriptions/{sub_id}/renew", json={}), 201)
    ok(client.post(f"/api/payments/{payment['state_id']}/succeed", json={}))
    renewed = ok(client.get(f"/api/subscriptions/{sub_id}"))
    assert renewed["data"]["current_period_start"] == first_end  # the next period follows
    new_end = parse_iso(renewed["data"]["current_period_end"])
    assert new_end == parse_iso(first_end) + timedelta(days=30)

    dispatch(manager)
    [new] = end_timers(manager, sub_id)
    assert new["due_at"] == new_end.timestamp() and new["if_version"] == renewed["version"]
    assert [t["timer_id"] for t in end_timers(manager, sub_id, "cancelled")] == [old["timer_id"]]

    after_first_end = parse_iso(first_end) + timedelta(seconds=1)
    assert dispatch(manager, at=after_first_end).timers_applied == 0
    assert manager.get_state(sub_id)["status"] == "active"  # type: ignore[index]
    assert dispatch(manager, at=new_end).timers_applied == 1
    assert manager.get_state(sub_id)["status"] == "expired"  # type: ignore[index]


def test_a_renewal_wins_even_when_the_dispatcher_is_behind(
    client: FlaskClient, manager: StateManager
) -> None:
    """The renewal's event is not handled yet when the old end comes: the old timer's
    if_version no longer matches, so it is skipped (and recorded), not applied."""
    _, subscription = subscribed_user(client)
    sub_id, first_end = (
        subscription["state_id"],
        parse_iso(subscription["data"]["current_period_end"]),
    )
    dispatch(manager)
    payment = ok(client.post(f"/api/subscriptions/{sub_id}/renew", json={}), 201)
    ok(client.post(f"/api/payments/{payment['state_id']}/succeed", json={}))

    report = dispatch(manager, at=first_end + timedelta(seconds=1))
    assert (report.timers_applied, report.timers_skipped) == (0, 1)
    assert manager.get_state(sub_id)["status"] == "active"  # type: ignore[index]
    [skipped] = end_timers(manager, sub_id, "skipped")
    assert "if_version" in skipped["outcome"]
    [armed] = end_timers(manager, sub_id)
    assert armed["due_at"] == (first_end + timedelta(days=30)).timestamp()


def test_a_free_trial_ends_unless_it_was_paid_for(
    client: FlaskClient, manager: StateManager
) -> None:
    user = active_user(client)
    body = {"user_id": user["state_id"], "plan": "basic", "trial_days": 14}
    trial = ok(client.post("/api/subscriptions", json=body), 201)
    trial_end = parse_iso(trial["data"]["trial_ends_at"])
    assert trial["status"] == "created"
    assert timedelta(days=14) - timedelta(seconds=5) < trial_end - datetime.now(trial_end.tzinfo)
    dispatch(manager)
    [timer] = end_timers(manager, trial["state_id"])
    assert (timer["reason"], timer["if_version"]) == (TRIAL_ENDED, 1)

    assert dispatch(manager, at=trial_end - timedelta(seconds=1)).timers_applied == 0
    assert manager.get_state(trial["state_id"])["status"] == "created"  # type: ignore[index]
    assert dispatch(manager, at=trial_end).timers_applied == 1
    assert manager.get_state(trial["state_id"])["status"] == "expired"  # type: ignore[index]
    change = last_change(manager, trial["state_id"])
    assert (change["actor"], change["reason"]) == ("scheduler", TRIAL_ENDED)
    [notice] = notifications(manager, user["state_id"], "subscription_expired")
    assert "free trial of basic (monthly)" in notice["data"]["message"]

    # Paid during the trial: the paid period follows the trial, and the trial does not end it.
    trial = ok(client.post("/api/subscriptions", json=body), 201)
    trial_end = parse_iso(trial["data"]["trial_ends_at"])
    dispatch(manager)
    payment = ok(client.post(f"/api/subscriptions/{trial['state_id']}/renew", json={}), 201)
    ok(client.post(f"/api/payments/{payment['state_id']}/succeed", json={}))
    paid = ok(client.get(f"/api/subscriptions/{trial['state_id']}"))
    assert paid["status"] == "active"
    assert paid["data"]["current_period_start"] == trial["data"]["trial_ends_at"]
    dispatch(manager)
    [timer] = end_timers(manager, trial["state_id"])
    assert timer["reason"] == PERIOD_ENDED
    assert timer["due_at"] == (trial_end + timedelta(days=30)).timestamp()
    assert dispatch(manager, at=trial_end + timedelta(seconds=1)).timers_applied == 0
    assert manager.get_state(trial["state_id"])["status"] == "active"  # type: ignore[index]

    too_long = {**body, "trial_days": 31}
    errors = error(client.post("/api/subscriptions", json=too_long), 422, "validation_error")
    assert "trial_days" in errors["details"]["errors"]


def test_a_receipt_is_sent_once_even_when_its_event_is_delivered_twice(
    client: FlaskClient, manager: StateManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, subscription = subscribed_user(client)
    payment_id = subscription["data"]["last_payment_id"]
    assert notifications(manager, user["state_id"], "payment_receipt") == []  # not in the request
    [pending] = [e for e in manager.get_events("pending") if e["callback"] == ASYNC_KEYS["receipt"]]
    assert (pending["state_id"], pending["event"]) == (payment_id, "transaction_activated")

    # The dispatcher runs the callbacks, then dies before it records the deliveries.
    def die(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the dispatcher died before recording the deliveries")

    with monkeypatch.context() as patch, EventDispatcher(manager) as dispatcher:
        patch.setattr(manager.outbox, "delivered", die)
        with pytest.raises(RuntimeError, match="died"):
            dispatcher.run_once()
    assert len(notifications(manager, user["state_id"], "payment_receipt")) == 1
    assert pending["id"] in {e["id"] for e in manager.get_events("pending")}

    assert dispatch(manager).delivered >= 1  # the same event, delivered again
    [receipt] = notifications(manager, user["state_id"], "payment_receipt")
    assert receipt["data"]["event_id"] == pending["event_id"]
    assert receipt["data"]["related_id"] == payment_id
    assert "29.00 EUR" in receipt["data"]["message"]
    assert manager.get_events("pending") == [] and manager.get_events("dead") == []
    assert len(end_timers(manager, subscription["state_id"])) == 1  # its timer set once too
    assert end_timers(manager, subscription["state_id"], "cancelled") == []


def test_seeding_then_dispatching_then_seeding_again_adds_nothing(
    credit_app: Flask, manager: StateManager
) -> None:
    seed(credit_app)
    assert manager.get_events("pending")  # receipts and subscription timers to deliver
    result = credit_app.test_cli_runner().invoke(args=["state", "dispatch", "--once", "--json"])
    assert result.exit_code == 0, result.output
    first = json.loads(result.stdout)
    assert first["delivered"] > 0 and first["dead"] == first["failed"] == 0
    timers = manager.get_scheduled(status=None, limit=1000)
    assert timers and all(t["transition"] == "expire" for t in timers)
    receipts = manager.search_states(
        NOTIFICATION, {"data.kind": "payment_receipt"}, per_page=1
    ).total
    assert receipts > 0

    again = seed(credit_app)
    assert set(again["created"].values()) == {0} and set(again["transitioned"].values()) == {0}
    assert manager.get_events("pending") == []
    assert dispatch(manager).work == 0
    assert manager.get_scheduled(status=None, limit=1000) == timers

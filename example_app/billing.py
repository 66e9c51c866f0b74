"""Subscriptions and payment transactions, and how they react to each other.

A payment transaction is CREATEd pending, then ACTIVATEd when the payment succeeds
(status ``active`` = settled) or EXPIREd when it fails. The billing callbacks
(registered in :mod:`example_app.wiring`) make the rest happen:

- ``transaction_activated``: the subscription starts (ACTIVATE), comes back
  (RESUME) or renews (UPDATE) with its next billing period, which follows the period
  (or the trial) under way; a user suspended for a failed payment is resumed.
- ``transaction_expired``: an ``active`` subscription and the user are SUSPENDed. A
  subscription still ``created`` (waiting for its first payment, perhaps in its free
  trial) stays ``created``: it never started, so there is nothing to suspend, and its
  trial runs on (as a payment provider's "incomplete" subscription); the user is told
  that the first payment failed (a ``payment_failed`` notification).

A transaction has its own lifecycle (:data:`TRANSACTION_LIFECYCLE`): ``created``
(pending) -> ``active`` (settled) or ``expired`` (failed), and nothing after that; it
is never suspended or resumed. :data:`TRANSACTION_LABELS` names its statuses for people.

A subscription may start with a free trial (``trial_days``). Trials and paid periods
end by themselves, through timers (:mod:`example_app.terms`).

Imported history (``data.imported``, the demo seed's old transactions) is left alone.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask_tiered_state.domain.lifecycle import Lifecycle
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateStatus, StateTransition, StateType

from .core import get_typed, iso, new_id, parse_iso, period_end, utc_now
from .http import BusinessRuleError
from .schemas import PLANS

__all__ = [
    "BILLING_ACTOR",
    "TRANSACTION_LABELS",
    "TRANSACTION_LIFECYCLE",
    "cancel_subscription",
    "change_plan",
    "create_payment",
    "create_subscription",
    "fail_payment",
    "on_payment_failed",
    "on_payment_settled",
    "renew_subscription",
    "settle_payment",
]

TRANSACTION = StateType.TRANSACTION.value
SUBSCRIPTION = StateType.SUBSCRIPTION.value
USER = StateType.USER.value
#: The actor recorded for changes the billing rules make on their own.
BILLING_ACTOR = "billing-bot"
_ACTIVE, _SUSPENDED = StateStatus.ACTIVE.value, StateStatus.SUSPENDED.value
_LIVE = (StateStatus.CREATED.value, _ACTIVE, _SUSPENDED)
_PAYMENT_FAILED = "payment failed"

#: A payment's lifecycle: pending, then settled or failed, once. (The default lifecycle
#: would let a REST client suspend or resume a payment, and the dashboard would draw it.)
TRANSACTION_LIFECYCLE = Lifecycle(
    {
        StateTransition.UPDATE: ((StateStatus.CREATED,), None),
        StateTransition.ACTIVATE: ((StateStatus.CREATED,), StateStatus.ACTIVE),
        StateTransition.EXPIRE: ((StateStatus.CREATED,), StateStatus.EXPIRED),
        StateTransition.DELETE: (
            (StateStatus.CREATED, StateStatus.ACTIVE, StateStatus.EXPIRED),
            StateStatus.DELETED,
        ),
    }
)
#: What a payment's status means, in the words of the pages.
TRANSACTION_LABELS = {
    StateStatus.CREATED.value: "pending",
    _ACTIVE: "settled",
    StateStatus.EXPIRED.value: "failed",
    StateStatus.DELETED.value: "deleted",
}


def _active_user(manager: StateManager, user_id: str) -> dict[str, Any]:
    user = get_typed(manager, user_id, USER)
    if user["status"] != _ACTIVE:
        raise BusinessRuleError(
            f"User {user_id} is {user['status']}; only active users can do this.",
            details={"user_id": user_id, "status": user["status"]},
        )
    return user


def create_subscription(
    manager: StateManager, body: dict[str, Any], *, actor: str | None = None
) -> dict[str, Any]:
    """A subscription for an active user without a live one; it starts with its first
    successful payment. With ``trial_days`` it expires at the trial's end unless it was
    paid for by then."""
    user_id = body["user_id"]
    _active_user(manager, user_id)
    existing = manager.search_states(SUBSCRIPTION, {"data.user_id": user_id}, per_page=100)
    live = [s["state_id"] for s in existing.items if s["status"] in _LIVE]
    if live:
        raise BusinessRuleError(
            f"User {user_id} already has subscription {live[0]}; change its plan or cancel it.",
            details={"user_id": user_id, "subscription_id": live[0]},
        )
    plan, cycle = body["plan"], body["billing_cycle"]
    now = utc_now()
    trial_days = body.get("trial_days") or 0
    data = {
        "user_id": user_id,
        "plan": plan,
        "billing_cycle": cycle,
        "price_cents": PLANS[plan][cycle],
        "currency": body["currency"],
        "started_at": iso(now),
        "current_period_start": None,
        "current_period_end": None,
        "renewals": 0,
        "last_payment_id": None,
        "trial_ends_at": iso(now + timedelta(days=trial_days)) if trial_days else None,
    }
    return manager.register_state(
        new_id("sub"), SUBSCRIPTION, {"name": f"{plan} ({cycle})", "data": data}, actor=actor
    )


def create_payment(
    manager: StateManager, body: dict[str, Any], *, actor: str | None = None
) -> dict[str, Any]:
    """A pending payment (status ``created``); for a subscription the amount defaults to
    its price."""
    user = get_typed(manager, body["user_id"], USER)
    amount = body.get("amount_cents")
    currency = body.get("currency", "EUR")
    subscription_id = body.get("subscription_id")
    if subscription_id is not None:
        subscription = get_typed(manager, subscription_id, SUBSCRIPTION)
        if subscription["data"]["user_id"] != user["state_id"]:
            raise BusinessRuleError(
                f"Subscription {subscription_id} belongs to another user.",
                details={"subscription_id": subscription_id, "user_id": user["state_id"]},
            )
        amount = amount or subscription["data"]["price_cents"]
        currency = subscription["data"]["currency"]
    if amount is None:
        raise BusinessRuleError("amount_cents is required for a payment without a subscription.")
    data = {
        "user_id": user["state_id"],
        "subscription_id": subscription_id,
        "kind": "subscription" if subscription_id else "one_off",
        "amount_cents": amount,
        "currency": currency,
        "description": body.get("description") or "",
        "occurred_at": iso(utc_now()),
        "settled_at": None,
        "failure_reason": None,
    }
    return manager.register_state(new_id("txn"), TRANSACTION, {"data": data}, actor=actor)


def settle_payment(
    manager: StateManager, transaction_id: str, *, actor: str | None = None
) -> dict[str, Any]:
    """The payment succeeded: ACTIVATE (the billing callback does the rest)."""
    get_typed(manager, transaction_id, TRANSACTION)
    changes = {"data": {"settled_at": iso(utc_now())}}
    return manager.update_state(
        transaction_id,
        changes,
        StateTransition.ACTIVATE,
        actor=actor,
        reason="payment succeeded",
        merge=True,
    )


def fail_payment(
    manager: StateManager, transaction_id: str, reason: str, *, actor: str | None = None
) -> dict[str, Any]:
    """The payment failed: EXPIRE (the billing callback suspends the subscription)."""
    get_typed(manager, transaction_id, TRANSACTION)
    changes = {"data": {"failure_reason": reason}}
    return manager.update_state(
        transaction_id, changes, StateTransition.EXPIRE, actor=actor, reason=reason, merge=True
    )


def renew_subscription(
    manager: StateManager, subscription_id: str, *, actor: str | None = None
) -> dict[str, Any]:
    """The payment of a subscription's next period (pending)."""
    subscription = get_typed(manager, subscription_id, SUBSCRIPTION)
    if subscription["status"] not in _LIVE:
        raise BusinessRuleError(
            f"Subscription {subscription_id} is {subscription['status']}; it cannot be renewed.",
            details={"subscription_id": subscription_id, "status": subscription["status"]},
        )
    body = {"user_id": subscription["data"]["user_id"], "subscription_id": subscription_id}
    body["description"] = f"{subscription['name']} renewal"
    return create_payment(manager, body, actor=actor)


def cancel_subscription(
    manager: StateManager, subscription_id: str, reason: str | None, *, actor: str | None = None
) -> dict[str, Any]:
    get_typed(manager, subscription_id, SUBSCRIPTION)
    return manager.update_state(
        subscription_id, None, StateTransition.EXPIRE, actor=actor, reason=reason or "cancelled"
    )


def change_plan(
    manager: StateManager, subscription_id: str, body: dict[str, Any], *, actor: str | None = None
) -> dict[str, Any]:
    subscription = get_typed(manager, subscription_id, SUBSCRIPTION)
    plan = body["plan"]
    cycle = body.get("billing_cycle") or subscription["data"]["billing_cycle"]
    data = {"plan": plan, "billing_cycle": cycle, "price_cents": PLANS[plan][cycle]}
    return manager.update_state(
        subscription_id,
        {"name": f"{plan} ({cycle})", "data": data},
        StateTransition.UPDATE,
        expected_version=subscription["version"],
        actor=actor,
        reason=f"plan changed to {plan} ({cycle})",
        merge=True,
    )


# -- the billing rules (named callbacks) ---------------------------------------------------


def on_payment_settled(manager: StateManager, transaction: dict[str, Any]) -> None:
    """Start, resume or renew the subscription paid for; resume a suspended user."""
    data = transaction["data"]
    if data.get("imported"):
        return
    txn_id = transaction["state_id"]
    reason = f"payment {txn_id} succeeded"
    subscription_id = data.get("subscription_id")
    subscription = manager.get_state(subscription_id) if subscription_id else None
    if subscription is not None and subscription["status"] in _LIVE:
        first = subscription["status"] == StateStatus.CREATED.value
        start = parse_iso(data["occurred_at"])
        # Paid before the period under way (or the trial) ended: the new period follows it.
        paid_until = {
            _ACTIVE: subscription["data"].get("current_period_end"),
            StateStatus.CREATED.value: subscription["data"].get("trial_ends_at"),
        }.get(subscription["status"])
        if paid_until and parse_iso(paid_until) > start:
            start = parse_iso(paid_until)
        cycle = subscription["data"]["billing_cycle"]
        period = {
            "current_period_start": iso(start),
            "current_period_end": iso(period_end(start, cycle)),
            "last_payment_id": txn_id,
            "suspended_reason": None,
            "renewals": subscription["data"].get("renewals", 0) + (0 if first else 1),
        }
        transition = {
            StateStatus.CREATED.value: StateTransition.ACTIVATE,
            _SUSPENDED: StateTransition.RESUME,
        }.get(subscription["status"], StateTransition.UPDATE)
        manager.update_state(
            subscription["state_id"],
            {"data": period},
            transition,
            actor=BILLING_ACTOR,
            reason=reason,
            merge=True,
        )
    user = manager.get_state(data["user_id"])
    if (
        user is not None
        and user["status"] == _SUSPENDED
        and user["data"].get("suspended_reason") == _PAYMENT_FAILED
    ):
        manager.update_state(
            user["state_id"],
            {"data": {"suspended_reason": None}},
            StateTransition.RESUME,
            actor=BILLING_ACTOR,
            reason=reason,
            merge=True,
        )


def on_payment_failed(manager: StateManager, transaction: dict[str, Any]) -> dict[str, Any] | None:
    """Suspend the subscription paid for when it is active, and the user; return the
    subscription left ``created`` (its first payment failed), if any."""
    data = transaction["data"]
    if data.get("imported"):
        return None
    reason = f"payment {transaction['state_id']} failed: {data.get('failure_reason')}"[:200]
    subscription_id = data.get("subscription_id")
    subscription = manager.get_state(subscription_id) if subscription_id else None
    if subscription is not None and subscription["status"] == _ACTIVE:
        manager.update_state(
            subscription["state_id"],
            {"data": {"suspended_reason": _PAYMENT_FAILED}},
            StateTransition.SUSPEND,
            actor=BILLING_ACTOR,
            reason=reason,
            merge=True,
        )
    user = manager.get_state(data["user_id"])
    if user is not None and user["status"] == _ACTIVE:
        manager.update_state(
            user["state_id"],
            {"data": {"suspended_reason": _PAYMENT_FAILED}},
            StateTransition.SUSPEND,
            actor=BILLING_ACTOR,
            reason=reason,
            merge=True,
        )
    if subscription is not None and subscription["status"] == StateStatus.CREATED.value:
        return subscription
    return None

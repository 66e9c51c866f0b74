"""``/api/plans``, ``/api/subscriptions`` and ``/api/payments``."""

from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from flask_tiered_state.domain.model import StateType

from .. import billing as rules
from ..core import get_typed
from ..http import load_body, paging
from ..schemas import (
    PLANS,
    ChangePlanRequest,
    CreatePaymentRequest,
    CreateSubscriptionRequest,
    FailPaymentRequest,
    ReasonRequest,
)
from .common import actor, manager, page_body

__all__ = ["billing"]

billing = Blueprint("billing", __name__)
SUBSCRIPTION = StateType.SUBSCRIPTION.value
TRANSACTION = StateType.TRANSACTION.value


@billing.get("/plans")
def plans() -> ResponseReturnValue:
    return {"plans": PLANS, "currency_note": "prices in cents"}


@billing.post("/subscriptions")
def subscribe() -> ResponseReturnValue:
    body = load_body(CreateSubscriptionRequest())
    return rules.create_subscription(manager(), body, actor=actor()), 201


@billing.get("/subscriptions/<subscription_id>")
def subscription(subscription_id: str) -> ResponseReturnValue:
    return get_typed(manager(), subscription_id, SUBSCRIPTION)


@billing.get("/subscriptions/<subscription_id>/timers")
def timers(subscription_id: str) -> ResponseReturnValue:
    """The subscription's timers (its end, scheduled; and the past ones, kept for the
    retention period), soonest first."""
    get_typed(manager(), subscription_id, SUBSCRIPTION)
    return {
        "subscription_id": subscription_id,
        "items": manager().get_scheduled(subscription_id, status=None),
    }


@billing.post("/subscriptions/<subscription_id>/renew")
def renew(subscription_id: str) -> ResponseReturnValue:
    return rules.renew_subscription(manager(), subscription_id, actor=actor()), 201


@billing.post("/subscriptions/<subscription_id>/plan")
def change_plan(subscription_id: str) -> ResponseReturnValue:
    body = load_body(ChangePlanRequest())
    return rules.change_plan(manager(), subscription_id, body, actor=actor())


@billing.post("/subscriptions/<subscription_id>/cancel")
def cancel(subscription_id: str) -> ResponseReturnValue:
    body = load_body(ReasonRequest())
    return rules.cancel_subscription(manager(), subscription_id, body["reason"], actor=actor())


@billing.get("/payments")
def payments() -> ResponseReturnValue:
    page, per_page = paging()
    filters = {f"data.{k}": v for k, v in request.args.items() if k in ("user_id", "currency")}
    if "status" in request.args:
        filters["status"] = request.args["status"]
    found = manager().search_states(TRANSACTION, filters, page=page, per_page=per_page)
    return page_body(found)


@billing.post("/payments")
def pay() -> ResponseReturnValue:
    body = load_body(CreatePaymentRequest())
    return rules.create_payment(manager(), body, actor=actor()), 201


@billing.get("/payments/<transaction_id>")
def payment(transaction_id: str) -> ResponseReturnValue:
    return get_typed(manager(), transaction_id, TRANSACTION)


@billing.post("/payments/<transaction_id>/succeed")
def succeed(transaction_id: str) -> ResponseReturnValue:
    return rules.settle_payment(manager(), transaction_id, actor=actor())


@billing.post("/payments/<transaction_id>/fail")
def fail(transaction_id: str) -> ResponseReturnValue:
    body = load_body(FailPaymentRequest())
    return rules.fail_payment(manager(), transaction_id, body["reason"], actor=actor())

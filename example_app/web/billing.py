"""Subscriptions and payments: subscribe, pay, and make a payment succeed or fail.

A subscription's "Pay" button creates its next payment, pending (what
``POST /api/subscriptions/<id>/renew`` does); the payment's own buttons then settle it
or fail it, and the billing rules (callbacks) start, renew, suspend or resume the
subscription and the user. A payment is shown with its own lifecycle: pending
(``created``) -> settled (``active``) or failed (``expired``).
"""

from __future__ import annotations

from flask import flash, redirect, request, url_for
from flask.typing import ResponseReturnValue

from flask_tiered_state.domain.model import StateStatus, StateType

from .. import billing as rules
from ..core import get_typed
from ..schemas import (
    CreatePaymentRequest,
    CreateSubscriptionRequest,
    FailPaymentRequest,
    ReasonRequest,
)
from .common import actor, attempt, manager, page, submit, web
from .forms import FailPaymentForm, PayForm, ReasonForm, SubscribeForm, load
from .users import PER_PAGE, render_user

__all__ = [
    "cancel",
    "fail",
    "pay_one_off",
    "pay_subscription",
    "payment",
    "payments",
    "subscribe",
    "subscriptions",
    "succeed",
]

SUBSCRIPTION = StateType.SUBSCRIPTION.value
TRANSACTION = StateType.TRANSACTION.value
_LISTED = tuple(s.value for s in StateStatus if s is not StateStatus.DELETED)


def _listing(state_type: str, template: str, statuses: tuple[str, ...]) -> ResponseReturnValue:
    status = request.args.get("status", "")
    text = request.args.get("page", "1")
    number = int(text) if text.isdigit() and 0 < int(text) < 1_000_000 else 1
    filters = {"status": status} if status in statuses else None
    found = manager().search_states(state_type, filters, page=number, per_page=PER_PAGE)
    return page(template, found=found, status=status if filters else "", statuses=statuses)


@web.get("/subscriptions")
def subscriptions() -> ResponseReturnValue:
    return _listing(SUBSCRIPTION, "subscriptions.html", _LISTED)


@web.get("/payments")
def payments() -> ResponseReturnValue:
    statuses = tuple(rules.TRANSACTION_LABELS)[:3]  # pending, settled, failed
    return _listing(TRANSACTION, "payments.html", statuses)


def _to_user(user_id: str) -> ResponseReturnValue:
    return redirect(url_for("web.user", user_id=user_id) + "#billing")


@web.post("/users/<user_id>/subscriptions")
def subscribe(user_id: str) -> ResponseReturnValue:
    form = SubscribeForm(prefix="subscribe")
    return submit(
        form,
        CreateSubscriptionRequest(),
        lambda body: rules.create_subscription(manager(), body, actor=actor()),
        "Subscribed: the subscription starts with its first successful payment (Pay).",
        extra={"user_id": user_id},
        again=lambda status: render_user(user_id, status, subscribe_form=form),
        then=lambda _: _to_user(user_id),
    )


@web.post("/users/<user_id>/payments")
def pay_one_off(user_id: str) -> ResponseReturnValue:
    form = PayForm(prefix="pay")
    return submit(
        form,
        CreatePaymentRequest(),
        lambda body: rules.create_payment(manager(), body, actor=actor()),
        "Payment created, pending: make it succeed or fail.",
        extra={"user_id": user_id},
        again=lambda status: render_user(user_id, status, pay_form=form),
        then=lambda _: _to_user(user_id),
    )


@web.post("/subscriptions/<subscription_id>/pay")
def pay_subscription(subscription_id: str) -> ResponseReturnValue:
    subscription = get_typed(manager(), subscription_id, SUBSCRIPTION)
    attempt(
        lambda: rules.renew_subscription(manager(), subscription_id, actor=actor()),
        "Payment created, pending: make it succeed or fail.",
    )
    return _to_user(subscription["data"]["user_id"])


@web.post("/subscriptions/<subscription_id>/cancel")
def cancel(subscription_id: str) -> ResponseReturnValue:
    subscription = get_typed(manager(), subscription_id, SUBSCRIPTION)
    form = ReasonForm(prefix="cancel")
    body = load(form, ReasonRequest()) or {"reason": None}
    attempt(
        lambda: rules.cancel_subscription(
            manager(), subscription_id, body["reason"], actor=actor()
        ),
        "The subscription is cancelled (expired).",
    )
    return _to_user(subscription["data"]["user_id"])


def _fail_form(transaction_id: str) -> FailPaymentForm:
    return FailPaymentForm(prefix=f"fail-{transaction_id}")


def render_payment(
    transaction_id: str, status: int = 200, fail_form: FailPaymentForm | None = None
) -> ResponseReturnValue:
    record = get_typed(manager(), transaction_id, TRANSACTION)
    return page(
        "payment.html",
        status,
        payment=record,
        history=manager().get_state_history(transaction_id),
        fail_form=fail_form or _fail_form(transaction_id),
        lifecycle=rules.TRANSACTION_LIFECYCLE,
    )


@web.get("/payments/<transaction_id>")
def payment(transaction_id: str) -> ResponseReturnValue:
    """One payment, with its own lifecycle: pending -> settled | failed."""
    return render_payment(transaction_id)


def _from_payment_page() -> bool:
    """The button was on the payment's page (not on its user's)."""
    return request.form.get("back") == "payment"


def _after(transaction: dict[str, object]) -> ResponseReturnValue:
    """Back to the page the button was on: the payment's, or its user's."""
    if _from_payment_page():
        return redirect(url_for("web.payment", transaction_id=transaction["state_id"]))
    data = transaction["data"]
    assert isinstance(data, dict)
    return _to_user(data["user_id"])


@web.post("/payments/<transaction_id>/succeed")
def succeed(transaction_id: str) -> ResponseReturnValue:
    transaction = get_typed(manager(), transaction_id, TRANSACTION)
    attempt(
        lambda: rules.settle_payment(manager(), transaction_id, actor=actor()),
        "The payment succeeded (settled).",
    )
    return _after(transaction)


@web.post("/payments/<transaction_id>/fail")
def fail(transaction_id: str) -> ResponseReturnValue:
    transaction = get_typed(manager(), transaction_id, TRANSACTION)
    user_id = transaction["data"]["user_id"]
    form = _fail_form(transaction_id)

    def again(status: int) -> ResponseReturnValue:
        if _from_payment_page():
            return render_payment(transaction_id, status, form)
        return render_user(user_id, status, failing=(transaction_id, form))

    def then(_: object) -> ResponseReturnValue:
        user = manager().get_state(user_id)
        if user is not None and user["status"] == "suspended":
            flash("The billing rules suspended the user: see the notifications.", "ok")
        return _after(transaction)

    return submit(
        form,
        FailPaymentRequest(),
        lambda body: rules.fail_payment(manager(), transaction_id, body["reason"], actor=actor()),
        "The payment failed.",
        again=again,
        then=then,
    )

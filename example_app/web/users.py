"""Users' pages: the list, registering, and a user's page with everything they own."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, request, url_for
from flask.typing import ResponseReturnValue

from flask_tiered_state.domain.model import StateStatus, StateType

from .. import accounts
from ..core import user_id_for
from ..features import evaluate, list_features
from ..schemas import ReasonRequest, RegisterUserRequest, SuspendRequest
from ..wiring import NOTIFICATION
from .common import actor, attempt, manager, page, submit, web
from .forms import (
    FailPaymentForm,
    PayForm,
    ReasonForm,
    RegisterForm,
    SubscribeForm,
    SuspendForm,
)

__all__ = [
    "home",
    "owned",
    "register",
    "render_user",
    "resume",
    "suspend",
    "user",
    "users",
    "verify",
]

PER_PAGE = 25
USER_STATUSES = tuple(s.value for s in StateStatus if s is not StateStatus.DELETED)


def _page_number() -> int:
    text = request.args.get("page", "1")
    return int(text) if text.isdigit() and 0 < int(text) < 1_000_000 else 1


@web.get("/")
def home() -> ResponseReturnValue:
    return redirect(url_for("web.users"))


@web.get("/users")
def users() -> ResponseReturnValue:
    """Users, newest first, filtered by status; ``?email=`` opens that user's page."""
    email = request.args.get("email", "").strip()
    if email:
        user_id = user_id_for(email)
        if manager().get_state(user_id) is not None:
            return redirect(url_for("web.user", user_id=user_id))
        flash(f"No user has the email address {email!r}.", "error")
    status = request.args.get("status", "")
    filters = {"status": status} if status in USER_STATUSES else None
    found = manager().search_states(StateType.USER, filters, page=_page_number(), per_page=PER_PAGE)
    return page(
        "users.html",
        found=found,
        status=status if filters else "",
        statuses=USER_STATUSES,
    )


@web.route("/users/new", methods=["GET", "POST"])
def register() -> ResponseReturnValue:
    form = RegisterForm()
    if request.method == "GET":
        return page("register.html", form=form)
    return submit(
        form,
        RegisterUserRequest(),
        lambda body: accounts.register_user(manager(), body, actor=actor()),
        "Registered. Verify the email address to activate the user.",
        again=lambda status: page("register.html", status, form=form),
        then=lambda user: redirect(url_for("web.user", user_id=user["state_id"])),
    )


def owned(user_id: str, state_type: object, order_by: str) -> list[dict[str, Any]]:
    """The user's states of a type (their latest 100), newest first."""
    found = manager().search_states(state_type, {"data.user_id": user_id}, per_page=100)
    return sorted(found.items, key=lambda s: s["data"].get(order_by) or "", reverse=True)


def render_user(
    user_id: str,
    status: int = 200,
    *,
    failing: tuple[str, FailPaymentForm] | None = None,
    **forms: Any,
) -> ResponseReturnValue:
    """A user's page; ``forms`` (and ``failing``: a payment's id and its fail form)
    replace the empty forms, to show their errors."""
    record = accounts.get_user(manager(), user_id)
    history = manager().get_state_history(user_id)
    subscriptions = owned(user_id, StateType.SUBSCRIPTION, "started_at")
    payments = owned(user_id, StateType.TRANSACTION, "occurred_at")
    context: dict[str, Any] = {
        "suspend_form": SuspendForm(prefix="suspend"),
        "resume_form": ReasonForm(prefix="resume"),
        "subscribe_form": SubscribeForm(prefix="subscribe"),
        "pay_form": PayForm(prefix="pay"),
        "fail_forms": {
            p["state_id"]: FailPaymentForm(prefix=f"fail-{p['state_id']}")
            for p in payments
            if p["status"] == StateStatus.CREATED.value
        },
    }
    context.update(forms)
    if failing is not None:
        context["fail_forms"][failing[0]] = failing[1]
    return page(
        "user.html",
        status,
        user=record,
        history=list(reversed(history))[:15],
        subscriptions=subscriptions,
        payments=payments,
        notifications=owned(user_id, NOTIFICATION, "created_at"),
        flags=[evaluate(flag, user_id) for flag in list_features(manager())],
        **context,
    )


@web.get("/users/<user_id>")
def user(user_id: str) -> ResponseReturnValue:
    """Everything about a user, and what may be done with them."""
    return render_user(user_id)


def _back(user_id: str) -> ResponseReturnValue:
    return redirect(url_for("web.user", user_id=user_id))


@web.post("/users/<user_id>/verify")
def verify(user_id: str) -> ResponseReturnValue:
    attempt(
        lambda: accounts.verify_user(manager(), user_id, actor=actor()),
        "Email verified: the user is active.",
    )
    return _back(user_id)


@web.post("/users/<user_id>/suspend")
def suspend(user_id: str) -> ResponseReturnValue:
    form = SuspendForm(prefix="suspend")
    return submit(
        form,
        SuspendRequest(),
        lambda body: accounts.suspend_user(manager(), user_id, body["reason"], actor=actor()),
        "The user is suspended.",
        again=lambda status: render_user(user_id, status, suspend_form=form),
        then=lambda _: _back(user_id),
    )


@web.post("/users/<user_id>/resume")
def resume(user_id: str) -> ResponseReturnValue:
    form = ReasonForm(prefix="resume")
    return submit(
        form,
        ReasonRequest(),
        lambda body: accounts.resume_user(manager(), user_id, body["reason"], actor=actor()),
        "The user is active again.",
        again=lambda status: render_user(user_id, status, resume_form=form),
        then=lambda _: _back(user_id),
    )

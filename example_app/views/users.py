"""``/api/users``: register -> verify -> suspend -> resume, and what a user owns."""

from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from flask_tiered_state.domain.model import StateType

from .. import accounts
from ..features import evaluate, list_features
from ..http import load_body, paging
from ..schemas import ReasonRequest, RegisterUserRequest, SuspendRequest
from ..wiring import NOTIFICATION
from .common import actor, manager, page_body

__all__ = ["users"]

users = Blueprint("users", __name__, url_prefix="/users")


@users.post("")
def register() -> ResponseReturnValue:
    user = accounts.register_user(manager(), load_body(RegisterUserRequest()), actor=actor())
    return user, 201


@users.get("")
def list_users() -> ResponseReturnValue:
    page, per_page = paging()
    filters = {f"data.{k}": v for k, v in request.args.items() if k in ("country", "email")}
    if "status" in request.args:
        filters["status"] = request.args["status"]
    found = manager().search_states(StateType.USER, filters, page=page, per_page=per_page)
    return page_body(found)


@users.get("/<user_id>")
def show(user_id: str) -> ResponseReturnValue:
    return accounts.get_user(manager(), user_id)


@users.post("/<user_id>/verify")
def verify(user_id: str) -> ResponseReturnValue:
    return accounts.verify_user(manager(), user_id, actor=actor())


@users.post("/<user_id>/suspend")
def suspend(user_id: str) -> ResponseReturnValue:
    body = load_body(SuspendRequest())
    return accounts.suspend_user(manager(), user_id, body["reason"], actor=actor())


@users.post("/<user_id>/resume")
def resume(user_id: str) -> ResponseReturnValue:
    body = load_body(ReasonRequest())
    return accounts.resume_user(manager(), user_id, body["reason"], actor=actor())


@users.get("/<user_id>/history")
def history(user_id: str) -> ResponseReturnValue:
    accounts.get_user(manager(), user_id)
    return {"user_id": user_id, "items": manager().get_state_history(user_id)}


def _owned(user_id: str, state_type: object) -> ResponseReturnValue:
    accounts.get_user(manager(), user_id)
    page, per_page = paging()
    found = manager().search_states(
        state_type, {"data.user_id": user_id}, page=page, per_page=per_page
    )
    return page_body(found)


@users.get("/<user_id>/transactions")
def transactions(user_id: str) -> ResponseReturnValue:
    return _owned(user_id, StateType.TRANSACTION)


@users.get("/<user_id>/subscriptions")
def subscriptions(user_id: str) -> ResponseReturnValue:
    return _owned(user_id, StateType.SUBSCRIPTION)


@users.get("/<user_id>/notifications")
def notifications(user_id: str) -> ResponseReturnValue:
    return _owned(user_id, NOTIFICATION)


@users.get("/<user_id>/features")
def features(user_id: str) -> ResponseReturnValue:
    accounts.get_user(manager(), user_id)
    flags = list_features(manager())
    return {"user_id": user_id, "items": [evaluate(flag, user_id) for flag in flags]}

"""``/api/sessions``: login sessions, kept in the HOT tier until their TTL runs out."""

from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from .. import accounts
from ..http import load_body
from ..schemas import LoginRequest
from .common import credit, manager

__all__ = ["sessions"]

sessions = Blueprint("sessions", __name__, url_prefix="/sessions")


@sessions.post("")
def login() -> ResponseReturnValue:
    body = load_body(LoginRequest())
    session = accounts.login(
        manager(),
        body["email"],
        ttl_seconds=credit().session_ttl_seconds,
        user_agent=request.user_agent.string,
        remote_addr=request.remote_addr,
    )
    return {**session, "expires_in": session["data"]["ttl_seconds"]}, 201


@sessions.get("/<session_id>")
def show(session_id: str) -> ResponseReturnValue:
    return accounts.get_session(manager(), session_id)


@sessions.delete("/<session_id>")
def logout(session_id: str) -> ResponseReturnValue:
    accounts.logout(manager(), session_id)
    return {"session_id": session_id, "logged_out": True}

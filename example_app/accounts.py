"""Users (register -> verify -> suspend -> resume) and login sessions.

A user's status is its lifecycle status: ``created`` (registered, not verified),
``active`` (verified), ``suspended`` (a payment failed, or an admin), back to
``active`` on resume. Sessions are SESSION states: their home is the HOT tier and
they vanish when their TTL runs out; logging in also promotes the user's record to
HOT for the session's lifetime, since it is read on every request of the session.
"""

from __future__ import annotations

import secrets
from typing import Any

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateStatus, StateTransition, StateType
from flask_tiered_state.errors import InvalidTransitionError, StateAlreadyExistsError

from .core import get_typed, iso, user_id_for, utc_now
from .http import BusinessRuleError

__all__ = [
    "get_session",
    "get_user",
    "login",
    "logout",
    "register_user",
    "resume_user",
    "suspend_user",
    "verify_user",
]

USER = StateType.USER.value
SESSION = StateType.SESSION.value


def get_user(manager: StateManager, user_id: str) -> dict[str, Any]:
    return get_typed(manager, user_id, USER)


def register_user(
    manager: StateManager, body: dict[str, Any], *, actor: str | None = None
) -> dict[str, Any]:
    """Register a user (status ``created``) from a checked RegisterUserRequest body."""
    user_id = user_id_for(body["email"])
    data = {
        "email": body["email"].strip().lower(),
        "full_name": body["full_name"],
        "country": body["country"],
        "marketing_opt_in": body.get("marketing_opt_in", False),
        "registered_at": iso(utc_now()),
    }
    try:
        return manager.register_state(
            user_id, USER, {"name": body["full_name"], "data": data}, actor=actor
        )
    except StateAlreadyExistsError:
        raise StateAlreadyExistsError(
            user_id, f"The email address {data['email']!r} is already registered ({user_id})."
        ) from None


def verify_user(manager: StateManager, user_id: str, *, actor: str | None = None) -> dict[str, Any]:
    """Email verified: ``created`` -> ``active`` (ACTIVATE). Only new users verify."""
    user = get_user(manager, user_id)
    if user["status"] != StateStatus.CREATED.value:
        raise InvalidTransitionError(
            user_id,
            user["status"],
            StateTransition.ACTIVATE.value,
            ["resume"] if user["status"] == StateStatus.SUSPENDED.value else [],
            reason="the user is already verified",
        )
    return manager.update_state(
        user_id,
        {"data": {"verified_at": iso(utc_now())}},
        StateTransition.ACTIVATE,
        expected_version=user["version"],
        actor=actor,
        reason="email verified",
        merge=True,
    )


def suspend_user(
    manager: StateManager, user_id: str, reason: str, *, actor: str | None = None
) -> dict[str, Any]:
    """``active`` -> ``suspended``, remembering why."""
    get_user(manager, user_id)
    return manager.update_state(
        user_id,
        {"data": {"suspended_reason": reason}},
        StateTransition.SUSPEND,
        actor=actor,
        reason=reason,
        merge=True,
    )


def resume_user(
    manager: StateManager, user_id: str, reason: str | None, *, actor: str | None = None
) -> dict[str, Any]:
    """``suspended`` -> ``active``."""
    get_user(manager, user_id)
    return manager.update_state(
        user_id,
        {"data": {"suspended_reason": None}},
        StateTransition.RESUME,
        actor=actor,
        reason=reason or "resumed",
        merge=True,
    )


def login(
    manager: StateManager,
    email: str,
    *,
    ttl_seconds: int,
    user_agent: str | None = None,
    remote_addr: str | None = None,
) -> dict[str, Any]:
    """Open a session for an active user: a SESSION state in HOT with a TTL."""
    user = get_user(manager, user_id_for(email))
    if user["status"] != StateStatus.ACTIVE.value:
        raise BusinessRuleError(
            f"User {user['state_id']} is {user['status']}; only active (verified, not "
            "suspended) users can log in.",
            details={"user_id": user["state_id"], "status": user["status"]},
        )
    session_id = "sess-" + secrets.token_hex(16)
    data = {
        "user_id": user["state_id"],
        "created_at": iso(utc_now()),
        "ttl_seconds": ttl_seconds,
        "user_agent": (user_agent or "")[:300] or None,
        "remote_addr": remote_addr,
    }
    session = manager.register_state(
        session_id, SESSION, {"data": data}, actor=user["state_id"], reason="login"
    )
    manager.promote_to_hot(user["state_id"], ttl_seconds=ttl_seconds)
    return session


def get_session(manager: StateManager, session_id: str) -> dict[str, Any]:
    return get_typed(manager, session_id, SESSION)


def logout(manager: StateManager, session_id: str) -> dict[str, Any]:
    session = get_session(manager, session_id)
    return manager.delete_state(session_id, actor=session["data"]["user_id"], reason="logout")

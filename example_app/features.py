"""Feature flags: FEATURE states with a rollout percentage and deterministic buckets.

A flag is ``created`` (off), ``active`` (on for its rollout percentage) or
``suspended`` (killed: off for everyone, its percentage kept). Flags are read on
every request, so enabling one also promotes it to the HOT tier.
"""

from __future__ import annotations

from typing import Any

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateStatus, StateTransition, StateType

from .core import bucket_of, feature_id, get_typed

__all__ = [
    "create_feature",
    "disable_feature",
    "enable_feature",
    "evaluate",
    "get_feature",
    "list_features",
    "set_rollout",
]

FEATURE = StateType.FEATURE.value


def get_feature(manager: StateManager, key: str) -> dict[str, Any]:
    return get_typed(manager, feature_id(key), FEATURE)


def list_features(manager: StateManager) -> list[dict[str, Any]]:
    """Every flag (a few dozen at most), by key."""
    flags: list[dict[str, Any]] = []
    page = 1
    while True:
        found = manager.search_states(FEATURE, None, page=page, per_page=200)
        flags += found.items
        if not found.has_next:
            return sorted(flags, key=lambda flag: flag["data"]["key"])
        page += 1


def create_feature(
    manager: StateManager, body: dict[str, Any], *, actor: str | None = None
) -> dict[str, Any]:
    data = {
        "key": body["key"],
        "description": body["description"],
        "rollout_percentage": body["rollout_percentage"],
    }
    return manager.register_state(
        feature_id(body["key"]), FEATURE, {"name": body["key"], "data": data}, actor=actor
    )


def set_rollout(
    manager: StateManager, key: str, percentage: int, *, actor: str | None = None
) -> dict[str, Any]:
    flag = get_feature(manager, key)
    return manager.update_state(
        flag["state_id"],
        {"data": {"rollout_percentage": percentage}},
        StateTransition.UPDATE,
        expected_version=flag["version"],
        actor=actor,
        reason=f"rollout {flag['data']['rollout_percentage']}% -> {percentage}%",
        merge=True,
    )


def enable_feature(manager: StateManager, key: str, *, actor: str | None = None) -> dict[str, Any]:
    """``created`` -> ``active`` (ACTIVATE) or ``suspended`` -> ``active`` (RESUME)."""
    flag = get_feature(manager, key)
    transition = (
        StateTransition.RESUME
        if flag["status"] == StateStatus.SUSPENDED.value
        else StateTransition.ACTIVATE
    )
    record = manager.update_state(flag["state_id"], None, transition, actor=actor)
    manager.promote_to_hot(flag["state_id"])
    return record


def disable_feature(manager: StateManager, key: str, *, actor: str | None = None) -> dict[str, Any]:
    """The kill switch: ``active`` -> ``suspended``."""
    flag = get_feature(manager, key)
    return manager.update_state(
        flag["state_id"], None, StateTransition.SUSPEND, actor=actor, reason="kill switch"
    )


def evaluate(flag: dict[str, Any], user_id: str) -> dict[str, Any]:
    """Whether ``flag`` is on for ``user_id``, and why."""
    key = flag["data"]["key"]
    percentage = flag["data"]["rollout_percentage"]
    bucket = bucket_of(key, user_id)
    active = flag["status"] == StateStatus.ACTIVE.value
    return {
        "feature": key,
        "user_id": user_id,
        "enabled": active and bucket < percentage,
        "bucket": bucket,
        "rollout_percentage": percentage,
        "status": flag["status"],
    }

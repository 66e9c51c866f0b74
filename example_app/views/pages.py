"""``/``: the overview page linking every flow, the dashboard and the REST API."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, render_template, request
from flask.typing import ResponseReturnValue

from flask_tiered_state.domain.model import StateStatus, StateType
from flask_tiered_state.extension import get_app_state

from ..config import backends
from ..schemas import PLANS
from ..wiring import NOTIFICATION
from .common import manager

__all__ = ["pages"]

pages = Blueprint("pages", __name__)

COUNTED_TYPES = (
    StateType.USER.value,
    StateType.SUBSCRIPTION.value,
    StateType.TRANSACTION.value,
    StateType.FEATURE.value,
    NOTIFICATION,
)
COUNTED_STATUSES = tuple(s.value for s in StateStatus if s is not StateStatus.DELETED)


def _counts() -> dict[str, dict[str, int]]:
    states = manager()
    return {
        state_type: {
            status: states.search_states(state_type, {"status": status}, per_page=1).total
            for status in COUNTED_STATUSES
        }
        for state_type in COUNTED_TYPES
    }


def _samples() -> dict[str, Any]:
    """A live example of each kind, so the page's links lead somewhere real."""
    states = manager()
    samples: dict[str, Any] = {}
    for state_type, status in (
        (StateType.USER.value, StateStatus.ACTIVE.value),
        (StateType.USER.value, StateStatus.SUSPENDED.value),
        (StateType.SUBSCRIPTION.value, StateStatus.ACTIVE.value),
        (StateType.TRANSACTION.value, StateStatus.EXPIRED.value),
        (StateType.FEATURE.value, StateStatus.ACTIVE.value),
    ):
        found = states.search_states(state_type, {"status": status}, per_page=1).items
        samples[f"{state_type}_{status}"] = found[0] if found else None
    return samples


@pages.get("/")
def overview() -> ResponseReturnValue:
    state = get_app_state()
    settings = state.settings
    return render_template(
        "overview.html",
        counts=_counts(),
        statuses=COUNTED_STATUSES,
        samples=_samples(),
        backends=backends(settings, state.local_dir),
        base_url=request.host_url.rstrip("/"),
        plans=PLANS,
        api_prefix=settings.api_prefix,
        dashboard_prefix=settings.dashboard_prefix,
        session_ttl=current_app.extensions["credit_system"].session_ttl_seconds,
    )

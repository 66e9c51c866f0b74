"""What every view needs: the app's configured manager and the request's actor."""

from __future__ import annotations

from typing import Any

from flask import current_app, request

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import get_app_state

from ..wiring import CreditSystem

__all__ = ["CREDIT_KEY", "actor", "credit", "manager", "page_body"]

#: The key of the app's :class:`~example_app.wiring.CreditSystem` in ``app.extensions``.
CREDIT_KEY = "credit_system"


def credit() -> CreditSystem:
    system: CreditSystem = current_app.extensions[CREDIT_KEY]
    return system


def manager() -> StateManager:
    """The current app's state manager, configured for the credit system."""
    return get_app_state().manager


def actor() -> str | None:
    """Who acts: the ``X-Actor`` header (checked by the manager), else anonymous."""
    return request.headers.get("X-Actor") or None


def page_body(page: Any) -> dict[str, Any]:
    """A search result page as JSON: ``items, total, page, per_page, pages``."""
    body: dict[str, Any] = page.to_dict()
    return body

"""What every view needs: the app's configured manager, the access check and the actor."""

from __future__ import annotations

from typing import Any

from flask import current_app, request
from werkzeug.exceptions import UnsupportedMediaType

from flask_tiered_state.access import check_access, current_actor
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import get_app_state

from ..wiring import CreditSystem

__all__ = ["CREDIT_KEY", "actor", "credit", "guard", "manager", "page_body"]

#: The key of the app's :class:`~example_app.wiring.CreditSystem` in ``app.extensions``.
CREDIT_KEY = "credit_system"
#: Methods a cross-site HTML form can send: they must carry JSON, which a form cannot.
JSON_ONLY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def credit() -> CreditSystem:
    system: CreditSystem = current_app.extensions[CREDIT_KEY]
    return system


def manager() -> StateManager:
    """The current app's state manager, configured for the credit system."""
    return get_app_state().manager


def guard() -> None:
    """Before every view: the access-control hook (action ``credit.<endpoint>``, e.g.
    ``credit.users.register``), then ``Content-Type: application/json`` for the methods
    that change something (415 otherwise), so that a cross-site form cannot drive them."""
    check_access(get_app_state().settings.access_control, request.endpoint or "credit")
    if request.method in JSON_ONLY_METHODS and not request.is_json:
        raise UnsupportedMediaType(
            f"{request.method} requests must be sent with 'Content-Type: application/json' "
            f"(an empty body or a JSON object); got {request.mimetype or 'no content type'!r}."
        )


def actor() -> str | None:
    """Who acts: the actor the access-control hook named for this request, else None."""
    return current_actor()


def page_body(page: Any) -> dict[str, Any]:
    """A search result page as JSON: ``items, total, page, per_page, pages``."""
    body: dict[str, Any] = page.to_dict()
    return body

"""The access-control hook (``TIERED_STATE_ACCESS_CONTROL``) guarding the blueprints.

The hook is called as ``hook(request, action)`` before each view; ``action`` names
what the view does (``"states.list"``, ``"states.transition"``, ...; see
:data:`API_ACTIONS`). It returns True to allow, a non-empty string to allow and
name the actor (recorded in history rows), and anything else -- False, None -- to
deny with 403. It may also raise
:class:`~flask_tiered_state.errors.AccessDeniedError` with its own message.
"""

from __future__ import annotations

from flask import g, request

from .errors import AccessDeniedError
from .settings import AccessControlHook

__all__ = ["API_ACTIONS", "check_access", "current_actor"]

#: The actions of the REST blueprint, as passed to the hook.
API_ACTIONS = (
    "states.list",
    "states.register",
    "states.read",
    "states.transition",
    "states.history",
    "states.diff",
    "states.rollback",
    "health",
    "openapi",
)

_G_ACTOR = "tiered_state_actor"


def check_access(hook: AccessControlHook | None, action: str) -> str | None:
    """Run ``hook`` for the current request; return the actor it named, if any.

    :raises AccessDeniedError: when the hook denies.
    """
    if hook is None:
        return None
    verdict = hook(request, action)
    if verdict is True:
        return None
    if isinstance(verdict, str) and verdict:
        setattr(g, _G_ACTOR, verdict)
        return verdict
    raise AccessDeniedError(
        f"Access to {action!r} was denied by the access-control hook "
        "(TIERED_STATE_ACCESS_CONTROL).",
        details={"action": action},
    )


def current_actor() -> str | None:
    """The actor the hook named for the current request, or None."""
    value = g.get(_G_ACTOR)
    return value if isinstance(value, str) else None

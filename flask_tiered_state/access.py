"""The access-control hook (``TIERED_STATE_ACCESS_CONTROL``) guarding the blueprints.

The hook is called as ``hook(request, action)`` before each view; ``action`` names
what the view does (``"states.list"``, ``"states.transition.suspend"``, ...; see
:data:`API_ACTIONS`). It returns True to allow, a non-empty string to allow and
name the actor (recorded in history rows), and anything else -- False, None -- to
deny with 403. It may also raise
:class:`~flask_tiered_state.errors.AccessDeniedError` with its own message, or a
werkzeug HTTP error such as ``Unauthorized`` (answered with its status and headers).

**Safe by default.** Mounting the REST API or the dashboard without a hook refuses to
start (:func:`require_access_control`), unless the app says
``TIERED_STATE_ACCESS_CONTROL = "allow-all"`` or is ``TESTING``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import g, request

from .domain.arguments import UPDATE_TRANSITIONS
from .errors import AccessDeniedError, ConfigurationError
from .observability.logging import get_logger
from .setting_values import ALLOW_ALL
from .settings import AccessControlHook, TieredStateSettings

if TYPE_CHECKING:
    from flask.sansio.app import App

__all__ = [
    "ALLOW_ALL",
    "API_ACTIONS",
    "TRANSITION_ACTION",
    "TRANSITION_ACTIONS",
    "check_access",
    "current_actor",
    "require_access_control",
    "transition_action",
]

#: The action of ``POST /states/<id>/transitions`` whose body names no transition the
#: API accepts (the request is refused after the hook: 400, 415 or 422). A body naming
#: one gets that transition's own action (:data:`TRANSITION_ACTIONS`).
TRANSITION_ACTION = "states.transition"

#: The per-transition actions: ``states.transition.update``, ``...activate``,
#: ``...suspend``, ``...resume``, ``...expire``, ``...delete``.
TRANSITION_ACTIONS = tuple(f"{TRANSITION_ACTION}.{t.value}" for t in UPDATE_TRANSITIONS)

#: The actions of the REST blueprint, as passed to the hook.
API_ACTIONS = (
    "states.list",
    "states.register",
    "states.read",
    *TRANSITION_ACTIONS,
    TRANSITION_ACTION,
    "states.history",
    "states.diff",
    "states.rollback",
    "health",
    "openapi",
)

_G_ACTOR = "tiered_state_actor"
#: The hook's verdict per action in this request: it is asked once per request and action.
_G_VERDICTS = "tiered_state_access_verdicts"
_TRANSITIONS = {t.value for t in UPDATE_TRANSITIONS}

logger = get_logger(__name__)


def transition_action(transition: object) -> str:
    """The action of a transition request whose body names ``transition`` (any case):
    ``states.transition.suspend``; :data:`TRANSITION_ACTION` for anything the API refuses."""
    if isinstance(transition, str) and transition.lower() in _TRANSITIONS:
        return f"{TRANSITION_ACTION}.{transition.lower()}"
    return TRANSITION_ACTION


def _requested_transition() -> object:
    """The ``transition`` of the request's JSON body, or None when there is none to read
    (the view refuses such a body after the hook)."""
    if not request.is_json:
        return None
    try:
        body: Any = request.get_json(silent=True)
    except RecursionError:  # nested too deep to parse: the view answers it
        return None
    return body.get("transition") if isinstance(body, dict) else None


def check_access(hook: AccessControlHook | None, action: str) -> str | None:
    """Run ``hook`` for the current request; return the actor it named, if any.

    :data:`TRANSITION_ACTION` is refined into the transition the request's body names
    (:func:`transition_action`), so a hook can allow some transitions and not others.
    The hook is asked once per request and action; a second check reuses its verdict.

    :raises AccessDeniedError: when the hook denies.
    """
    if hook is None:
        return None
    if action == TRANSITION_ACTION:
        action = transition_action(_requested_transition())
    verdicts: dict[str, object] = g.setdefault(_G_VERDICTS, {})
    if action in verdicts:  # asked already in this request (e.g. for a rate limit's key)
        verdict = verdicts[action]
    else:
        verdict = verdicts[action] = hook(request, action)
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


_warned_testing = False


def require_access_control(app: App, settings: TieredStateSettings) -> None:
    """Refuse to mount the REST API or the dashboard on ``app`` without a hook.

    ``TIERED_STATE_ACCESS_CONTROL = "allow-all"`` says explicitly that anyone may use
    them. A ``TESTING`` app without a hook is let through (every request allowed), with
    one warning per process in the log.

    :raises ConfigurationError: a blueprint is mounted, no hook is set, and the app is
        not ``TESTING``.
    """
    global _warned_testing
    mounted = [
        f"{what} at {prefix!r} ({key})"
        for what, prefix, key in (
            ("the REST API", settings.api_prefix, "TIERED_STATE_API_PREFIX"),
            ("the dashboard", settings.dashboard_prefix, "TIERED_STATE_DASHBOARD_PREFIX"),
        )
        if prefix is not None
    ]
    if not mounted or settings.access_control is not None:
        return
    if app.testing:
        if not _warned_testing:
            _warned_testing = True
            logger.warning(
                "App %r mounts %s without TIERED_STATE_ACCESS_CONTROL: every request is "
                "allowed because the app is TESTING; outside tests it would refuse to start.",
                app.name,
                " and ".join(mounted),
            )
        return
    raise ConfigurationError(
        f"App {app.name!r} mounts {' and '.join(mounted)} without an access-control hook: "
        f"set TIERED_STATE_ACCESS_CONTROL to a hook(request, action) (see the Security page "
        f"of the docs), or to {ALLOW_ALL!r} to let anyone read and change every state.",
        details={"key": "TIERED_STATE_ACCESS_CONTROL"},
    )

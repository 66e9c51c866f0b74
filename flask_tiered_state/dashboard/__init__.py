"""The state dashboard: an opt-in blueprint of server-rendered pages.

Set ``TIERED_STATE_DASHBOARD_PREFIX`` (e.g. ``"/dashboard"``) and ``init_app``
mounts it there. Pages: an overview (states by type and status, health, recent
activity), the states with search by dotted filters and paging, one state (record,
copies per tier, history timeline, diff between two versions, lifecycle diagram
with the current status highlighted, scheduled transitions), the events (deliveries
of asynchronous callbacks by status), the tiers (key counts, hit ratios, promotions
and demotions) and health.

Every page and action is guarded by the access-control hook
(``TIERED_STATE_ACCESS_CONTROL``) with the actions of :data:`DASHBOARD_ACTIONS`; a
denial answers an HTML 403 page. The pages only read; the two actions that change
something -- retrying deliveries, cancelling a timer -- are POSTs that must also come
from the dashboard's own origin with its CSRF token (:mod:`.forms`).

Every error of the dashboard -- the library's exceptions, werkzeug's HTTP errors, an
unknown URL or a wrong method under its prefix -- answers the dashboard's own error
page, whatever handlers the app has.
Templates and assets ship in the package and are served by the blueprint itself (no
CDN); responses carry a Content-Security-Policy that allows only the blueprint's own
scripts and styles.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue
from flask.wrappers import Response
from werkzeug.exceptions import HTTPException

from ..access import check_access, require_access_control
from ..errors import TieredStateError
from ..http_errors import (
    UNMATCHED_ENDPOINT,
    error_code,
    log_error,
    log_internal_error,
    public_error,
    register_http_error_handlers,
    route_unmatched_urls,
    unexpected_error,
)
from ..ratelimit import limit_blueprint
from ..settings import TieredStateSettings
from . import forms, movements, views

__all__ = ["BLUEPRINT_NAME", "DASHBOARD_ACTIONS", "create_blueprint"]

BLUEPRINT_NAME = "tiered_state_dashboard"

#: The action passed to the access-control hook, per dashboard view.
DASHBOARD_ACTIONS = {
    "index": "dashboard.index",
    "states": "dashboard.states",
    "lookup": "dashboard.states",
    "state": "dashboard.state",
    "events": "dashboard.events",
    "tiers": "dashboard.tiers",
    "health": "dashboard.health",
    "backups": "dashboard.backups",
    "retry_events": "dashboard.events.retry",
    "cancel_timer": "dashboard.timers.cancel",
}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True, slots=True)
class _PageError:
    """What the error page shows of a werkzeug HTTP error (a TieredStateError has the
    same attributes)."""

    http_status: int
    code: str
    message: str


def _time(value: Any) -> str:
    """An ISO-8601 text, a datetime or a Unix time as ``2024-05-01 12:00:00 UTC``."""
    moment: datetime | None = None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value, timezone.utc)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
    if moment is None:
        return "" if value is None else str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _percent(value: Any) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{value * 100:.1f}\u00a0%"  # a no-break space: "%" never wraps alone


def _size(value: Any) -> str:
    if not isinstance(value, int):
        return "n/a"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _with_args(**changes: Any) -> str:
    """The current URL's query string with ``changes`` applied (None removes a key)."""
    args = {k: v for k, v in request.args.items()}
    for key, value in changes.items():
        if value is None:
            args.pop(key, None)
        else:
            args[key] = str(value)
    return "?" + urlencode(args) if args else "?"


def _relative(moment: Any, now: float) -> str:
    """``in 4 min`` or ``2 h ago``: a Unix time relative to ``now``."""
    if not isinstance(moment, (int, float)) or isinstance(moment, bool):
        return ""
    seconds = moment - now
    size = abs(seconds)
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if size >= length:
            text = f"{size / length:.0f} {unit}"
            break
    else:
        text = f"{size:.0f} s"
    return f"in {text}" if seconds > 0 else f"{text} ago"


def _helpers() -> dict[str, Any]:
    return {
        "csrf_field": forms.csrf_field,
        "relative": _relative,
        "fmt_time": _time,
        "percent": _percent,
        "size": _size,
        "pretty": _pretty,
        "with_args": _with_args,
    }


def create_blueprint(settings: TieredStateSettings) -> Blueprint:
    """A new dashboard blueprint for one app (``init_app`` registers it at
    ``TIERED_STATE_DASHBOARD_PREFIX``).

    :param settings: the app's settings; the access-control hook is taken from them.
    :raises ConfigurationError: at registration, when ``settings`` has no hook and the
        app is not ``TESTING`` (see :func:`~flask_tiered_state.access.require_access_control`).
    """
    blueprint = Blueprint(
        BLUEPRINT_NAME,
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )
    hook = settings.access_control
    movements.install()
    blueprint.record_once(lambda state: require_access_control(state.app, settings))

    @blueprint.before_request
    def guard() -> None:
        endpoint = (request.endpoint or "").rpartition(".")[2]
        if endpoint not in ("static", UNMATCHED_ENDPOINT):
            check_access(hook, DASHBOARD_ACTIONS.get(endpoint, "dashboard." + endpoint))
            if request.method == "POST":
                forms.check_post()

    @blueprint.after_request
    def secure(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return forms.set_cookie(response)

    def error_page(exc: TieredStateError) -> ResponseReturnValue:
        message, _ = public_error(exc)  # no host, port or driver text on the page
        log_error(exc, message)
        error = _PageError(exc.http_status, exc.code, message)
        html = render_template("tiered_state_dashboard/error.html", error=error)
        return html, exc.http_status

    def http_error_page(exc: HTTPException) -> ResponseReturnValue:
        error = _PageError(exc.code or 500, error_code(exc), exc.description or exc.name)
        html = render_template("tiered_state_dashboard/error.html", error=error)
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return html, error.http_status, headers

    blueprint.register_error_handler(TieredStateError, error_page)
    limit_blueprint(blueprint, DASHBOARD_ACTIONS, error_page)
    register_http_error_handlers(blueprint, http_error_page)

    def unexpected_page(exc: Exception) -> ResponseReturnValue:
        error = unexpected_error(exc)  # logged here, escaped; not by Flask's own record
        log_internal_error(error)
        return http_error_page(error)

    blueprint.register_error_handler(Exception, unexpected_page)
    blueprint.context_processor(_helpers)
    blueprint.add_url_rule("/", "index", views.index)
    blueprint.add_url_rule("/states", "states", views.states)
    blueprint.add_url_rule("/lookup", "lookup", views.lookup)
    blueprint.add_url_rule("/states/<state_id>", "state", views.state)
    blueprint.add_url_rule(
        "/states/<state_id>/timers/<timer_id>/cancel",
        "cancel_timer",
        views.cancel_timer,
        methods=["POST"],
    )
    blueprint.add_url_rule("/events", "events", views.events)
    blueprint.add_url_rule("/events/retry", "retry_events", views.retry_events, methods=["POST"])
    blueprint.add_url_rule("/tiers", "tiers", views.tiers)
    blueprint.add_url_rule("/health", "health", views.health)
    blueprint.add_url_rule("/backups", "backups", views.backups)
    route_unmatched_urls(blueprint, prefix_itself=False)  # "/" is the overview
    return blueprint

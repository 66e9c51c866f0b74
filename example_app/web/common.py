"""The pages' blueprint, its guard, its error pages and what every view needs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError, generate_csrf, validate_csrf
from marshmallow import Schema
from werkzeug.exceptions import HTTPException, Unauthorized
from wtforms import ValidationError as FormValidationError

from flask_tiered_state.access import check_access, current_actor
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import TieredStateError, ValidationError
from flask_tiered_state.extension import get_app_state

from ..billing import TRANSACTION_LABELS
from ..schemas import PLANS
from .forms import domain_errors, load

__all__ = [
    "URL_PREFIX",
    "actor",
    "attempt",
    "dashboard_url",
    "guard",
    "manager",
    "page",
    "submit",
    "web",
]

#: Where the pages live.
URL_PREFIX = "/app"
#: The pages' blueprint (``app.register_blueprint(web)``).
web = Blueprint("web", __name__, url_prefix=URL_PREFIX)
#: The endpoints a browser without a token may open.
_OPEN = frozenset({"web.login"})

T = TypeVar("T")


def manager() -> StateManager:
    """The app's state manager (the one the JSON API uses)."""
    return get_app_state().manager


def actor() -> str | None:
    """The actor the access hook named for this request (recorded in the history)."""
    return current_actor()


def dashboard_url(state_id: str) -> str | None:
    """The dashboard's page of ``state_id`` (None: the app has no dashboard)."""
    prefix = get_app_state().settings.dashboard_prefix
    return None if prefix is None else f"{prefix}/states/{state_id}"


@web.before_request
def guard() -> ResponseReturnValue | None:
    """Before every page: the app's access hook (a browser without a token goes to the
    login page), then, for a POST, Flask-WTF's CSRF token (400 without a valid one)."""
    if request.endpoint not in _OPEN:
        try:
            check_access(get_app_state().settings.access_control, f"credit.{request.endpoint}")
        except Unauthorized:
            back = request.full_path if request.method == "GET" else None
            return redirect(url_for("web.login", next=back))
    if request.method == "POST":
        try:
            validate_csrf(request.form.get("csrf_token"))
        except FormValidationError as exc:
            raise CSRFError(str(exc)) from None
    return None


@web.context_processor
def _context() -> dict[str, Any]:
    return {
        "actor": actor(),
        "dashboard_url": dashboard_url,
        "dashboard_prefix": get_app_state().settings.dashboard_prefix,
        "payment_label": lambda status: TRANSACTION_LABELS.get(status, status),
        "money": lambda cents, currency="": f"{cents / 100:.2f} {currency}".strip(),
        "plans": PLANS,
        "csrf_token": generate_csrf,
    }


def page(template: str, http_status: int = 200, /, **context: Any) -> ResponseReturnValue:
    """Render one of the pages (``templates/web/<template>``) with ``http_status``."""
    return render_template(f"web/{template}", **context), http_status


class _Refused:
    """What :func:`_try` gives for a refused action (its message is flashed)."""


_REFUSED = _Refused()


def _try(
    action: Callable[[], T], done: str | Callable[[T], str], form: FlaskForm | None
) -> T | _Refused:
    try:
        result = action()
    except ValidationError as exc:
        if form is not None:
            domain_errors(form, exc)
        flash(exc.message, "error")
        return _REFUSED
    except TieredStateError as exc:
        if exc.http_status >= 500:
            raise
        flash(exc.message, "error")
        return _REFUSED
    flash(done if isinstance(done, str) else done(result), "ok")
    return result


def attempt(action: Callable[[], T], done: str, form: FlaskForm | None = None) -> T | None:
    """Run a domain action; flash ``done``, or the refusal's message (a broken rule, a
    transition the state's status does not allow, ...). The messages of a
    :class:`ValidationError` go on ``form``'s fields when there is one. Failures of the
    store itself (5xx) are not refusals: they propagate."""
    result = _try(action, done, form)
    return None if isinstance(result, _Refused) else result


def submit(
    form: FlaskForm,
    schema: Schema,
    action: Callable[[dict[str, Any]], T],
    done: str | Callable[[T], str],
    *,
    again: Callable[[int], ResponseReturnValue],
    then: Callable[[T], ResponseReturnValue],
    extra: dict[str, Any] | None = None,
) -> ResponseReturnValue:
    """The POST of a form, Post/Redirect/Get: the form's values checked as the JSON API
    checks its body (:func:`~.forms.load` with ``schema``; ``extra``: values the form
    does not carry, such as the user's id), then ``action(body)`` as :func:`attempt`
    runs it (``done``: the message, or a function of the result that makes it).

    Done: ``then(result)``, a redirect. Refused, by the form or by the domain:
    ``again(422)``, the page that holds ``form`` rendered with it, so it shows what was
    typed and each field's message (the refusal's message is flashed as well)."""
    body = load(form, schema, extra)
    if body is not None:
        result = _try(lambda: action(body), done, form)
        if not isinstance(result, _Refused):
            return then(result)
    return again(422)


def _error_page(status: int, title: str, message: str) -> ResponseReturnValue:
    return page("error.html", status, title=title, message=message, code=status)


@web.errorhandler(CSRFError)
def _csrf_refused(exc: CSRFError) -> ResponseReturnValue:
    return _error_page(
        400,
        "The form was refused: its CSRF token is missing or invalid",
        f"{exc.description} Forms of these pages carry a token that proves they were "
        "sent from them, not from another site. Go back, reload the page and send the "
        "form again.",
    )


@web.errorhandler(TieredStateError)
def _refused(exc: TieredStateError) -> ResponseReturnValue:
    status = exc.http_status
    if status >= 500:  # the store failed (a tier is down, ...): one line, no traceback
        current_app.logger.error("%s %s failed: %s", request.method, request.path, exc.message)
    titles = {403: "Not allowed", 404: "Not found", 503: "Storage unavailable"}
    return _error_page(status, titles.get(status, "Refused"), exc.message)


@web.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> ResponseReturnValue:
    status = exc.code or 500
    if status >= 500:
        return exc
    return _error_page(status, exc.name, exc.description or "")

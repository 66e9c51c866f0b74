"""JSON error responses: the exception hierarchy and werkzeug's HTTP errors mapped to HTTP.

Every body has the same shape::

    {"error": "<code>", "message": "<sentence>", "details": {...}, "correlation_id": "<id>"}

The status is the exception's :attr:`~flask_tiered_state.errors.TieredStateError.http_status`
(not found 404, validation 422, invalid transition and concurrency conflict 409, too
large 413, forbidden 403, rate limited 429 with ``Retry-After``, tier unavailable 503).

**A guest in the host app.** The library's blueprints answer their own errors: their
handlers are registered on the blueprints, for every HTTP status code as well as for
the exception classes, so they win over the app's handlers -- also over an app's
``@app.errorhandler(404)`` -- for the blueprints' views, and only for them. Flask
sends the routing errors of URLs no rule matches to the app's handlers alone, so
:func:`route_unmatched_urls` gives each blueprint a catch-all rule under its prefix
that raises the 404 or 405 the URL would have had. On the app itself the extension
registers nothing but :func:`register_error_handlers`: a handler of the library's
own exception class, never of ``HTTPException`` or ``Exception``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from flask import Blueprint, Flask, current_app, jsonify, request
from flask.sansio.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from flask.wrappers import Response
from werkzeug.exceptions import (
    HTTPException,
    InternalServerError,
    MethodNotAllowed,
    NotFound,
    default_exceptions,
)
from werkzeug.routing import RoutingException

from .correlation import get_correlation_id
from .errors import RateLimitedError, TieredStateError
from .observability.logging import get_logger

__all__ = [
    "UNMATCHED_ENDPOINT",
    "error_code",
    "error_response",
    "handle_http_exception",
    "handle_tiered_state_error",
    "register_blueprint_error_handlers",
    "register_error_handlers",
    "register_http_error_handlers",
    "route_unmatched_urls",
]

#: The endpoint (in each blueprint) of the catch-all rules of :func:`route_unmatched_urls`.
UNMATCHED_ENDPOINT = "unmatched_url"
#: The methods the catch-all rules accept: HTTP's (any other stays a routing error the
#: app's handlers answer).
_UNMATCHED_METHODS = (
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "OPTIONS",
    "TRACE",
    "CONNECT",
)

logger = get_logger(__name__)


def error_response(
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A JSON error response with the request's correlation id in body and header."""
    correlation_id = get_correlation_id()
    body = {
        "error": code,
        "message": message,
        "details": dict(details or {}),
        "correlation_id": correlation_id,
    }
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def handle_tiered_state_error(exc: TieredStateError) -> Response:
    """Answer a :class:`~flask_tiered_state.errors.TieredStateError` with its status and body."""
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
        headers["Retry-After"] = str(max(0, math.ceil(exc.retry_after)))
    if exc.http_status >= 500:
        logger.error("%s %s failed: %s", request.method, request.path, exc, exc_info=exc)
    return error_response(exc.http_status, exc.code, exc.message, exc.details, headers)


def error_code(exc: HTTPException) -> str:
    """The ``error`` code of a werkzeug HTTP error: its name in snake case (``not_found``)."""
    return re.sub(r"[^a-z0-9]+", "_", (exc.name or "error").lower()).strip("_")


def handle_http_exception(exc: HTTPException) -> Response:
    """Answer a werkzeug HTTP error with the JSON body (status, code from its name)."""
    details: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        details["allowed_methods"] = sorted(exc.valid_methods)
        headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    if isinstance(exc, InternalServerError):
        original = exc.original_exception
        logger.error("%s %s failed", request.method, request.path, exc_info=original or exc)
        message = "The server failed to complete the request; quote the correlation id."
    else:
        message = exc.description or exc.name or "HTTP error"
    return error_response(exc.code or 500, error_code(exc), message, details, headers)


def register_error_handlers(app: Flask) -> None:
    """The one app-wide handler (``TIERED_STATE_REGISTER_ERROR_HANDLERS``): every
    :class:`~flask_tiered_state.errors.TieredStateError` escaping one of the app's own
    views answers the JSON body.

    It is a handler of that class only, so an app's handler of a subclass wins, and so
    does an app's own handler of ``TieredStateError``, whether the app registers it
    before ``init_app`` (this one is then left out) or after (it replaces this one).
    Werkzeug's HTTP errors and every other exception stay the app's.
    """
    if app.error_handler_spec[None][None].get(TieredStateError) is None:
        app.register_error_handler(TieredStateError, handle_tiered_state_error)


def register_http_error_handlers(
    blueprint: Blueprint, handler: Callable[[HTTPException], ResponseReturnValue]
) -> None:
    """``handler`` answers every werkzeug HTTP error raised by ``blueprint``'s views.

    Flask looks for a handler of the status code (the blueprint's, then the app's)
    before one of an exception class, so the handler is registered for each code
    werkzeug knows, and for ``HTTPException`` (the other codes).
    """
    for code in sorted(default_exceptions):
        blueprint.register_error_handler(code, handler)
    blueprint.register_error_handler(HTTPException, handler)


def register_blueprint_error_handlers(blueprint: Blueprint) -> None:
    """Handlers of a blueprint's own routes, which always answer JSON."""
    blueprint.register_error_handler(TieredStateError, handle_tiered_state_error)
    register_http_error_handlers(blueprint, handle_http_exception)


def _allowed_methods() -> list[str]:
    """The methods the app's rules, but the catch-all rules, accept for this URL."""
    adapter = current_app.create_url_adapter(request)
    if adapter is None:  # pragma: no cover - there is one for every request
        return []
    candidates = {method for rule in adapter.map.iter_rules() for method in rule.methods or ()}
    allowed = []
    for method in sorted(candidates):
        try:
            rule, _values = adapter.match(method=method, return_rule=True)
        except (HTTPException, RoutingException):
            continue  # no rule for this method, or another rule's redirect
        if current_app.view_functions.get(rule.endpoint) is not _unmatched_url:
            allowed.append(method)
    return allowed


def _unmatched_url(**_: Any) -> NoReturn:
    """Raise the routing error the URL would have had without the catch-all rules: 405
    when other rules match it with other methods, else 404."""
    allowed = _allowed_methods()
    if allowed:
        raise MethodNotAllowed(valid_methods=allowed)
    raise NotFound()


def route_unmatched_urls(blueprint: Blueprint, *, prefix_itself: bool = True) -> None:
    """Send the URLs under ``blueprint``'s prefix that no rule matches to its handlers.

    Adds catch-all rules (endpoint :data:`UNMATCHED_ENDPOINT`) below the prefix, and for
    the prefix itself with and without a slash when ``prefix_itself`` (leave it off when
    the blueprint has an index route at ``/``). More specific rules win over them, so
    they only answer what would have been a routing error, and raise that error -- 404,
    or 405 with the methods the other rules accept -- in the blueprint, where its
    handlers answer it. The automatic answer to ``OPTIONS`` of the blueprint's routes
    lists the methods of the other rules only. A blueprint registered without a URL
    prefix gets no catch-all: it would take the app's unknown URLs.
    """

    def add_rules(state: BlueprintSetupState) -> None:
        if not state.url_prefix or state.url_prefix == "/":
            return
        for rule in ("", "/", "/<path:path>") if prefix_itself else ("/<path:path>",):
            state.add_url_rule(
                rule,
                UNMATCHED_ENDPOINT,
                _unmatched_url,
                methods=_UNMATCHED_METHODS,
                provide_automatic_options=False,
            )

    def options_allow(response: Response) -> Response:
        if request.method == "OPTIONS" and "Allow" in response.headers:
            response.headers["Allow"] = ", ".join(_allowed_methods())
        return response

    blueprint.record(add_rules)
    blueprint.after_request(options_allow)

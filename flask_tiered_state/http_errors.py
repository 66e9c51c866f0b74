"""JSON error responses: the exception hierarchy and werkzeug's HTTP errors mapped to HTTP.

Every body has the same shape::

    {"error": "<code>", "message": "<sentence>", "details": {...}, "correlation_id": "<id>"}

The status is the exception's :attr:`~flask_tiered_state.errors.TieredStateError.http_status`
(not found 404, validation 422, invalid transition and concurrency conflict 409, too
large 413, forbidden 403, rate limited 429 with ``Retry-After``, tier unavailable 503).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, jsonify, request
from flask.wrappers import Response
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed

from .correlation import get_correlation_id
from .errors import RateLimitedError, TieredStateError
from .observability.logging import get_logger

__all__ = [
    "error_response",
    "handle_http_exception",
    "handle_tiered_state_error",
    "register_blueprint_error_handlers",
    "register_error_handlers",
]

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


def _code_of(exc: HTTPException) -> str:
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
    return error_response(exc.code or 500, _code_of(exc), message, details, headers)


def _under(prefix: str) -> bool:
    path = request.path
    return path == prefix or path.startswith(prefix + "/")


def register_error_handlers(app: Flask, *, api_prefix: str | None) -> None:
    """App-wide handlers (``TIERED_STATE_REGISTER_ERROR_HANDLERS``).

    Every :class:`~flask_tiered_state.errors.TieredStateError` escaping a view answers
    JSON; werkzeug HTTP errors answer JSON only under ``api_prefix`` (a 404 for an
    unknown URL there never reaches a blueprint handler), elsewhere the app's own
    handling is left untouched.
    """
    app.register_error_handler(TieredStateError, handle_tiered_state_error)
    if api_prefix is None:
        return

    def http_error(exc: HTTPException) -> HTTPException | Response:
        if _under(api_prefix):
            return handle_http_exception(exc)
        return exc

    app.register_error_handler(HTTPException, http_error)


def register_blueprint_error_handlers(blueprint: Blueprint) -> None:
    """Handlers of a blueprint's own routes, which always answer JSON."""
    blueprint.register_error_handler(TieredStateError, handle_tiered_state_error)
    blueprint.register_error_handler(HTTPException, handle_http_exception)

"""Request parsing and errors shared by the views.

Every failure is a :class:`~flask_tiered_state.errors.TieredStateError`, which the
extension's error handlers answer as JSON (400, 404, 409, 422, ...), so bad input
never becomes a 500.
"""

from __future__ import annotations

from typing import Any

import marshmallow
from flask import Flask, request
from flask.wrappers import Response
from werkzeug.exceptions import HTTPException

from flask_tiered_state.errors import InvalidRequestError, TieredStateError, ValidationError
from flask_tiered_state.http_errors import handle_http_exception

__all__ = [
    "API_PREFIX",
    "BusinessRuleError",
    "install_json_http_errors",
    "load_body",
    "paging",
]

#: URL prefix of this app's JSON endpoints (the extension's REST API lives below it).
API_PREFIX = "/api"


class BusinessRuleError(TieredStateError):
    """A request that is well-formed but breaks a rule of the credit system (409)."""

    code = "business_rule"
    http_status = 409


def _messages(exc: marshmallow.ValidationError) -> dict[str, Any]:
    return dict(exc.messages) if isinstance(exc.messages, dict) else {"_schema": exc.messages}


def load_body(schema: marshmallow.Schema) -> dict[str, Any]:
    """The request's JSON object checked by ``schema``; an empty body counts as ``{}``.
    (:func:`~example_app.views.common.guard` has checked it is sent as JSON.)

    :raises InvalidRequestError: the body is not a JSON object (400).
    :raises ValidationError: the object breaks the schema (422, messages per field).
    """
    body: Any = {}
    if request.get_data(cache=True):
        try:
            body = request.get_json(silent=True)
        except RecursionError:
            raise InvalidRequestError(
                "The request body nests arrays and objects too deeply to be parsed."
            ) from None
        if not isinstance(body, dict):
            raise InvalidRequestError(
                "The request body must be one JSON object (Content-Type: application/json); "
                f"got {'invalid JSON' if body is None else type(body).__name__}."
            )
    try:
        loaded: dict[str, Any] = schema.load(body)
    except marshmallow.ValidationError as exc:
        raise ValidationError(
            "The request body is invalid; see details.errors for each field.", _messages(exc)
        ) from None
    return loaded


def paging() -> tuple[int, int]:
    """``page`` and ``per_page`` from the query string (1-based; 1-200 per page)."""
    values = []
    for name, default, maximum in (("page", 1, 1_000_000), ("per_page", 25, 200)):
        text = request.args.get(name, str(default))
        if not text.isdigit() or not 1 <= int(text) <= maximum:
            raise InvalidRequestError(
                f"Query parameter {name}={text!r} is invalid; give an integer from 1 to {maximum}.",
                details={"parameter": name, "value": text},
            )
        values.append(int(text))
    return values[0], values[1]


def install_json_http_errors(app: Flask) -> None:
    """Answer werkzeug's HTTP errors (unknown URL, wrong method, ...) under
    :data:`API_PREFIX` with the extension's JSON body; HTML pages keep Flask's."""

    def handler(exc: HTTPException) -> HTTPException | Response:
        path = request.path
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            return handle_http_exception(exc)
        return exc

    app.register_error_handler(HTTPException, handler)

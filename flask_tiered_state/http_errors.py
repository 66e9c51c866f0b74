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

**What an answer does not say.** A 5xx answer names neither hosts, ports, paths nor a
driver's text: its message is a fixed sentence per error code and its details keep the
tier and the state only (:func:`public_error`). A 4xx caused by a backend's refusal (a
database rejecting a value) has the backend's own text replaced by a pointer to the
log. The log keeps every detail, with control characters escaped
(:func:`escape_control`), so a client's ``%0A`` cannot forge a log line.
"""

from __future__ import annotations

import logging
import math
import re
import traceback
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from flask import Blueprint, Flask, current_app, got_request_exception, jsonify, request
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
    "EscapeControlFilter",
    "error_code",
    "error_response",
    "escape_control",
    "handle_http_exception",
    "handle_tiered_state_error",
    "handle_unexpected_error",
    "log_error",
    "log_internal_error",
    "public_error",
    "register_blueprint_error_handlers",
    "register_error_handlers",
    "register_http_error_handlers",
    "route_unmatched_urls",
    "unexpected_error",
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

#: Control characters (C0, DEL, C1) and the Unicode line and paragraph separators.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_control(text: str) -> str:
    """``text`` with its control characters written as escapes (``\\n``, ``\\x1b``,
    ``\\u2028``), so that it stays on one line of a log."""

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        if char in _SHORT_ESCAPES:
            return _SHORT_ESCAPES[char]
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROL_RE.sub(escape, text)


def _escaped_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` (and its causes), each exception's text escaped."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = "".join(lines).rstrip("\n")
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        only = "".join(traceback.format_exception_only(type(current), current)).rstrip("\n")
        text = text.replace(only, escape_control(only))
        current = current.__cause__ or current.__context__
    return text


class EscapeControlFilter(logging.Filter):
    """Escapes the control characters of the records it sees: the message, its text
    arguments (request paths, error messages) and the exception texts of the traceback,
    so that no client input can start a new line in a log. Never drops a record.

    The library's HTTP error logger has one; add one to your app's logger
    (``app.logger.addFilter(EscapeControlFilter())``) for Flask's own
    ``Exception on <path>`` records.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = escape_control(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(escape_control(a) if isinstance(a, str) else a for a in record.args)
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            # Formatters use exc_text when it is set; exc_info stays for other tools.
            record.exc_text = _escaped_traceback(record.exc_info[1])
        return True


logger = get_logger(__name__)
logger.addFilter(EscapeControlFilter())

#: What a 5xx answer says, by error code (``{tier}``: hot, warm, cold).
_PUBLIC_5XX = {
    "tier_unavailable": "The {tier} tier is unavailable; retry later, and quote the "
    "correlation id if it persists.",
    "deadline_exceeded": "The {tier} tier did not answer within the call's time budget; "
    "retry later.",
    "outcome_unknown": "The write was sent to the {tier} tier but its reply was lost, so "
    "it may have been applied: read the state again, or retry with the same "
    "expected_version.",
    "integrity_error": "A stored value failed its checksum and was not returned; quote "
    "the correlation id.",
}
_GENERIC_5XX = "The server failed to complete the request; quote the correlation id."
#: The details a 5xx answer keeps: none of them holds a host, a path or a driver's text.
_PUBLIC_5XX_DETAILS = ("tier", "state_id", "key")
_TIER_RE = re.compile(r"[a-z][a-z0-9_]{0,19}")
#: Packages whose exceptions' texts may quote hosts, ports, paths, SQL or stored values.
_BACKEND_PACKAGES = frozenset(
    {"sqlalchemy", "psycopg", "psycopg2", "psycopg_pool", "sqlite3", "_sqlite3", "redis",
     "botocore", "boto3", "s3transfer", "urllib3"}
)  # fmt: skip
_IN_THE_LOG = "(the backend's own message is in the server log, under the correlation id)"


def _backend_causes(exc: BaseException) -> list[BaseException]:
    """The exceptions of backend packages (or the OS) that ``exc`` was raised from."""
    found: list[BaseException] = []
    seen: set[int] = set()
    current = exc.__cause__ or exc.__context__
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        package = type(current).__module__.partition(".")[0]
        if package in _BACKEND_PACKAGES or isinstance(current, OSError):
            found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _redacted(message: str, causes: list[BaseException]) -> str | None:
    """``message`` with the texts of ``causes`` replaced by a pointer to the log; None
    when none of them could be found in it as it is (the message may quote them
    differently)."""
    replaced = False
    for cause in causes:
        for text in (str(cause), " ".join(str(cause).split())):
            if len(text) >= 8 and text in message:
                message = message.replace(text, _IN_THE_LOG)
                replaced = True
    return message if replaced else None


def public_error(exc: TieredStateError) -> tuple[str, dict[str, Any]]:
    """The message and details an HTTP answer gives of ``exc``.

    A 5xx says a fixed sentence of its code and keeps the details ``tier``, ``state_id``
    and ``key``; a 4xx raised from a backend's error has that error's text replaced by a
    pointer to the log (or, where it cannot be found, a sentence naming the backend's
    refusal); any other error answers its own message and details.
    """
    if exc.http_status >= 500:
        tier = exc.details.get("tier")
        tier = tier if isinstance(tier, str) and _TIER_RE.fullmatch(tier) else "storage"
        message = _PUBLIC_5XX.get(exc.code, _GENERIC_5XX).format(tier=tier.upper())
        details = {k: exc.details[k] for k in _PUBLIC_5XX_DETAILS if k in exc.details}
        if "tier" in details:
            details["tier"] = tier
        return message, details
    causes = _backend_causes(exc)
    if not causes:
        return exc.message, exc.details
    details = {k: v for k, v in exc.details.items() if k != "error"}
    redacted = _redacted(exc.message, causes)
    if redacted is None:
        redacted = f"A storage backend refused the request {_IN_THE_LOG}."
    return redacted, details


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


def _cause_chain(exc: BaseException) -> str:
    """``; caused by Type: text`` for each exception ``exc`` was raised from."""
    parts: list[str] = []
    seen = {id(exc)}
    current = exc.__cause__ or exc.__context__
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"; caused by {type(current).__name__}: {' '.join(str(current).split())}")
        current = current.__cause__ or current.__context__
    return "".join(parts)


def log_error(exc: TieredStateError, public_message: str) -> None:
    """Log what an answer leaves out, on one line each, control characters escaped: a
    handled 5xx (a tier down, a deadline) at ERROR with its status, code, correlation id,
    message and the chain of exceptions it was raised from -- an expected outage, so no
    traceback; a 4xx whose backend text was redacted at WARNING. (Unexpected exceptions,
    :func:`log_internal_error`, keep their traceback.)"""
    if exc.http_status >= 500:
        logger.error(
            "%s %s answered %d %s (correlation id %s): %s%s",
            request.method,
            request.path,
            exc.http_status,
            exc.code,
            get_correlation_id() or "-",
            exc.message,
            _cause_chain(exc),
        )
    elif public_message != exc.message:
        logger.warning("%s %s refused by a backend: %s", request.method, request.path, exc.message)


def handle_tiered_state_error(exc: TieredStateError) -> Response:
    """Answer a :class:`~flask_tiered_state.errors.TieredStateError` with its status and body."""
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
        headers["Retry-After"] = str(max(0, math.ceil(exc.retry_after)))
    message, details = public_error(exc)
    log_error(exc, message)
    return error_response(exc.http_status, exc.code, message, details, headers)


def error_code(exc: HTTPException) -> str:
    """The ``error`` code of a werkzeug HTTP error: its name in snake case (``not_found``)."""
    return re.sub(r"[^a-z0-9]+", "_", (exc.name or "error").lower()).strip("_")


def handle_http_exception(exc: HTTPException) -> Response:
    """Answer a werkzeug HTTP error with the JSON body (status, code from its name)."""
    details: dict[str, Any] = {}
    # The error's own headers (WWW-Authenticate of a 401, Retry-After), but its HTML type.
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        details["allowed_methods"] = sorted(exc.valid_methods)
        headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    if isinstance(exc, InternalServerError):
        log_internal_error(exc)
        message = "The server failed to complete the request; quote the correlation id."
    else:
        message = exc.description or exc.name or "HTTP error"
    return error_response(exc.code or 500, error_code(exc), message, details, headers)


def unexpected_error(exc: Exception) -> InternalServerError:
    """The 500 of an exception no other handler of a blueprint took, for the blueprint's
    handlers to answer and log (escaped), instead of Flask's ``Exception on <path>``
    record, which writes the path as it is. ``got_request_exception`` is sent as Flask
    sends it.

    :raises Exception: ``exc`` again where the app propagates exceptions (``TESTING``,
        debug, ``PROPAGATE_EXCEPTIONS``), for Flask to handle as usual.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    propagate = app.config.get("PROPAGATE_EXCEPTIONS")
    if propagate or (propagate is None and (app.testing or app.debug)):
        raise exc
    got_request_exception.send(app, _async_wrapper=app.ensure_sync, exception=exc)
    return InternalServerError(original_exception=exc)


def log_internal_error(exc: InternalServerError) -> None:
    """Log a 500 with its original exception's traceback, control characters escaped."""
    original = exc.original_exception
    logger.error("%s %s failed", request.method, request.path, exc_info=original or exc)


def handle_unexpected_error(exc: Exception) -> Response:
    """Answer an exception no other handler took with the JSON 500 (see
    :func:`unexpected_error`)."""
    return handle_http_exception(unexpected_error(exc))


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
    blueprint.register_error_handler(Exception, handle_unexpected_error)


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

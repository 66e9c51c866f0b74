"""Correlation ids of HTTP requests.

Each request gets the id its client sent in ``X-Correlation-ID`` (or ``X-Request-ID``)
when that id is 1-128 characters of ``A-Z a-z 0-9 . _ : -``; otherwise (absent, or a
value that could forge log lines) a fresh ``uuid4().hex``. The id is set in the
domain's correlation context for the whole request, so history rows and log
records carry it, and echoed in the response's ``X-Correlation-ID`` header.

The hooks are receivers of Flask's request signals for the one app
(``request_started``, ``request_finished``, ``request_tearing_down``), not entries of
the app's ``before_request`` / ``after_request`` / ``teardown_request`` lists: those
stay exactly the app's, in the app's order. ``request_started`` is sent before any
``before_request`` function runs, so all of them -- registered before or after
``init_app`` -- already see the id; the id is reset after every teardown function.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from flask import (
    Flask,
    g,
    has_request_context,
    request,
    request_finished,
    request_started,
    request_tearing_down,
)
from flask.wrappers import Response

from .domain import context as _domain

__all__ = [
    "REQUEST_HEADERS",
    "RESPONSE_HEADER",
    "get_correlation_id",
    "install_correlation_hooks",
    "new_correlation_id",
]

#: Request headers read, in order of preference.
REQUEST_HEADERS = ("X-Correlation-ID", "X-Request-ID")
# Their WSGI environ keys: read there directly, a header lookup costs more than the check.
_ENVIRON_KEYS = tuple("HTTP_" + name.upper().replace("-", "_") for name in REQUEST_HEADERS)
#: Response header that echoes the id.
RESPONSE_HEADER = "X-Correlation-ID"

_VALID_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_G_ID = "tiered_state_correlation_id"
_G_TOKEN = "tiered_state_correlation_token"


def new_correlation_id() -> str:
    """A fresh correlation id."""
    return uuid.uuid4().hex


def _from_headers() -> str:
    environ = request.environ
    for key in _ENVIRON_KEYS:
        value = environ.get(key)
        if value is not None and _VALID_ID.fullmatch(value := value.strip()):
            return str(value)
    return new_correlation_id()


def get_correlation_id() -> str | None:
    """The current correlation id: the request's, else the domain context's, else None."""
    if has_request_context():
        value = g.get(_G_ID)
        if value is not None:
            return str(value)
    return _domain.get_correlation_id()


def _start(sender: Flask, **_: Any) -> None:
    correlation_id = _from_headers()
    setattr(g, _G_ID, correlation_id)
    setattr(g, _G_TOKEN, _domain.set_correlation_id(correlation_id))


def _echo(sender: Flask, response: Response, **_: Any) -> None:
    if _G_ID not in g:
        # A request_started receiver connected before ours raised, so ours did not run.
        setattr(g, _G_ID, _from_headers())
    response.headers[RESPONSE_HEADER] = g.get(_G_ID)


def _end(sender: Flask, exc: BaseException | None = None, **_: Any) -> None:
    token: Any = g.pop(_G_TOKEN, None)
    if token is not None:
        _domain.reset_correlation_id(token)


def install_correlation_hooks(app: Flask) -> None:
    """Give every request of ``app`` a correlation id (see the module docstring).

    Connects receivers of the request signals for ``app`` only; the app's own request
    hooks are left as they are.
    """
    request_started.connect(_start, app)
    request_finished.connect(_echo, app)
    request_tearing_down.connect(_end, app)

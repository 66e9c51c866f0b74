"""The Flask Credit System in a browser: server-rendered pages under ``/app``.

Users (register, verify, suspend, resume), subscriptions, payments that succeed or
fail, feature flags and login sessions, each page linking to the dashboard's view of
the same state. Every action calls the same domain functions as the JSON API
(:mod:`example_app.accounts`, :mod:`~example_app.billing`, :mod:`~example_app.features`),
so it goes through the state manager, its validators, callbacks and history.

Access: the app's hook (:class:`~example_app.access.TokenAccess`) guards every page,
as it guards the JSON API; a browser without a token is sent to the login page, where
a token is pasted once and remembered in the Flask session. Forms are protected
against cross-site requests by Flask-WTF's CSRF token, checked before every POST of
these pages only (the JSON API refuses form bodies by itself, and the dashboard has its
own token): a POST without a valid one gets a 400 page that says so.
"""

from __future__ import annotations

from . import auth, billing, flags, users  # noqa: F401  (their routes join `web`)
from .common import URL_PREFIX, web

__all__ = ["URL_PREFIX", "web"]

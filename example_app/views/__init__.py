"""The credit system's JSON endpoints (under ``/api``) and its overview page (``/``).

(The pages a person uses in a browser, under ``/app``, are :mod:`example_app.web`.)

Every one of them is guarded by the app's access-control hook, as the extension's REST
API and dashboard are (:func:`~.common.guard`); the JSON endpoints that change
something take ``application/json`` bodies only.
"""

from __future__ import annotations

from flask import Blueprint

from .admin import admin
from .billing import billing
from .common import guard
from .features import features
from .pages import pages
from .sessions import sessions
from .users import users

__all__ = ["api", "pages"]

#: Every JSON endpoint of the app; registered at :data:`example_app.http.API_PREFIX`.
api = Blueprint("credit", __name__)
api.before_request(guard)
for _child in (users, billing, features, sessions, admin):
    api.register_blueprint(_child)
pages.before_request(guard)

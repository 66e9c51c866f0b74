"""The Flask Credit System: the demo application of flask_tiered_state.

Run it with ``make run`` and, in a second terminal, ``make dispatch``; or::

    flask --app example_app:create_app seed-demo
    flask --app example_app:create_app run
    flask --app example_app:create_app state dispatch    # in a second terminal

The dispatcher delivers the asynchronous callbacks (receipts, notices, the timers of
subscriptions) and applies due timers (trials and paid periods end).

Users, payment transactions, subscriptions, feature flags and login sessions are
states of one :class:`~flask_tiered_state.domain.manager.StateManager`; JSON endpoints
live under ``/api``, the extension's REST API under ``/api/state``, the dashboard
under ``/dashboard`` and an overview page at ``/``, all behind a token
(:mod:`example_app.access`; ``make run`` prints the tokens). See
:mod:`example_app.config` for running it on Redis, PostgreSQL and S3 by environment
variables alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from flask_tiered_state.extension import TieredState
from flask_tiered_state.http_errors import EscapeControlFilter
from flask_tiered_state.settings import one_line_configuration_errors

from .access import TokenAccess, load_secret_key, load_tokens
from .cli import archive_command, banner_command, reset_command, seed_command, tokens_command
from .config import DEFAULTS, environment, session_ttl
from .crm import crm_url
from .http import API_PREFIX, install_json_http_errors
from .views import api, pages
from .views.common import CREDIT_KEY
from .wiring import CreditSystem

__all__ = ["create_app"]


@one_line_configuration_errors()
def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then ``TIERED_STATE_*`` / ``CREDIT_*`` environment
    variables, then ``config`` (tests). Without a ``TIERED_STATE_ACCESS_CONTROL`` of its
    own the app is guarded by :class:`~example_app.access.TokenAccess`.

    :raises ConfigurationError: a setting is invalid (under the ``flask`` command: one
        ``Error:`` line and exit status 1, no traceback).
    """
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(DEFAULTS)
    app.config.update(environment())
    if config:
        app.config.update(config)

    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = load_secret_key(app.instance_path)
    if not app.config.get("TIERED_STATE_ACCESS_CONTROL"):
        tokens = load_tokens(app.config, app.instance_path)
        app.config["TIERED_STATE_ACCESS_CONTROL"] = TokenAccess(tokens)

    credit = CreditSystem(session_ttl_seconds=session_ttl(app.config), crm_url=crm_url(app.config))
    app.extensions[CREDIT_KEY] = credit
    # The types, validators and callbacks are registered on every manager the extension
    # builds (the first, and a new one after TieredState.close) before its first use,
    # so every way in (these views, the REST API, the dashboard, `flask state`) sees them.
    TieredState(app, setup=credit.setup)
    install_json_http_errors(app)
    # Flask's own "Exception on <path>" record writes the path as sent: escape it.
    app.logger.addFilter(EscapeControlFilter())
    app.register_blueprint(api, url_prefix=API_PREFIX)
    app.register_blueprint(pages)
    # The pages a browser uses (/app); their forms carry Flask-WTF's CSRF token, checked
    # by the blueprint itself, so the JSON API and the extension's are not CSRF-checked.
    from .web import web

    app.register_blueprint(web)
    app.cli.add_command(seed_command)
    app.cli.add_command(archive_command)
    app.cli.add_command(tokens_command)
    app.cli.add_command(banner_command)
    app.cli.add_command(reset_command)
    return app

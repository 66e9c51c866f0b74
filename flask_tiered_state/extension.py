"""The Flask extension: ``TieredState(app)`` or ``ext.init_app(app)``.

**One manager per app.** ``init_app`` reads and validates the settings, stores an
:class:`AppState` in ``app.extensions["tiered_state"]`` and installs the
correlation-id hooks, error handlers, blueprints and CLI the settings ask for. The
app's :class:`~flask_tiered_state.domain.manager.StateManager` (and its store) is
built on first use, inside or outside an app context, so the
Flask-SQLAlchemy ``db.engine`` it may need is available by then. The extension
object never keeps an app: one ``TieredState()`` can serve many apps.

**Which manager you get.**

- Inside an app context of an app with the extension, :data:`current_state_manager`,
  ``StateManager.get_instance()`` and ``StateManager()`` are all that app's manager.
  App factories and several apps in one process (tests) each get their own.
- Inside an app context of an app *without* the extension,
  :data:`current_state_manager` raises ``RuntimeError`` ("Did you forget
  TieredState(app) / init_app?"); ``StateManager.get_instance()`` falls back to the
  process-wide default manager.
- Outside any app context, :data:`current_state_manager` raises ``RuntimeError``
  ("Working outside of application context"); ``StateManager.get_instance()``
  returns the manager of the one app of the process with the extension (a worker
  thread sees its app's states), raises ``ConfigurationError`` when there are several
  (use ``with app.app_context():``), and with none returns the process-wide default
  manager, built from the ``TIERED_STATE_*`` environment variables.

**Setting up each manager.** Types, validators and callbacks live in the manager.
Register them in a setup function (``TieredState(app, setup=fn)`` or the
:meth:`TieredState.manager_setup` decorator): it runs with every newly built manager,
before first use, so a manager rebuilt after :meth:`TieredState.close` has them too.
The process-wide default manager is not an app's and is not set up.

**Releasing resources.** Connections are borrowed from the store's pools per call,
so an app context holds nothing when it ends. The manager and its pools live as long
as the app; :meth:`TieredState.close` (or :meth:`AppState.close`) releases them and
the next use builds a fresh manager. They are also released when the app is
garbage-collected and at interpreter exit.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask

from .access import require_access_control
from .app_state import (
    EXTENSION_KEY,
    AppState,
    ManagerSetup,
    current_state_manager,
    get_app_state,
    resolve_manager,
)
from .correlation import install_correlation_hooks
from .domain.manager import StateManager
from .errors import ConfigurationError
from .http_errors import register_error_handlers
from .observability.logging import install_library_filters
from .observability.metrics import MetricsCollector
from .settings import TieredStateSettings, load_settings, one_line_configuration_errors

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

__all__ = [
    "EXTENSION_KEY",
    "AppState",
    "ManagerSetup",
    "TieredState",
    "current_state_manager",
    "get_app_state",
]

SetupT = TypeVar("SetupT", bound=ManagerSetup)


class TieredState:
    """Domain states for Flask apps, persisted in a tiered store.

    :param app: an app to initialise now; or call :meth:`init_app` later (app factory).
    :param db: a Flask-SQLAlchemy instance whose engine and metadata the WARM tier and
        the history use (unless ``TIERED_STATE_WARM_URL`` is set), so the app's
        migrations see the tables.
    :param setup: a function ``setup(manager)`` that registers the app's types,
        validators and callbacks; the same as decorating it with :meth:`manager_setup`.
    :param metrics_collector: a
        :class:`~flask_tiered_state.observability.metrics.MetricsCollector` that the
        stores of this extension's apps report to (instead of the one
        ``TIERED_STATE_METRICS`` builds).
    :param options: defaults for settings by lowercase name (``api_prefix="/api"``);
        ``TIERED_STATE_*`` keys in ``app.config`` win over them.
    :raises ConfigurationError: for an unknown option, or a ``setup`` that is not callable.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        db: SQLAlchemy | None = None,
        setup: ManagerSetup | None = None,
        metrics_collector: MetricsCollector | None = None,
        **options: Any,
    ) -> None:
        if metrics_collector is not None and not isinstance(metrics_collector, MetricsCollector):
            raise ConfigurationError(
                "metrics_collector must be a MetricsCollector (SimpleMetricsCollector, "
                f"PrometheusMetricsCollector or your own), not {metrics_collector!r}."
            )
        self.db = db
        #: The collector the stores of this extension's apps report to, or None.
        self.metrics_collector = metrics_collector
        load_settings({}, options)  # fail fast on an unknown name or a bad value
        self._options = dict(options)
        self._setup: list[ManagerSetup] = []
        if setup is not None:
            self.manager_setup(setup)
        if app is not None:
            self.init_app(app)

    def manager_setup(self, fn: SetupT) -> SetupT:
        """Register ``fn(manager)`` to set up every manager this extension builds.

        Types, validators, callbacks and signal receivers live in a manager, and an
        app's manager is rebuilt at the first use after :meth:`close`. A setup function
        runs with *each* newly built manager of every app registered by this extension,
        inside that app's context (``current_app`` is the app), before the manager is
        used by anyone else; the functions run in registration order, then
        :data:`~flask_tiered_state.signals.manager_created` is sent. If one raises, the
        new manager is closed, the error propagates, and the next use tries again.

        Register setup functions before the first use of a manager; one registered later
        applies from the next rebuild on. Usable as a decorator::

            tiered_state = TieredState()

            @tiered_state.manager_setup
            def register_invoices(manager):
                manager.register_state_type("invoice", schema=InvoiceSchema)

        :returns: ``fn`` unchanged.
        :raises ConfigurationError: ``fn`` is not callable.
        """
        if not callable(fn):
            raise ConfigurationError(
                f"A manager setup function must be a callable taking the new StateManager, "
                f"not {fn!r}.",
                details={"setup": repr(fn)},
            )
        self._setup.append(fn)
        return fn

    @property
    def setup_functions(self) -> tuple[ManagerSetup, ...]:
        """The registered setup functions, in the order they run."""
        return tuple(self._setup)

    def init_app(self, app: Flask) -> None:
        """Register the extension on ``app`` (once per app).

        :raises RuntimeError: the app already has it.
        :raises ConfigurationError: a ``TIERED_STATE_*`` value is invalid, or the REST API
            or the dashboard would be mounted without ``TIERED_STATE_ACCESS_CONTROL`` (set
            a hook, or ``"allow-all"``) in an app that is not ``TESTING``.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"flask_tiered_state is already registered on app {app.name!r}. Call "
                "TieredState(app) or init_app(app) once per app; to reach the manager use "
                "current_state_manager, and to change settings set TIERED_STATE_* in "
                "app.config before that single call."
            )
        # Under the `flask` command, a bad setting is one line, not a traceback.
        with one_line_configuration_errors():
            settings = load_settings(app.config, self._options)
            require_access_control(app, settings)
        dashboard = _dashboard_factory(settings)
        from .cli import state_cli

        existing = app.cli.commands.get("state")
        if settings.cli and existing is not None and existing is not state_cli:
            raise ConfigurationError(
                f"App {app.name!r} already has a CLI command named {state_cli.name!r}; rename "
                "it, or set TIERED_STATE_CLI = False to leave 'flask state' off.",
                details={"key": "TIERED_STATE_CLI"},
            )

        state = AppState(self, app, settings)
        app.extensions[EXTENSION_KEY] = state
        StateManager.set_context_resolver(resolve_manager)
        # A guest in the app: its request hooks, logger and error handlers stay its own.
        install_correlation_hooks(app)
        install_library_filters()
        if settings.register_error_handlers:
            register_error_handlers(app)
        if settings.api_prefix is not None:
            from .api.routes import create_api_blueprint

            app.register_blueprint(create_api_blueprint(), url_prefix=settings.api_prefix)
        if dashboard is not None:
            app.register_blueprint(dashboard(settings), url_prefix=settings.dashboard_prefix)
        if settings.cli:
            app.cli.add_command(state_cli)

    def get_app_state(self, app: Flask | None = None) -> AppState:
        """The per-app state of ``app`` (default: the current app)."""
        return get_app_state(app)

    def get_manager(self, app: Flask | None = None) -> StateManager:
        """The manager of ``app`` (default: the current app), built on first use."""
        return get_app_state(app).manager

    def close(self, app: Flask | None = None) -> None:
        """Release the manager and store of ``app`` (default: the current app).

        The next use builds a new manager and runs the :meth:`manager_setup` functions
        with it again.
        """
        get_app_state(app).close()


def _dashboard_factory(settings: TieredStateSettings) -> Any:
    """The dashboard's ``create_blueprint(settings)``, when DASHBOARD_PREFIX asks for it."""
    if settings.dashboard_prefix is None:
        return None
    try:
        module = importlib.import_module("flask_tiered_state.dashboard")
        return module.create_blueprint
    except (ImportError, AttributeError):
        raise ConfigurationError(
            f"TIERED_STATE_DASHBOARD_PREFIX is {settings.dashboard_prefix!r}, but this "
            "installation has no dashboard (flask_tiered_state.dashboard.create_blueprint); "
            "set it to None.",
            details={"key": "TIERED_STATE_DASHBOARD_PREFIX"},
        ) from None

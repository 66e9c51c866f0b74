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
  returns the process-wide default manager (not durable: scripts and tests), never
  an app's manager. Use ``with app.app_context():`` to reach an app's manager.

**Releasing resources.** Connections are borrowed from the store's pools per call,
so an app context holds nothing when it ends. The manager and its pools live as long
as the app; :meth:`TieredState.close` (or :meth:`AppState.close`) releases them and
the next use builds a fresh manager. They are also released when the app is
garbage-collected and at interpreter exit.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from flask import Flask, current_app, has_app_context
from werkzeug.local import LocalProxy

from .correlation import install_correlation_hooks
from .domain.manager import StateManager
from .errors import ConfigurationError
from .http_errors import register_error_handlers
from .observability.logging import install_correlation_filter
from .settings import TieredStateSettings, load_settings

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from .storage.store import TieredStore

__all__ = ["EXTENSION_KEY", "AppState", "TieredState", "current_state_manager", "get_app_state"]

#: The key of the per-app state in ``app.extensions``.
EXTENSION_KEY = "tiered_state"

logger = logging.getLogger(__name__)


class AppState:
    """What ``app.extensions["tiered_state"]`` holds: one app's settings and manager.

    :param extension: the :class:`TieredState` that registered the app.
    :param app: the app (kept as a weak reference).
    :param settings: the app's validated settings.
    """

    def __init__(self, extension: TieredState, app: Flask, settings: TieredStateSettings) -> None:
        self.extension = extension
        self.settings = settings
        self.app_name = app.name
        self.instance_path = app.instance_path
        self._app = weakref.ref(app)
        self._lock = threading.Lock()
        self._manager: StateManager | None = None
        self._finalizer = weakref.finalize(app, AppState._close_manager, self)

    @property
    def local_dir(self) -> Path:
        """Where the embedded SQLite file and COLD directory live."""
        return Path(self.settings.local_dir or os.path.join(self.instance_path, "tiered_state"))

    @property
    def uses_db(self) -> bool:
        """True when the WARM tier and history use the Flask-SQLAlchemy ``db``'s engine."""
        return self.extension.db is not None and self.settings.database_uri is None

    @property
    def create_tables(self) -> bool:
        """Whether missing tables are created at first use (see ``CREATE_TABLES``)."""
        if self.settings.create_tables is not None:
            return self.settings.create_tables
        return not self.uses_db

    @property
    def is_built(self) -> bool:
        """True once the manager exists (and was not closed since)."""
        manager = self._manager
        return manager is not None and not manager.closed

    @property
    def manager(self) -> StateManager:
        """The app's manager, built on first use."""
        manager = self._manager
        if manager is None or manager.closed:
            with self._lock:
                manager = self._manager
                if manager is None or manager.closed:
                    manager = self._manager = self._build()
        return manager

    @property
    def store(self) -> TieredStore:
        """The manager's tiered store."""
        return self.manager.store

    def close(self) -> None:
        """Close the manager and its store; the next use builds new ones."""
        self._close_manager(self)

    @staticmethod
    def _close_manager(state: AppState) -> None:
        with state._lock:
            manager, state._manager = state._manager, None
        if manager is not None:
            manager.close()

    def _db_engine(self) -> tuple[Any, Any]:
        db = self.extension.db
        assert db is not None
        app = self._app()
        if app is None:  # pragma: no cover - the app owns this object
            raise RuntimeError("The app of this TieredState registration no longer exists.")
        try:
            if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
                return db.engine, db.metadata
            with app.app_context():
                return db.engine, db.metadata
        except (RuntimeError, KeyError) as exc:
            raise ConfigurationError(
                f"TieredState(db=...) needs the Flask-SQLAlchemy instance registered on app "
                f"{self.app_name!r} with db.init_app(app) before the state manager is used "
                f"({exc})."
            ) from exc

    def _build(self) -> StateManager:
        from .storage.factory import build_store

        s = self.settings
        engine = metadata = None
        if self.uses_db:
            engine, metadata = self._db_engine()
        local_dir = self.local_dir
        local_dir.mkdir(parents=True, exist_ok=True)
        store = build_store(
            redis_url=s.redis_url,
            database_uri=s.database_uri,
            engine=engine,
            sql_metadata=metadata,
            s3_bucket=s.s3_bucket,
            s3_endpoint_url=s.s3_endpoint_url,
            s3_prefix=s.s3_prefix,
            s3_storage_class=s.s3_storage_class,
            key_prefix=s.key_prefix,
            local_dir=local_dir,
            cache_max_entries=s.cache_max_entries,
            cache_max_bytes=s.cache_max_bytes,
            hot_ttl_seconds=s.hot_ttl_seconds,
            metrics=s.metrics,
            max_value_bytes=s.max_state_bytes,
            promote_after_accesses=s.promote_after_accesses,
            promotion_window_seconds=s.promotion_window_seconds,
            demote_after_idle_seconds=s.demote_after_idle_seconds,
            create_tables=self.create_tables,
        )
        try:
            manager = StateManager.create(
                store=store, create_tables=self.create_tables, hot_ttl_seconds=s.hot_ttl_seconds
            )
        except BaseException:
            store.close()
            raise
        logger.info("Built the state manager of app %r: %r", self.app_name, manager)
        return manager

    def __repr__(self) -> str:
        built = "built" if self.is_built else "not built"
        return f"<AppState of {self.app_name!r} ({built})>"


def get_app_state(app: Flask | None = None) -> AppState:
    """The :class:`AppState` of ``app`` (default: the current app).

    :raises RuntimeError: outside an app context without ``app``, or when the
        extension was not initialised on the app.
    """
    if app is None:
        if not has_app_context():
            raise RuntimeError(
                "Working outside of application context: flask_tiered_state needs the app. "
                "Use 'with app.app_context():', or StateManager.get_instance() for the "
                "process-wide default manager."
            )
        app = cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
    state = app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, AppState):
        raise RuntimeError(
            f"flask_tiered_state is not initialised on app {app.name!r}. Did you forget "
            "TieredState(app) / init_app(app) in the app factory?"
        )
    return state


def _resolve_manager() -> StateManager | None:
    """The context resolver installed into StateManager (see the module docstring)."""
    if not has_app_context():
        return None
    state = current_app.extensions.get(EXTENSION_KEY)
    return state.manager if isinstance(state, AppState) else None


def _current_manager() -> StateManager:
    return get_app_state().manager


#: The current app's :class:`~flask_tiered_state.domain.manager.StateManager`.
current_state_manager: StateManager = cast(StateManager, LocalProxy(_current_manager))


class TieredState:
    """Domain states for Flask apps, persisted in a tiered store.

    :param app: an app to initialise now; or call :meth:`init_app` later (app factory).
    :param db: a Flask-SQLAlchemy instance whose engine and metadata the WARM tier and
        the history use (unless ``TIERED_STATE_DATABASE_URI`` is set), so the app's
        migrations see the tables.
    :param options: defaults for settings by lowercase name (``api_prefix="/api"``);
        ``TIERED_STATE_*`` keys in ``app.config`` win over them.
    :raises ConfigurationError: for an unknown option.
    """

    def __init__(
        self, app: Flask | None = None, *, db: SQLAlchemy | None = None, **options: Any
    ) -> None:
        self.db = db
        load_settings({}, options)  # fail fast on an unknown name or a bad value
        self._options = dict(options)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the extension on ``app`` (once per app).

        :raises RuntimeError: the app already has it.
        :raises ConfigurationError: a ``TIERED_STATE_*`` value is invalid.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"flask_tiered_state is already registered on app {app.name!r}. Call "
                "TieredState(app) or init_app(app) once per app; to reach the manager use "
                "current_state_manager, and to change settings set TIERED_STATE_* in "
                "app.config before that single call."
            )
        settings = load_settings(app.config, self._options)
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
        StateManager.set_context_resolver(_resolve_manager)
        install_correlation_hooks(app)
        install_correlation_filter(
            app.logger, *app.logger.handlers, logging.getLogger("flask_tiered_state")
        )
        if settings.register_error_handlers:
            register_error_handlers(app, api_prefix=settings.api_prefix)
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
        """Release the manager and store of ``app`` (default: the current app)."""
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

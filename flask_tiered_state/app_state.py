"""One app's settings and manager: what ``app.extensions["tiered_state"]`` holds.

The manager is built on first use and rebuilt on the first use after
:meth:`AppState.close`. Each newly built manager is set up before anything else
can use it: the extension's setup functions run with it (in registration order,
inside the app's context), then :data:`~flask_tiered_state.signals.manager_created`
is sent. Other threads wait for the setup; the setup functions themselves (and
what they call, ``current_state_manager`` included) already see the new manager.

The module also gives :class:`~flask_tiered_state.domain.manager.StateManager` what
it cannot know itself: which app's manager ``StateManager.get_instance()`` means
(:func:`resolve_manager`), and how the process-wide default manager is built from the
``TIERED_STATE_*`` environment variables (:func:`default_manager`).
"""

from __future__ import annotations

import gc
import os
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from flask import Flask, current_app, has_app_context
from werkzeug.local import LocalProxy

from .domain.acting import RoleMap
from .domain.manager import CLIENT_COMPONENTS, StateManager
from .errors import ConfigurationError
from .observability.logging import get_logger, install_library_filters
from .settings import TieredStateSettings, config_from_environment, load_settings
from .signals import manager_created

if TYPE_CHECKING:
    from .extension import TieredState
    from .storage.store import TieredStore

__all__ = [
    "EXTENSION_KEY",
    "AppState",
    "ManagerSetup",
    "build_store_from_settings",
    "current_state_manager",
    "default_manager",
    "get_app_state",
    "resolve_manager",
]

#: ``setup(manager)``: registers an app's types, validators and callbacks on a new manager.
ManagerSetup = Callable[[StateManager], object]

logger = get_logger("flask_tiered_state.extension")


class AppState:
    """What ``app.extensions["tiered_state"]`` holds: one app's settings and manager.

    :param extension: the :class:`~flask_tiered_state.extension.TieredState` that
        registered the app; its setup functions run with every manager built here.
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
        # (thread id, manager) while that thread runs the setup of a new manager.
        self._building: tuple[int, StateManager] | None = None
        self._finalizer = weakref.finalize(app, AppState._close_manager, self)
        _initialised.add(self)

    @property
    def local_dir(self) -> Path:
        """Where the embedded SQLite file and COLD directory live."""
        return Path(self.settings.local_dir or os.path.join(self.instance_path, "tiered_state"))

    @property
    def uses_db(self) -> bool:
        """True when the WARM tier and history use the Flask-SQLAlchemy ``db``'s engine."""
        return self.extension.db is not None and self.settings.warm_url is None

    @property
    def create_tables(self) -> bool:
        """Whether missing tables are created at first use (see ``CREATE_TABLES``)."""
        if self.settings.create_tables is not None:
            return self.settings.create_tables
        return not self.uses_db

    @property
    def is_built(self) -> bool:
        """True once the manager exists, is set up, and was not closed since."""
        manager = self._manager
        return manager is not None and not manager.closed

    @property
    def manager(self) -> StateManager:
        """The app's manager, built and set up on first use."""
        manager = self._manager
        if manager is None or manager.closed:
            building = self._building
            if building is not None and building[0] == threading.get_ident():
                return building[1]  # a setup function of this very manager asks
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
        """Close the manager and its store; the next use builds (and sets up) new ones."""
        self._close_manager(self)

    @staticmethod
    def _close_manager(state: AppState) -> None:
        with state._lock:
            manager, state._manager = state._manager, None
        if manager is not None:
            manager.close()

    def _live_app(self) -> Flask:
        app = self._app()
        if app is None:  # pragma: no cover - the app owns this object
            raise RuntimeError("The app of this TieredState registration no longer exists.")
        return app

    @contextmanager
    def _in_app_context(self) -> Iterator[Flask]:
        app = self._live_app()
        if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
            yield app
        else:
            with app.app_context():
                yield app

    def _db_engine(self) -> tuple[Any, Any]:
        db = self.extension.db
        assert db is not None
        try:
            with self._in_app_context():
                return db.engine, db.metadata
        except (RuntimeError, KeyError) as exc:
            raise ConfigurationError(
                f"TieredState(db=...) needs the Flask-SQLAlchemy instance registered on app "
                f"{self.app_name!r} with db.init_app(app) before the state manager is used "
                f"({exc})."
            ) from exc

    def _build(self) -> StateManager:
        s = self.settings
        engine = metadata = None
        if self.uses_db:
            engine, metadata = self._db_engine()
        local_dir = self.local_dir
        local_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the app's data: owner only
        store = build_store_from_settings(
            s,
            local_dir=local_dir,
            create_tables=self.create_tables,
            metrics=self.extension.metrics_collector or s.metrics,
            engine=engine,
            sql_metadata=metadata,
        )
        try:
            manager = StateManager.create(
                store=store,
                create_tables=self.create_tables,
                hot_ttl_seconds=s.hot_ttl_seconds,
                operation_log_level=s.operation_log_level,
                idempotency_ttl_seconds=s.idempotency_ttl_seconds,
                max_json_depth=s.max_json_depth,
                default_max_states=s.max_states_per_type,
                encryption_keys=s.encryption_keys,
                audit_keys=s.audit_keys,
            )
        except BaseException:
            store.close()
            raise
        hook: object = s.access_control
        if isinstance(hook, RoleMap):  # a RoleBasedAccess: acting_as checks it too
            manager.set_roles(hook)
        # The storage modules are imported by now: give their loggers the filter too.
        install_library_filters()
        try:
            self._set_up(manager)
            if s.recover_on_hot_restart:
                from .ops.recovery import RecoveryHandler

                # Watches until the manager is closed (see ops.recovery).
                RecoveryHandler.for_manager(manager, s.critical_keys).watch()
        except BaseException:
            manager.close()
            raise
        logger.info("Built the state manager of app %r: %r", self.app_name, manager)
        return manager

    def _set_up(self, manager: StateManager) -> None:
        """Run the setup functions and send ``manager-created`` (see the module doc)."""
        self._building = (threading.get_ident(), manager)
        try:
            with self._in_app_context() as app:
                for setup in self.extension.setup_functions:
                    setup(manager)
                manager_created.send(app, manager=manager)
        finally:
            self._building = None

    def __repr__(self) -> str:
        built = "built" if self.is_built else "not built"
        return f"<AppState of {self.app_name!r} ({built})>"


#: The key of the per-app state in ``app.extensions``.
EXTENSION_KEY = "tiered_state"


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


#: Every AppState of this process whose app still exists.
_initialised: weakref.WeakSet[AppState] = weakref.WeakSet()


def resolve_manager() -> StateManager | None:
    """Which app's manager ``StateManager.get_instance()`` means, or None for the
    process-wide default: inside an app context, that app's (None when it has no
    extension); outside any, the one app of this process that has the extension.

    :raises ConfigurationError: outside an app context, with several such apps.
    """
    if has_app_context():
        state = current_app.extensions.get(EXTENSION_KEY)
        return state.manager if isinstance(state, AppState) else None
    states = list(_initialised)
    if len(states) > 1:  # apps no longer used may wait for the cycle collector
        gc.collect()
        states = list(_initialised)
    if not states:
        return None
    if len(states) > 1:
        names = ", ".join(sorted(repr(s.app_name) for s in states))
        raise ConfigurationError(
            f"StateManager.get_instance() outside an app context: this process has several "
            f"apps with flask_tiered_state ({names}), so which app's states are meant is "
            "unclear. Run the code inside 'with app.app_context():' of the app you mean."
        )
    return states[0].manager


def _current_manager() -> StateManager:
    return get_app_state().manager


#: The current app's :class:`~flask_tiered_state.domain.manager.StateManager`.
current_state_manager: StateManager = cast(StateManager, LocalProxy(_current_manager))


def build_store_from_settings(
    settings: TieredStateSettings,
    *,
    local_dir: Path,
    create_tables: bool,
    metrics: Any,
    **tiers: Any,
) -> TieredStore:
    """The store ``settings`` describe; ``tiers`` override their tiers
    (:func:`~flask_tiered_state.storage.factory.build_store`'s ``engine``,
    ``sql_metadata``, ``warm_url``, ``hot_repository``, ``cold_repository``)."""
    from .storage.factory import build_store

    s = settings
    arguments: dict[str, Any] = {
        "hot_url": s.hot_url,
        "warm_url": s.warm_url,
        "cold_url": s.cold_url,
        **{k: v for k, v in tiers.items() if v is not None},
    }
    if "engine" in arguments:
        arguments.pop("warm_url", None)
    if "hot_repository" in arguments:
        arguments.pop("hot_url")
    if "cold_repository" in arguments:
        arguments.pop("cold_url")
    return build_store(
        **arguments,
        hot_options=s.hot_options,
        warm_options=s.warm_options,
        cold_options=s.cold_options,
        key_prefix=s.key_prefix,
        local_dir=local_dir,
        cache_max_entries=s.cache_max_entries,
        cache_max_bytes=s.cache_max_bytes,
        cache_ttl_seconds=s.cache_ttl_seconds,
        invalidation=s.invalidation,
        hot_ttl_seconds=s.hot_ttl_seconds,
        metrics=metrics,
        max_value_bytes=s.max_state_bytes,
        promote_after_accesses=s.promote_after_accesses,
        promotion_window_seconds=s.promotion_window_seconds,
        demote_after_idle_seconds=s.demote_after_idle_seconds,
        create_tables=create_tables,
        call_timeout=s.call_timeout_seconds,
        cache_unsynced_seconds=s.cache_unsynced_seconds,
        drop_replay_interval=s.drop_replay_seconds,
        slow_operation_ms=s.slow_operation_ms,
    )


def environment_config(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings among ``TIERED_STATE_*`` environment variables, by key, as text (each
    setting parses its text form); an unknown or misspelt ``TIERED_STATE_*`` variable is
    refused (:func:`~flask_tiered_state.settings.config_from_environment`).

    :raises ConfigurationError: naming each unknown variable.
    """
    return config_from_environment(environ)


def default_manager(components: dict[str, Any]) -> StateManager:
    """The process-wide default manager (see :meth:`StateManager.get_instance`): the
    ``TIERED_STATE_*`` environment variables, with the application's own clients and the
    options of :meth:`StateManager.create` in ``components``.

    A tier whose data would live in a new temporary directory (WARM without
    ``TIERED_STATE_WARM_URL`` or ``database_manager=``, COLD without
    ``TIERED_STATE_COLD_URL`` or ``s3_manager=``, and no ``TIERED_STATE_LOCAL_DIR``) is
    named in a WARNING: not durable. The library never deletes that directory.
    """
    from .storage.factory import store_arguments_for_clients

    settings = load_settings(environment_config(os.environ))
    clients = {k: components.pop(k) for k in CLIENT_COMPONENTS if k in components}
    collector = components.pop("metrics_collector", None)
    tiers = store_arguments_for_clients(**clients, key_prefix=settings.key_prefix)
    # The tiers a new temporary directory would hold: WARM and COLD default to files there.
    temporary = [
        name
        for name, kept_elsewhere in (
            ("WARM", settings.warm_url or "engine" in tiers or "warm_url" in tiers),
            ("COLD", settings.cold_url or "cold_repository" in tiers),
        )
        if not (kept_elsewhere or settings.local_dir)
    ]
    if settings.local_dir:
        local_dir = Path(settings.local_dir)
        local_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    else:
        local_dir = Path(tempfile.mkdtemp(prefix="tiered_state_"))
    create_tables = True if settings.create_tables is None else settings.create_tables
    store = build_store_from_settings(
        settings,
        local_dir=local_dir,
        create_tables=create_tables,
        metrics=collector or settings.metrics,
        **tiers,
    )
    options = {
        "hot_ttl_seconds": settings.hot_ttl_seconds,
        "operation_log_level": settings.operation_log_level,
        "idempotency_ttl_seconds": settings.idempotency_ttl_seconds,
        "max_json_depth": settings.max_json_depth,
        "default_max_states": settings.max_states_per_type,
        "encryption_keys": settings.encryption_keys,
        "audit_keys": settings.audit_keys,
        "create_tables": create_tables,
        **components,
    }
    try:
        manager = StateManager.create(store=store, **options)
        if settings.recover_on_hot_restart:
            from .ops.recovery import RecoveryHandler

            RecoveryHandler.for_manager(manager, settings.critical_keys).watch()
    except BaseException:
        store.close()
        raise
    if temporary:
        logger.warning(
            "The default StateManager (no app context, no app with flask_tiered_state) keeps "
            "its %s tier(s) in the temporary directory %s, which the system may clear: it is "
            "not durable. Set TIERED_STATE_LOCAL_DIR (or the tiers' URLs), pass the app's "
            "clients, or use the app's manager inside 'with app.app_context():'.",
            " and ".join(temporary),
            local_dir,
        )
    else:
        logger.info("Built the default StateManager: %r, files in %s", manager, local_dir)
    return manager


StateManager.set_default_factory(default_manager)

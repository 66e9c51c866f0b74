"""The extension object: embedded defaults, one manager per app, the singleton rule,
double registration, Flask-SQLAlchemy's db, correlation ids and log records."""

from __future__ import annotations

import gc
import importlib
import io
import logging
import pkgutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

import flask_tiered_state
from flask_tiered_state.cli import state_cli
from flask_tiered_state.domain.context import correlation_scope
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import ConfigurationError
from flask_tiered_state.extension import (
    AppState,
    TieredState,
    current_state_manager,
    get_app_state,
)
from flask_tiered_state.observability.logging import (
    LIBRARY_LOGGER,
    CorrelationIdFilter,
    get_logger,
)

from .conftest import AppFactory


def test_no_configuration_runs_on_the_embedded_defaults(make_app: AppFactory) -> None:
    app = make_app()
    instance = Path(app.instance_path)
    assert not instance.exists()  # nothing is built before first use
    with app.app_context():
        record = current_state_manager.register_state("u1", "user", {"data": {"a": 1}})
        repositories = current_state_manager.get_repositories()
    assert record["version"] == 1
    assert [r.backend for r in repositories] == ["memory", "sqlite", "filesystem"]
    assert (instance / "tiered_state" / "tiered_state.sqlite3").is_file()
    assert (instance / "tiered_state" / "cold").is_dir()


def test_the_extension_keeps_no_app(make_app: AppFactory) -> None:
    extension = TieredState()
    app = make_app(extension=extension)
    assert not hasattr(extension, "app")
    state = app.extensions["tiered_state"]
    assert isinstance(state, AppState) and state.extension is extension
    assert extension.get_app_state(app) is state


def test_a_second_registration_says_what_to_do_instead(make_app: AppFactory) -> None:
    app = make_app()
    with pytest.raises(RuntimeError, match=r"already registered on app .* once per app"):
        TieredState(app)
    with pytest.raises(RuntimeError, match="already registered"):
        TieredState().init_app(app)


def test_app_factory_two_apps_in_one_process_each_have_their_own_manager(
    make_app: AppFactory,
) -> None:
    extension = TieredState()
    first, second = make_app(extension=extension), make_app(extension=extension)
    with first.app_context():
        one = current_state_manager._get_current_object()  # type: ignore[attr-defined]
        assert StateManager.get_instance() is one and StateManager() is one
        one.register_state("only-in-first", "user", {})
    with second.app_context():
        two = StateManager.get_instance()
        assert two is not one and current_state_manager.get_state("only-in-first") is None
    with first.app_context():
        assert current_state_manager.get_state("only-in-first") is not None
    assert extension.get_manager(first) is one and extension.get_manager(second) is two


ONE_APP = """
import tempfile, threading
from flask import Flask
from flask_tiered_state import StateManager, TieredState, current_state_manager
from flask_tiered_state.app_state import get_app_state

app = Flask("only", instance_path=tempfile.mkdtemp())
TieredState(app)
app_manager = get_app_state(app).manager
try:
    current_state_manager.get_state("x")
except RuntimeError as exc:
    print("proxy:", "Working outside of application context" in str(exc))
print("same:", StateManager.get_instance() is app_manager is StateManager())
app_manager.register_state("w1", "user", {"data": {}})
seen = []
worker = threading.Thread(target=lambda: seen.append(StateManager().get_state("w1")))
worker.start()
worker.join()
print("worker:", seen[0]["state_id"])
"""


def test_outside_an_app_context_the_one_apps_manager_is_meant(tmp_path: Any) -> None:
    """In a process of its own: this test process has apps of other tests alive."""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", ONE_APP],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["proxy: True", "same: True", "worker: w1"]


def test_outside_an_app_context_several_apps_are_refused(make_app: AppFactory) -> None:
    first, second = make_app(), make_app()
    with pytest.raises(ConfigurationError, match=r"several apps .*app\.app_context\(\)") as info:
        StateManager.get_instance()
    assert repr(first.name) in info.value.message and repr(second.name) in info.value.message
    with second.app_context():
        assert StateManager.get_instance() is get_app_state(second).manager


def test_in_an_app_without_the_extension(make_app: AppFactory) -> None:
    app = make_app(init=False)
    with app.app_context():
        with pytest.raises(RuntimeError, match=r"Did you forget TieredState\(app\) / init_app"):
            current_state_manager.get_state("x")
        assert StateManager.get_instance() is not None  # the process-wide default


def test_components_cannot_reconfigure_an_apps_manager(make_app: AppFactory) -> None:
    app = make_app()
    with app.app_context():
        manager = StateManager.get_instance()
        assert StateManager.get_instance(store=manager.store) is manager
        with pytest.raises(ConfigurationError, match="already exists"):
            StateManager.get_instance(store=object())


def test_close_releases_the_manager_and_the_next_use_rebuilds_it(make_app: AppFactory) -> None:
    extension = TieredState()
    app = make_app(extension=extension)
    with app.app_context():
        first = current_state_manager._get_current_object()  # type: ignore[attr-defined]
        first.register_state("u1", "user", {})
    extension.close(app)
    assert first.closed and not get_app_state(app).is_built
    with app.app_context():
        assert current_state_manager._get_current_object() is not first  # type: ignore[attr-defined]
        assert current_state_manager.get_state("u1") is not None  # durable on disk


def test_with_flask_sqlalchemy_db_the_tables_join_its_metadata(
    make_app: AppFactory, tmp_path: Path
) -> None:
    db = SQLAlchemy()
    extension = TieredState(db=db)
    uri = f"sqlite:///{tmp_path / 'app.sqlite3'}"
    app = make_app(extension=extension, SQLALCHEMY_DATABASE_URI=uri)  # before db.init_app
    db.init_app(app)
    state = get_app_state(app)
    assert state.uses_db and not state.create_tables
    with app.app_context():
        manager = current_state_manager._get_current_object()  # type: ignore[attr-defined]
        assert manager.store.warm.engine is db.engine
        assert {"tiered_state_entries", "tiered_state_history"} <= set(db.metadata.tables)
        db.create_all()  # the app owns the schema
        manager.register_state("u1", "user", {})
        assert manager.get_state_history("u1")[0]["transition"] == "create"
    assert (tmp_path / "app.sqlite3").is_file()
    assert not (Path(app.instance_path) / "tiered_state" / "tiered_state.sqlite3").exists()


def test_db_without_init_app_fails_with_what_to_do(make_app: AppFactory) -> None:
    app = make_app(extension=TieredState(db=SQLAlchemy()))
    with app.app_context(), pytest.raises(ConfigurationError, match=r"db.init_app\(app\)"):
        current_state_manager.get_state("x")


def test_database_uri_wins_over_db(make_app: AppFactory, tmp_path: Path) -> None:
    db = SQLAlchemy()
    uri = f"sqlite:///{tmp_path / 'own.sqlite3'}"
    app = make_app(
        extension=TieredState(db=db),
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.sqlite3'}",
        TIERED_STATE_WARM_URL=uri,
    )
    db.init_app(app)
    with app.app_context():
        current_state_manager.register_state("u1", "user", {})
        assert current_state_manager.store.warm.engine is not db.engine
    assert (tmp_path / "own.sqlite3").is_file()


def test_correlation_ids_are_taken_echoed_recorded_and_generated(app: Flask) -> None:
    client = app.test_client()
    response = client.post("/api/states", json={"state_id": "u1", "type": "user"},
                           headers={"X-Correlation-ID": "order-42"})  # fmt: skip
    assert response.headers["X-Correlation-ID"] == "order-42"
    response = client.post("/api/states/u1/transitions", json={"transition": "activate"},
                           headers={"X-Request-ID": "req.7:a-b"})  # fmt: skip
    assert response.headers["X-Correlation-ID"] == "req.7:a-b"
    rows = current_state_manager.get_state_history("u1")
    assert [r["correlation_id"] for r in rows] == ["order-42", "req.7:a-b"]

    generated = client.get("/api/states/u1").headers["X-Correlation-ID"]
    forged = client.get("/api/states/u1", headers={"X-Correlation-ID": "forged id; FAKE=LOG LINE"})
    too_long = client.get("/api/states/u1", headers={"X-Correlation-ID": "a" * 129})
    for value in (generated, forged.headers["X-Correlation-ID"],
                  too_long.headers["X-Correlation-ID"]):  # fmt: skip
        assert len(value) == 32 and int(value, 16) >= 0
    assert generated != forged.headers["X-Correlation-ID"]


def test_log_records_carry_the_correlation_id(make_app: AppFactory) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    app = make_app(init=False)

    @app.before_request  # registered before the extension's hook, still sees the id
    def log_early() -> None:
        app.logger.warning("before")

    TieredState(app)

    @app.get("/work")
    def work() -> str:
        app.logger.warning("working")
        logging.getLogger("somewhere.else").warning("elsewhere")
        return "ok"

    handler = Keep()
    handler.addFilter(CorrelationIdFilter())
    app.logger.addHandler(handler)
    other = logging.getLogger("somewhere.else")
    other.addHandler(handler)
    try:
        app.test_client().get("/work", headers={"X-Correlation-ID": "c-1"})
        app.logger.warning("outside")
    finally:
        app.logger.removeHandler(handler)
        other.removeHandler(handler)
    assert [(r.getMessage(), r.correlation_id) for r in records] == [  # type: ignore[attr-defined]
        ("before", "c-1"), ("working", "c-1"), ("elsewhere", "c-1"), ("outside", "-")
    ]  # fmt: skip


def test_cli_off_leaves_app_cli_alone_and_the_commands_refuse(make_app: AppFactory) -> None:
    app = make_app(TIERED_STATE_CLI=False)
    assert "state" not in app.cli.commands
    result = app.test_cli_runner().invoke(state_cli, ["list"])
    assert result.exit_code == 1
    assert "disabled for app" in result.output and "TIERED_STATE_CLI = False" in result.output


def test_a_clashing_cli_command_is_refused(make_app: AppFactory) -> None:
    app = make_app(init=False)

    @app.cli.command("state")
    def own_state() -> None: ...

    with pytest.raises(ConfigurationError, match="already has a CLI command named 'state'"):
        TieredState(app)
    app.config["TIERED_STATE_CLI"] = False
    TieredState(app)
    assert app.cli.commands["state"] is own_state


@pytest.mark.parametrize("broken", ["not importable", "no create_blueprint"])
def test_a_dashboard_prefix_without_the_dashboard_is_refused(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    name = "flask_tiered_state.dashboard"
    # None in sys.modules makes `import` fail, as in an installation without the module.
    stand_in = None if broken == "not importable" else types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, stand_in)
    app = make_app(init=False, TIERED_STATE_DASHBOARD_PREFIX="/dash")
    with pytest.raises(ConfigurationError) as caught:
        TieredState(app)
    assert str(caught.value) == (
        "TIERED_STATE_DASHBOARD_PREFIX is '/dash', but this installation has no dashboard "
        "(flask_tiered_state.dashboard.create_blueprint); set it to None."
    )
    assert caught.value.details == {"key": "TIERED_STATE_DASHBOARD_PREFIX"}
    assert "tiered_state" not in app.extensions
    assert not any(rule.rule.startswith("/dash") for rule in app.url_map.iter_rules())

    monkeypatch.undo()  # the real dashboard is back: the same app is accepted
    TieredState(app)
    assert any(rule.rule.startswith("/dash/") for rule in app.url_map.iter_rules())


@pytest.fixture
def library_lines() -> Iterator[io.StringIO]:
    """What a handler on the ``flask_tiered_state`` logger formats with %(correlation_id)s.

    The handler has no filter of its own: the records must bring the attribute.
    """
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(logging.Formatter("%(name)s [%(correlation_id)s] %(message)s"))
    library = logging.getLogger(LIBRARY_LOGGER)
    operations = logging.getLogger("flask_tiered_state.operations")
    level = operations.level
    library.addHandler(handler)
    operations.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        library.removeHandler(handler)
        operations.setLevel(level)


def test_records_of_child_library_loggers_carry_the_correlation_id(
    app: Flask, library_lines: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    client = app.test_client()
    response = client.post("/api/states", json={"state_id": "u1", "type": "user"},
                           headers={"X-Correlation-ID": "order-9"})  # fmt: skip
    assert response.status_code == 201
    storage = logging.getLogger("flask_tiered_state.storage")
    with correlation_scope("job-1"):
        storage.warning("tier hot is unavailable")
        get_logger("flask_tiered_state.some.new_module").warning("from a new module")
    storage.warning("no work in progress")

    lines = library_lines.getvalue().splitlines()
    assert any(
        line.startswith("flask_tiered_state.operations [order-9] state operation create on 'u1'")
        for line in lines
    ), lines
    assert "flask_tiered_state.storage [job-1] tier hot is unavailable" in lines
    assert "flask_tiered_state.some.new_module [job-1] from a new module" in lines
    assert "flask_tiered_state.storage [-] no work in progress" in lines
    assert "Logging error" not in capsys.readouterr().err


def test_every_library_logger_has_the_correlation_filter(make_app: AppFactory) -> None:
    for module in pkgutil.walk_packages(flask_tiered_state.__path__, "flask_tiered_state."):
        importlib.import_module(module.name)
    app = make_app()
    get_app_state(app).manager  # noqa: B018 - building it runs the filter installation
    library = {
        name: logger
        for name, logger in logging.Logger.manager.loggerDict.items()
        if name.split(".")[0] == LIBRARY_LOGGER and isinstance(logger, logging.Logger)
    }
    assert {"flask_tiered_state.storage", "flask_tiered_state.domain"} <= set(library)
    missing = [
        name
        for name, logger in library.items()
        if not any(isinstance(f, CorrelationIdFilter) for f in logger.filters)
    ]
    assert missing == []
    with pytest.raises(ValueError, match=r"'billing\.jobs' is not a library logger"):
        get_logger("billing.jobs")


def test_a_metrics_collector_given_to_the_extension_gets_the_figures(
    make_app: AppFactory,
) -> None:
    from flask_tiered_state.observability.metrics import SimpleMetricsCollector

    collector = SimpleMetricsCollector()
    app = make_app(extension=TieredState(metrics_collector=collector), TIERED_STATE_METRICS=False)
    with app.app_context():
        current_state_manager.register_state("m1", "user", {"data": {}})
        current_state_manager.store.cache.clear()
        assert current_state_manager.get_state("m1") is not None
    warm = collector.snapshot()["warm"]["backends"]["sqlite"]["operations"]
    assert warm["fetch"] >= 1 and warm["store"] + warm["store_many"] >= 1
    with pytest.raises(ConfigurationError, match="metrics_collector must be a MetricsCollector"):
        TieredState(metrics_collector=object())  # type: ignore[arg-type]


def test_a_metrics_collector_makes_the_default_manager_report(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_tiered_state.observability.metrics import SimpleMetricsCollector

    gc.collect()
    monkeypatch.setenv("TIERED_STATE_LOCAL_DIR", str(tmp_path))
    StateManager.set_context_resolver(None)
    collector = SimpleMetricsCollector()
    try:
        manager = StateManager.get_instance(metrics_collector=collector)
        manager.register_state("m1", "user", {"data": {}})
        assert StateManager.get_instance(metrics_collector=collector) is manager
        manager.store.cache.clear()
        assert manager.get_state("m1") is not None
        assert collector.snapshot()["warm"]["backends"]["sqlite"]["operations"]["fetch"] >= 1
    finally:
        StateManager.reset_instance()


def test_generated_correlation_ids_are_distinct_version_4_uuids() -> None:
    import uuid

    from flask_tiered_state.correlation import new_correlation_id

    ids = [new_correlation_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, value)

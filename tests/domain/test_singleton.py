"""Which StateManager get_instance() / StateManager() return, and reset_instance()."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateType
from flask_tiered_state.errors import ConfigurationError

from .conftest import build_test_store


def test_the_default_is_shared_warns_when_not_durable_and_keeps_its_data(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("TIERED_STATE_LOCAL_DIR", "TIERED_STATE_WARM_URL", "TIERED_STATE_COLD_URL"):
        monkeypatch.delenv(key, raising=False)
    with caplog.at_level(logging.WARNING, "flask_tiered_state"):
        first = StateManager()
    assert first is StateManager.get_instance() is StateManager()
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "not durable" in warning.getMessage()
    assert isinstance(warning.args, tuple)
    assert warning.args[0] == "WARM and COLD"
    where = Path(str(warning.args[1]))
    first.register_state("u1", StateType.USER, {"data": {"a": 1}})
    assert StateManager().get_state("u1")["data"] == {"a": 1}  # type: ignore[index]
    StateManager.reset_instance()
    StateManager.reset_instance()  # safe twice
    assert first.closed
    assert (where / "tiered_state.sqlite3").stat().st_size > 0  # acknowledged data stays
    second = StateManager.get_instance()
    assert second is not first and second.get_state("u1") is None  # a new directory


def test_the_default_reads_the_environment_and_is_durable_with_a_local_dir(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERED_STATE_LOCAL_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIERED_STATE_HOT_TTL_SECONDS", "77")
    monkeypatch.setenv("TIERED_STATE_OPERATION_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("TIERED_STATE_TEST_SOMETHING", "not a setting: ignored")
    with caplog.at_level(logging.WARNING, "flask_tiered_state"):
        first = StateManager.get_instance()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert first.operation_log_level == logging.DEBUG
    assert first.store.policy.hot_ttl_seconds == 77
    first.register_state("u1", StateType.USER, {"data": {"a": 1}})
    StateManager.reset_instance()
    again = StateManager.get_instance()  # the same directory: the state is there
    assert again is not first and again.get_state("u1")["data"] == {"a": 1}  # type: ignore[index]
    monkeypatch.setenv("TIERED_STATE_HOT_TTL_SECONDS", "-1")
    StateManager.reset_instance()
    with pytest.raises(ConfigurationError, match="TIERED_STATE_HOT_TTL_SECONDS"):
        StateManager.get_instance()


def test_components_build_the_default_once(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    store = build_test_store("embedded", request, tmp_path)
    manager = StateManager.get_instance(store=store)
    assert manager.store is store
    assert StateManager.get_instance(store=store) is manager
    assert StateManager() is manager
    other = build_test_store("embedded", request, tmp_path / "other")
    try:
        with pytest.raises(ConfigurationError, match="reset_instance"):
            StateManager.get_instance(store=other)
        with pytest.raises(ConfigurationError, match="already exists"):
            StateManager(hot_ttl_seconds=5)
    finally:
        other.close()


def test_create_is_independent(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    created = StateManager.create(store=build_test_store("embedded", request, tmp_path))
    try:
        assert StateManager.get_instance() is not created
    finally:
        created.close()
        created.close()  # idempotent


def test_context_resolver_wins(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    app_manager = StateManager.create(store=build_test_store("embedded", request, tmp_path))
    current: list[StateManager | None] = [app_manager]
    StateManager.set_context_resolver(lambda: current[0])
    try:
        assert StateManager.get_instance() is app_manager is StateManager()
        with pytest.raises(ConfigurationError):
            StateManager.get_instance(store=object())
        current[0] = None  # outside an app context
        default = StateManager.get_instance()
        assert default is not app_manager
    finally:
        StateManager.set_context_resolver(None)
        app_manager.close()


def test_first_use_is_thread_safe() -> None:
    seen: list[StateManager] = []
    barrier = threading.Barrier(6)

    def grab() -> None:
        barrier.wait()
        seen.append(StateManager.get_instance())

    threads = [threading.Thread(target=grab) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 6 and len({id(m) for m in seen}) == 1


def test_closed_default_is_replaced() -> None:
    first = StateManager.get_instance()
    first.close()
    assert StateManager.get_instance() is not first


@pytest.mark.parametrize(
    ("options", "fragment"),
    [({"hot_ttl_seconds": 0}, "hot_ttl_seconds"), ({"max_attempts": "3"}, "max_attempts")],
)
def test_bad_options(
    options: dict[str, Any], fragment: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = build_test_store("embedded", request, tmp_path)
    try:
        with pytest.raises(ConfigurationError, match=fragment):
            StateManager.create(store=store, **options)
    finally:
        store.close()


def test_store_without_sql_warm_tier() -> None:
    with pytest.raises(ConfigurationError, match="SQLStateRepository"):
        StateManager.create(store=object())  # type: ignore[arg-type]


# -- the application's own clients (issue: the documents' get_instance(redis_manager=...)) --


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.s3
def test_the_default_is_made_from_the_applications_clients(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    import redis

    monkeypatch.setenv("TIERED_STATE_KEY_PREFIX", request.getfixturevalue("redis_prefix"))
    redis_manager = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    database_manager = request.getfixturevalue("postgres_engine")
    s3_manager = boto3.client(
        "s3",
        endpoint_url=request.getfixturevalue("s3_endpoint_url"),
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    bucket = request.getfixturevalue("s3_bucket")
    clients = {
        "redis_manager": redis_manager,
        "database_manager": database_manager,
        "s3_manager": s3_manager,
        "bucket": bucket,
    }
    try:
        state_manager = StateManager.get_instance(**clients)
        repositories = state_manager.get_repositories()
        assert [r.backend for r in repositories] == ["redis", "postgresql", "s3"]
        assert repositories.hot.client is redis_manager  # type: ignore[attr-defined]
        assert repositories.warm.engine is database_manager  # type: ignore[attr-defined]
        state_manager.register_state("s1", StateType.SESSION, {"data": {"n": 1}})
        assert redis_manager.exists(request.getfixturevalue("redis_prefix") + "state:s1")
        assert StateManager.get_instance(**clients) is state_manager
        assert StateManager(**clients) is state_manager
        other = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        with pytest.raises(ConfigurationError, match="already exists"):
            StateManager.get_instance(**{**clients, "redis_manager": other})
        other.close()
        StateManager.reset_instance()  # closes what it built, never the app's clients
        assert redis_manager.ping()
        with database_manager.connect():
            pass
    finally:
        redis_manager.close()


@pytest.mark.redis
def test_a_connection_pool_and_a_decoding_client_are_accepted(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import redis

    monkeypatch.setenv("TIERED_STATE_KEY_PREFIX", request.getfixturevalue("redis_prefix"))
    monkeypatch.setenv("TIERED_STATE_LOCAL_DIR", str(tmp_path))
    url = request.getfixturevalue("redis_url")
    pool = redis.ConnectionPool.from_url(url)
    decoding = redis.Redis.from_url(url, decode_responses=True)
    for n, redis_manager in enumerate((pool, decoding)):
        manager = StateManager.get_instance(redis_manager=redis_manager)
        manager.register_state(f"s-{n}", StateType.SESSION, {"data": {"n": n}})
        manager.store.cache.clear()
        assert manager.get_state(f"s-{n}")["data"] == {"n": n}  # type: ignore[index]
        StateManager.reset_instance()
    assert decoding.get("absent") is None  # the app's client still decodes, still open
    decoding.close()
    pool.disconnect()


def test_a_flask_sqlalchemy_db_is_read_inside_an_app_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    monkeypatch.setenv("TIERED_STATE_LOCAL_DIR", str(tmp_path))
    app = Flask("clients", instance_path=str(tmp_path / "instance"))
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'app.db'}"
    db = SQLAlchemy(app)
    with pytest.raises(ConfigurationError, match=r"app\.app_context\(\)"):
        StateManager.get_instance(database_manager=db)
    with app.app_context():
        manager = StateManager.get_instance(database_manager=db)
        assert manager.get_repositories().warm.engine is db.engine  # type: ignore[attr-defined]
        assert "tiered_state_entries" in db.metadata.tables


@pytest.mark.parametrize(
    ("components", "words"),
    [
        ({"database_manager": 42}, "database_manager must be"),
        ({"s3_manager": object()}, "needs bucket="),
        ({"bucket": "b-1"}, "goes with s3_manager"),
        ({"store": object(), "redis_manager": object()}, "not both"),
    ],
)
def test_bad_clients_are_refused_by_name(components: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        StateManager.get_instance(**components)


def test_the_warning_names_each_tier_left_in_a_temporary_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    for key in ("TIERED_STATE_LOCAL_DIR", "TIERED_STATE_WARM_URL", "TIERED_STATE_COLD_URL"):
        monkeypatch.delenv(key, raising=False)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    with caplog.at_level(logging.WARNING, "flask_tiered_state"):
        StateManager.get_instance(database_manager=engine)
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert isinstance(warning.args, tuple) and warning.args[0] == "COLD"  # WARM: the app's
    StateManager.reset_instance()
    caplog.clear()
    monkeypatch.setenv("TIERED_STATE_COLD_URL", f"file://{tmp_path / 'cold'}")
    with caplog.at_level(logging.WARNING, "flask_tiered_state"):
        StateManager.get_instance(database_manager=engine)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    engine.dispose()

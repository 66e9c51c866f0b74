"""Slow operations (flask_tiered_state.observability.slow): a WARNING with the operation,
state id, tier, duration and correlation id, and a metric, for every manager change and
tier call slower than TIERED_STATE_SLOW_OPERATION_MS.

The slow cases are real: a private redis-server paused with ``CLIENT PAUSE`` (the shared
one is never paused), and a PostgreSQL row lock held by another transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from flask import Flask

from flask_tiered_state.domain.context import correlation_scope
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import ConfigurationError
from flask_tiered_state.extension import TieredState, get_app_state
from flask_tiered_state.observability.metrics import PrometheusMetricsCollector
from flask_tiered_state.observability.slow import SlowOperationLog
from flask_tiered_state.storage.base import StateCategory
from flask_tiered_state.storage.factory import build_store
from tests.conftest import DisposableRedis, unique_name

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

PAUSE_MS = 300


def slow_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "flask_tiered_state.slow"]


@pytest.fixture
def store(disposable_redis: DisposableRedis, postgres_engine: Any, tmp_path: Path) -> Iterator[Any]:
    built = build_store(
        hot_url=disposable_redis.url,
        key_prefix=unique_name("slow:") + ":",
        engine=postgres_engine,
        local_dir=tmp_path / "tiers",
        metrics="simple",
        slow_operation_ms=100,
    )
    try:
        yield built
    finally:
        built.close()


def test_a_tier_call_slower_than_the_threshold_is_logged_and_counted(
    store: Any, disposable_redis: DisposableRedis, caplog: pytest.LogCaptureFixture
) -> None:
    store.set("risk_limits", {"max": 10}, category=StateCategory.HOT, ttl_seconds=600)
    store.cache.clear()
    caplog.set_level(logging.WARNING, "flask_tiered_state.slow")
    assert store.get("risk_limits") == {"max": 10}  # fast: nothing logged
    assert slow_records(caplog) == []

    store.cache.clear()
    admin = redis.Redis.from_url(disposable_redis.url)
    try:
        admin.client_pause(PAUSE_MS, all=True)
        started = time.perf_counter()
        with correlation_scope("corr-slow-1"):
            assert store.get("risk_limits") == {"max": 10}
        elapsed_ms = (time.perf_counter() - started) * 1000
    finally:
        admin.close()
    assert elapsed_ms >= PAUSE_MS * 0.8, "Redis did not pause"
    [record] = [r for r in slow_records(caplog) if getattr(r, "operation", None) == "fetch"]
    assert record.levelno == logging.WARNING
    fields = {name: getattr(record, name) for name in (
        "layer", "operation", "state_id", "tier", "backend", "correlation_id")}  # fmt: skip
    assert fields == {
        "layer": "tier",
        "operation": "fetch",
        "state_id": "risk_limits",
        "tier": "hot",
        "backend": "redis",
        "correlation_id": "corr-slow-1",
    }
    assert PAUSE_MS * 0.8 <= record.duration_ms <= elapsed_ms + 1  # type: ignore[attr-defined]
    assert record.threshold_ms == 100.0  # type: ignore[attr-defined]
    assert "Slow tier operation: fetch of 'risk_limits' on the hot tier took" in record.getMessage()
    assert store.metrics_collector.slow_operations()["tier"]["hot"]["fetch"] == 1


class RowLock:
    """Holds a lock on one row of the WARM table from another transaction for a while."""

    def __init__(self, store: Any, key: str, seconds: float) -> None:
        self.engine, self.table, self.key, self.seconds = (
            store.warm.engine, store.warm.table, key, seconds)  # fmt: skip
        self.locked = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        with self.engine.connect() as connection, connection.begin():
            connection.execute(
                sa.select(self.table.c.key).where(self.table.c.key == self.key).with_for_update()
            )
            self.locked.set()
            time.sleep(self.seconds)

    def __enter__(self) -> RowLock:
        self.thread.start()
        assert self.locked.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(10)


def test_a_slow_change_is_logged_once_by_the_manager_with_its_tier(
    disposable_redis: DisposableRedis,
    postgres_engine: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    collector = PrometheusMetricsCollector()
    manager = StateManager.create(
        store=build_store(
            hot_url=disposable_redis.url,
            key_prefix=unique_name("slow:") + ":",
            engine=postgres_engine,
            local_dir=tmp_path / "tiers",
            metrics=collector,
            slow_operation_ms=100,
        )
    )
    try:
        for i in range(20):
            manager.register_state(f"u{i}", "user", {"data": {"n": i}})
        caplog.set_level(logging.WARNING, "flask_tiered_state.slow")
        with RowLock(manager.store, "state:u1", PAUSE_MS / 1000), correlation_scope("corr-2"):
            manager.update_state("u1", {"data": {"n": 100}})
        records = slow_records(caplog)
        [change] = [r for r in records if getattr(r, "layer", None) == "manager"]
        assert (change.operation, change.state_id, change.tier) == ("update", "u1", "warm")  # type: ignore[attr-defined]
        assert change.duration_ms >= PAUSE_MS * 0.8  # type: ignore[attr-defined]
        assert change.correlation_id == "corr-2"  # type: ignore[attr-defined]
        # The WARM write that waited is a slow tier call too.
        tier_calls = [r for r in records if getattr(r, "layer", None) == "tier"]
        assert [(r.tier, r.state_id) for r in tier_calls] == [("warm", "state:u1")]  # type: ignore[attr-defined]

        # A batch waiting on one of its states is reported once, not once per state.
        caplog.clear()
        with RowLock(manager.store, "state:u7", PAUSE_MS / 1000):
            manager.batch_update_state({f"u{i}": {"data": {"n": -i}} for i in range(20)})
        changes = [r for r in slow_records(caplog) if getattr(r, "layer", None) == "manager"]
        assert len(changes) == 1 and changes[0].state_id == "u0"  # type: ignore[attr-defined]

        exposed = collector.exposition().decode()
        assert (
            'state_slow_operations_total{layer="manager",operation="update",tier="warm"} 2.0'
            in exposed
        )
    finally:
        manager.close()


def test_the_setting(tmp_path: Path) -> None:
    def app_with(**config: Any) -> Any:
        app = Flask(unique_name("slow_app_"), instance_path=str(tmp_path / unique_name("i")))
        app.config.update(TESTING=True, **config)
        TieredState(app)
        with app.app_context():
            return get_app_state(app).manager.store

    default = app_with()
    assert default.slow_operations.threshold_ms == 100.0
    assert app_with(TIERED_STATE_SLOW_OPERATION_MS=25).slow_operations.threshold_ms == 25.0
    off = app_with(TIERED_STATE_SLOW_OPERATION_MS=None, TIERED_STATE_METRICS=False)
    assert off.slow_operations is None
    # Off and without metrics, the repositories are called directly.
    assert type(off.coordinator.hot).__name__ == "MemoryStateRepository"
    for store in (default, off):
        store.close()
    with pytest.raises(ConfigurationError, match="milliseconds"):
        SlowOperationLog(0)

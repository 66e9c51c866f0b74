"""Metrics: collectors, the instrumented repository, and zero cost without a collector."""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from flask_tiered_state.errors import ConcurrencyError, InvalidPatternError, TierUnavailableError
from flask_tiered_state.observability.metrics import (
    OPERATIONS,
    MetricsCollector,
    PrometheusMetricsCollector,
    SimpleMetricsCollector,
)
from flask_tiered_state.storage.base import StateCategory, WriteRequest
from flask_tiered_state.storage.factory import build_store
from flask_tiered_state.storage.instrumented import InstrumentedRepository
from flask_tiered_state.storage.keys import validate_pattern
from flask_tiered_state.storage.memory import MemoryStateRepository
from flask_tiered_state.storage.sql import SQLStateRepository
from flask_tiered_state.storage.store import TieredStore

from .store_support import FaultyRepository, doc, memory_tiers


def exercise(repository: InstrumentedRepository) -> None:
    repository.store("a", doc(1))
    repository.fetch("a")
    repository.fetch_many(["a", "b"])
    repository.store_many([WriteRequest("b", doc(2)), WriteRequest("c", doc(3))])
    list(repository.keys("*"))
    repository.delete("a")
    repository.delete_many(["b", "c", "d"])
    with pytest.raises(ConcurrencyError):
        repository.store("x", doc(1), expected_version=3)


def test_simple_collector_counts_operations_errors_and_batches() -> None:
    collector = SimpleMetricsCollector()
    assert isinstance(collector, MetricsCollector)
    faulty = FaultyRepository(MemoryStateRepository(StateCategory.WARM))
    repository = InstrumentedRepository(faulty, collector)
    exercise(repository)
    faulty.failing.add("fetch")
    with pytest.raises(TierUnavailableError):
        repository.fetch("a")
    warm = collector.snapshot()["warm"]
    operations = warm["operations"]
    assert {name: row["count"] for name, row in operations.items()} == {
        "delete": 1, "delete_many": 1, "fetch": 2, "fetch_many": 1, "keys": 1,
        "store": 2, "store_many": 1,
    }  # fmt: skip
    assert warm["errors"] == 1  # the injected failure; a version conflict is not an error
    assert operations["fetch"]["errors"] == 1
    assert warm["batch_size"] == {"count": 3, "sum": 7, "max": 3}
    assert operations["store"]["max_seconds"] >= operations["store"]["mean_seconds"] > 0
    assert warm["backends"] == {
        "memory": {
            "operations": {
                "fetch": 2, "fetch_many": 1, "store": 2, "store_many": 1, "delete": 1,
                "delete_many": 1, "keys": 1, "publish": 0,
            },
            "errors": 1,
            "batch_size": {"count": 3, "sum": 7, "max": 3},
        }
    }  # fmt: skip


def test_observations_naming_no_backend_go_to_the_backend_added_for_the_tier() -> None:
    simple, prometheus = SimpleMetricsCollector(), PrometheusMetricsCollector()
    for collector in (simple, prometheus):
        collector.add_repository("warm", "postgresql")
        collector.observe("warm", "store", 0.001, error=True)  # as a transaction reports
        collector.observe("cold", "fetch", 0.001)  # no repository added for COLD
    assert simple.snapshot()["warm"]["backends"]["postgresql"]["errors"] == 1
    assert simple.snapshot()["cold"]["backends"]["unknown"]["operations"]["fetch"] == 1
    samples = prometheus.snapshot()
    warm = "{backend=postgresql,tier=warm}"
    assert samples[f"state_repository_postgres_operations_store_total{warm}"] == 1.0
    assert samples[f"state_repository_postgres_operations_errors_total{warm}"] == 1.0
    cold = "{backend=unknown,tier=cold}"
    assert samples[f"state_repository_unknown_operations_fetch_total{cold}"] == 1.0


def test_prometheus_collector_uses_the_document_names_in_its_own_registry() -> None:
    collector = PrometheusMetricsCollector()
    other = PrometheusMetricsCollector()  # a second one does not clash
    repository = InstrumentedRepository(MemoryStateRepository(StateCategory.HOT), collector)
    InstrumentedRepository(MemoryStateRepository(StateCategory.HOT), other)
    exercise(repository)
    text = collector.exposition().decode()
    for operation in ("fetch", "store", "delete", "store_many", "delete_many", "errors"):
        assert f"state_repository_memory_operations_{operation}_total{{" in text
    samples = collector.snapshot()
    labels = "{backend=memory,tier=hot}"
    assert samples[f"state_repository_memory_operations_store_total{labels}"] == 2.0
    assert samples[f"state_repository_memory_operations_fetch_total{labels}"] == 1.0
    assert samples[f"state_repository_memory_operations_errors_total{labels}"] == 0.0
    assert samples[f"state_repository_memory_operations_batch_size_count{labels}"] == 3.0
    assert samples[f"state_repository_memory_operations_batch_size_sum{labels}"] == 7.0
    assert samples["state_repository_hot_operation_duration_seconds_count{operation=store}"] == 2.0
    assert not [name for name in samples if "tier=warm" in name]  # no WARM repository
    assert other.snapshot()[f"state_repository_memory_operations_store_total{labels}"] == 0.0
    assert set(OPERATIONS) >= {"fetch", "store", "delete", "store_many", "delete_many"}


class ManyKeys(MemoryStateRepository):
    """Streams 100,000 keys, failing at key number ``fail_at``."""

    fail_at: int | None = None

    def scan_keys(self, pattern: str = "*") -> Iterator[str]:
        validate_pattern(pattern)
        return self._stream()

    def _stream(self) -> Iterator[str]:
        for number in range(100_000):
            if number == self.fail_at:
                raise TierUnavailableError("hot", "the server went away")
            yield f"k{number}"


def test_instrumented_scan_keys_streams_and_reports_one_keys_call_at_its_end() -> None:
    collector = SimpleMetricsCollector()
    inner = ManyKeys(StateCategory.HOT)
    repository = InstrumentedRepository(inner, collector)

    def keys_calls() -> dict[str, int]:
        row = collector.snapshot().get("hot", {}).get("operations", {}).get("keys", {})
        return {"count": row.get("count", 0), "errors": row.get("errors", 0)}

    stream = repository.scan_keys("*")
    assert isinstance(stream, Generator)
    assert list(itertools.islice(stream, 5000)) == [f"k{i}" for i in range(5000)]
    assert keys_calls() == {"count": 0, "errors": 0}  # still streaming: nothing collected
    stream.close()
    assert keys_calls() == {"count": 1, "errors": 0}

    inner.fail_at = 3
    failing = repository.scan_keys()
    assert [next(failing) for _ in range(3)] == ["k0", "k1", "k2"]
    with pytest.raises(TierUnavailableError):
        next(failing)
    assert keys_calls() == {"count": 2, "errors": 1}

    with pytest.raises(InvalidPatternError):
        repository.scan_keys("a b")  # refused at the call, not a failure of the tier
    assert keys_calls() == {"count": 3, "errors": 1}


def test_instrumented_repository_passes_other_attributes_through(tmp_path: Path) -> None:
    sql = SQLStateRepository(f"sqlite:///{tmp_path / 'w.sqlite3'}")
    repository = InstrumentedRepository(sql, SimpleMetricsCollector())
    try:
        assert (repository.backend, repository.category) == ("sqlite", StateCategory.WARM)
        assert repository.engine is sql.engine
        with repository.unit_of_work() as work:
            work.store("k", doc(1))
        assert repository.fetch("k") is not None
        assert repository.ping() and repository.stats().key_count == 1
    finally:
        repository.close()


def test_a_store_without_a_collector_calls_the_repositories_directly() -> None:
    repositories = memory_tiers()
    store = TieredStore(repositories)
    assert store.coordinator.repositories is repositories
    assert store.metrics()["repositories"] == {}


def test_a_store_with_a_collector_reports_every_tier() -> None:
    collector = SimpleMetricsCollector()
    repositories = memory_tiers()
    store = TieredStore(repositories, metrics=collector)
    assert store.get_repositories() is repositories  # direct access stays unwrapped
    store.set("k", 1)
    store.cache.clear()
    store.get("k")
    store.batch_set({"a": 1, "b": 2})
    figures = store.metrics()["repositories"]
    assert figures["warm"]["operations"]["store"]["count"] == 1
    assert figures["warm"]["operations"]["fetch"]["count"] == 1
    assert figures["hot"]["operations"]["fetch"]["count"] == 1
    assert figures["warm"]["batch_size"]["max"] == 2


def test_writes_inside_transactions_are_counted(tmp_path: Path) -> None:
    store = build_store(local_dir=tmp_path, metrics="prometheus")
    try:
        with store.transaction() as txn:
            txn.set("a", 1)
            txn.set("b", 2)
            assert txn.delete("b") is True
            txn.set("s", 1, category="hot")  # HOT home: its WARM copy is deleted too
        with pytest.raises(ConcurrencyError), store.transaction() as txn:
            txn.set("a", 3, expected_version=7)
        samples = store.metrics()["repositories"]
        warm, hot = "{backend=sqlite,tier=warm}", "{backend=memory,tier=hot}"
        assert samples[f"state_repository_sqlite_operations_store_total{warm}"] == 3.0
        assert samples[f"state_repository_sqlite_operations_delete_total{warm}"] == 2.0
        # A conflict is no error.
        assert samples[f"state_repository_sqlite_operations_errors_total{warm}"] == 0.0
        assert samples[f"state_repository_memory_operations_store_total{hot}"] == 1.0
        assert samples["state_repository_warm_operation_duration_seconds_count{operation=store}"]
    finally:
        store.close()


def test_transactions_without_a_collector_use_the_unit_of_work_directly(tmp_path: Path) -> None:
    from flask_tiered_state.storage.sql import SQLUnitOfWork

    store = build_store(local_dir=tmp_path)
    try:
        with store.transaction() as txn:
            assert type(txn._uow) is SQLUnitOfWork
            txn.set("a", 1)
        assert store.get("a") == 1
    finally:
        store.close()

"""The Prometheus names of the design documents, on every backend and its real server.

``state.repository.{redis,postgres,s3}.operations.{fetch,store,delete,store_many,
delete_many,errors}_total`` and the batch-size histogram, spelt the Prometheus way
(dots as underscores) and labelled with the tier and the backend; the embedded and
third-party backends go by their own name (``state_repository_sqlite_...``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flask_tiered_state.errors import (
    ConcurrencyError,
    InvalidKeyError,
    InvalidRequestError,
    TierUnavailableError,
)
from flask_tiered_state.observability.metrics import (
    PrometheusMetricsCollector,
    SimpleMetricsCollector,
)
from flask_tiered_state.storage.base import StateCategory, StateRepository, WriteRequest
from flask_tiered_state.storage.factory import build_store
from flask_tiered_state.storage.instrumented import InstrumentedRepository
from tests.conftest import free_port, s3_url

from .store_support import doc

prometheus_client = pytest.importorskip("prometheus_client")

#: The backend's part of the metric names.
NAME_PART = {
    "memory": "memory",
    "redis": "redis",
    "postgresql": "postgres",
    "sqlite": "sqlite",
    "s3": "s3",
    "filesystem": "filesystem",
}
DOCUMENT_COUNTERS = ("fetch", "store", "delete", "store_many", "delete_many", "errors")


def series(registry: Any) -> dict[str, float]:
    """``name{labels}`` -> value of every sample line of ``generate_latest``."""
    text = prometheus_client.generate_latest(registry).decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def types(registry: Any) -> dict[str, str]:
    """Family name -> type, from the ``# TYPE`` lines."""
    text = prometheus_client.generate_latest(registry).decode()
    return {
        line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE")
    }


def labels(repository: StateRepository) -> str:
    return f'{{backend="{repository.backend}",tier="{repository.category.value}"}}'


class Both:
    """Reports every observation to a Prometheus and an in-memory collector."""

    def __init__(self) -> None:
        self.prometheus = PrometheusMetricsCollector()
        self.simple = SimpleMetricsCollector()

    def add_repository(self, tier: str, backend: str) -> None:
        self.prometheus.add_repository(tier, backend)
        self.simple.add_repository(tier, backend)

    def observe(self, tier: str, operation: str, seconds: float, **figures: Any) -> None:
        self.prometheus.observe(tier, operation, seconds, **figures)
        self.simple.observe(tier, operation, seconds, **figures)

    def snapshot(self) -> dict[str, Any]:
        return self.simple.snapshot()


def test_metric_names_of_the_backends() -> None:
    from flask_tiered_state.observability.metrics import metric_name

    assert metric_name("redis", "fetch_total") == "state_repository_redis_operations_fetch_total"
    assert metric_name("postgresql", "errors_total") == (
        "state_repository_postgres_operations_errors_total"
    )
    assert metric_name("s3", "batch_size") == "state_repository_s3_operations_batch_size"
    assert metric_name("sqlite", "store_total") == "state_repository_sqlite_operations_store_total"
    assert metric_name("my-kv.v2", "store_total") == (
        "state_repository_my_kv_v2_operations_store_total"
    )


def test_every_backend_counts_its_calls_under_the_document_names(
    repository: StateRepository,
) -> None:
    collector = Both()
    wrapped = InstrumentedRepository(repository, collector)
    part, tier = NAME_PART[repository.backend], repository.category.value
    prefix, where = f"state_repository_{part}_operations", labels(repository)
    zero = {
        f"{prefix}_{op}_total{where}": 0.0
        for op in ("fetch", "fetch_many", "store", "store_many", "delete", "delete_many")
    }
    before = series(collector.prometheus.registry)
    assert {name: before[name] for name in zero} == zero  # there from the start

    wrapped.store("a", doc(1))
    wrapped.fetch("a")
    wrapped.fetch_many(["a", "b"])
    wrapped.store_many([WriteRequest("b", doc(2)), WriteRequest("c", doc(3))])
    assert sorted(wrapped.keys("*")) == ["a", "b", "c"]
    wrapped.delete("a")
    wrapped.delete_many(["b", "c", "d"])
    with pytest.raises(InvalidKeyError):  # the caller's mistake: counted, not an error
        wrapped.fetch("no spaces in keys")
    with pytest.raises(ConcurrencyError):  # a version conflict: not an error either
        wrapped.store("x", doc(1), expected_version=3)

    found = {
        name: value
        for name, value in series(collector.prometheus.registry).items()
        if name.startswith(prefix) and "_bucket{" not in name and "_created{" not in name
    }
    assert found == {
        f"{prefix}_fetch_total{where}": 2.0,
        f"{prefix}_fetch_many_total{where}": 1.0,
        f"{prefix}_store_total{where}": 2.0,
        f"{prefix}_store_many_total{where}": 1.0,
        f"{prefix}_delete_total{where}": 1.0,
        f"{prefix}_delete_many_total{where}": 1.0,
        f"{prefix}_keys_total{where}": 1.0,
        f"{prefix}_publish_total{where}": 0.0,
        f"{prefix}_errors_total{where}": 0.0,
        f"{prefix}_batch_size_count{where}": 3.0,  # fetch_many, store_many, delete_many
        f"{prefix}_batch_size_sum{where}": 7.0,
    }
    families = types(collector.prometheus.registry)
    for counter in DOCUMENT_COUNTERS:
        assert families[f"{prefix}_{counter}_total"] == "counter"
    assert families[f"{prefix}_batch_size"] == "histogram"
    # The latency histograms stay, per tier.
    latency = series(collector.prometheus.registry)
    assert latency[f'state_repository_{tier}_operation_duration_seconds_count{{operation="fetch"}}']

    # The in-memory collector has the same counts.
    figures = collector.simple.snapshot()[tier]["backends"][repository.backend]
    assert figures == {
        "operations": {
            "fetch": 2, "fetch_many": 1, "store": 2, "store_many": 1, "delete": 1,
            "delete_many": 1, "keys": 1, "publish": 0,
        },
        "errors": 0,
        "batch_size": {"count": 3, "sum": 7, "max": 3},
    }  # fmt: skip


# -- failures of the tier --------------------------------------------------------------


def _closed_redis(port: int) -> StateRepository:
    from flask_tiered_state.storage.redis import RedisStateRepository

    return RedisStateRepository(f"redis://127.0.0.1:{port}/0", connect_timeout=1)


def _closed_postgres(port: int) -> StateRepository:
    from flask_tiered_state.storage.sql import SQLStateRepository

    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/none"
    return SQLStateRepository(url, create_tables=False, connect_timeout=1)


def _closed_s3(port: int) -> StateRepository:
    from flask_tiered_state.storage.s3 import S3StateRepository

    return S3StateRepository(
        "no-bucket",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        connect_timeout=1,
        max_attempts=1,
    )


CLOSED: dict[str, Callable[[int], StateRepository]] = {
    "redis": _closed_redis,
    "postgres": _closed_postgres,
    "s3": _closed_s3,
}


@pytest.fixture(params=sorted(CLOSED))
def unreachable(request: pytest.FixtureRequest) -> Iterator[StateRepository]:
    """A Redis, PostgreSQL or S3 repository whose server's port is closed."""
    repository = CLOSED[request.param](free_port())
    try:
        yield repository
    finally:
        repository.close()


def test_errors_count_the_calls_the_tier_failed_not_the_callers_mistakes(
    unreachable: StateRepository,
) -> None:
    collector = PrometheusMetricsCollector()
    wrapped = InstrumentedRepository(unreachable, collector)
    prefix = f"state_repository_{NAME_PART[unreachable.backend]}_operations"
    errors, where = f"{prefix}_errors_total", labels(unreachable)
    assert series(collector.registry)[f"{errors}{where}"] == 0.0

    with pytest.raises(TierUnavailableError):
        wrapped.fetch("k")
    assert series(collector.registry)[f"{errors}{where}"] == 1.0
    with pytest.raises(TierUnavailableError):
        wrapped.store_many([WriteRequest("a", doc(1)), WriteRequest("b", doc(2))])
    with pytest.raises(TierUnavailableError):
        wrapped.delete_many(["a", "b"])
    with pytest.raises(InvalidKeyError):  # refused before the tier is asked
        wrapped.fetch("no spaces in keys")
    with pytest.raises(InvalidKeyError):
        wrapped.delete_many(["a", "no spaces"])

    found = series(collector.registry)
    assert found[f"{errors}{where}"] == 3.0
    assert found[f"{prefix}_fetch_total{where}"] == 2.0
    assert found[f"{prefix}_store_many_total{where}"] == 1.0
    assert found[f"{prefix}_delete_many_total{where}"] == 2.0


def test_a_value_the_database_refuses_is_not_an_error_of_the_tier(tmp_path: Path) -> None:
    from flask_tiered_state.storage.sql import SQLStateRepository

    collector = SimpleMetricsCollector()
    sql = SQLStateRepository(f"sqlite:///{tmp_path / 'w.sqlite3'}")
    wrapped = InstrumentedRepository(sql, collector)
    try:
        with pytest.raises(InvalidRequestError):  # copies need their version
            wrapped.store_copies([WriteRequest("a", doc(1))])
    finally:
        sql.close()
    figures = collector.snapshot()["warm"]["backends"]["sqlite"]
    assert figures["operations"]["store_many"] == 1 and figures["errors"] == 0


# -- through a store -------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.s3
def test_a_store_on_the_servers_reports_redis_postgres_and_s3(
    redis_url: str,
    redis_prefix: str,
    postgres_engine: Any,
    s3_bucket: str,
    s3_endpoint_url: str,
    tmp_path: Path,
) -> None:
    collector = PrometheusMetricsCollector()
    store = build_store(
        hot_url=redis_url,
        engine=postgres_engine,
        cold_url=s3_url(s3_bucket, s3_endpoint_url),
        key_prefix=redis_prefix,
        local_dir=tmp_path,
        metrics=collector,
        promote_after_accesses=1,
    )
    try:
        store.set("k", {"v": 1})
        store.cache.clear()
        assert store.get("k") == {"v": 1}  # HOT misses, WARM answers, HOT gets a copy
        store.batch_set({"a": 1, "b": 2})
        assert store.demote_to_cold("k")
        store.cache.clear()
        assert store.get("k") == {"v": 1}
        assert store.batch_delete(["a", "b"]) == 2
        assert store.delete("k")
        found = series(collector.registry)
    finally:
        store.close()
    where = {
        "redis": '{backend="redis",tier="hot"}',
        "postgres": '{backend="postgresql",tier="warm"}',
        "s3": '{backend="s3",tier="cold"}',
    }
    for part, labelled in where.items():
        prefix = f"state_repository_{part}_operations"
        for counter in DOCUMENT_COUNTERS:
            assert f"{prefix}_{counter}_total{labelled}" in found
        assert found[f"{prefix}_errors_total{labelled}"] == 0.0
        assert f"{prefix}_batch_size_count{labelled}" in found
        assert found[f"{prefix}_fetch_total{labelled}"] >= 1.0
    redis, postgres, s3 = (f"state_repository_{part}_operations" for part in where)
    assert found[f"{postgres}_store_total{where['postgres']}"] >= 1.0
    assert found[f"{postgres}_store_many_total{where['postgres']}"] >= 1.0
    assert found[f"{postgres}_delete_many_total{where['postgres']}"] >= 1.0
    assert found[f"{redis}_store_many_total{where['redis']}"] >= 1.0  # the copy
    assert found[f"{s3}_store_many_total{where['s3']}"] >= 1.0  # the demotion
    assert found[f"{s3}_batch_size_sum{where['s3']}"] >= 1.0
    # No series under the tier names: those are the latency histograms' only.
    assert not [name for name in found if name.startswith("state_repository_hot_operations")]


def test_a_redis_on_a_closed_port_counts_errors_through_a_store(tmp_path: Path) -> None:
    pytest.importorskip("redis")
    collector = PrometheusMetricsCollector()
    store = build_store(
        hot_url=f"redis://127.0.0.1:{free_port()}/0",
        hot_options={"connect_timeout": 1},
        local_dir=tmp_path,
        metrics=collector,
        invalidation=False,
    )
    redis = '{backend="redis",tier="hot"}'
    sqlite = '{backend="sqlite",tier="warm"}'
    errors = "state_repository_redis_operations_errors_total"
    try:
        store.set("k", 1)  # WARM; dropping the HOT copy fails
        store.cache.clear()
        assert store.get("k") == 1  # served by WARM
        failed = series(collector.registry)[f"{errors}{redis}"]
        assert failed >= 1.0
        with pytest.raises(InvalidKeyError):
            store.get("no spaces in keys")
        found = series(collector.registry)
    finally:
        store.close()
    assert found[f"{errors}{redis}"] == failed
    assert found[f"state_repository_sqlite_operations_errors_total{sqlite}"] == 0.0
    assert found[f"state_repository_sqlite_operations_store_total{sqlite}"] == 1.0


def test_collectors_sharing_a_registry_share_its_series() -> None:
    from flask_tiered_state.storage.memory import MemoryStateRepository

    registry = prometheus_client.CollectorRegistry()
    first = PrometheusMetricsCollector(registry)
    second = PrometheusMetricsCollector(registry)  # no "Duplicated timeseries"
    for collector in (first, second):
        InstrumentedRepository(MemoryStateRepository(StateCategory.HOT), collector).fetch("k")
    name = 'state_repository_memory_operations_fetch_total{backend="memory",tier="hot"}'
    assert series(registry)[name] == 2.0
    latency = 'state_repository_hot_operation_duration_seconds_count{operation="fetch"}'
    assert series(registry)[latency] == 2.0

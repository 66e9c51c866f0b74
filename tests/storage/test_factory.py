"""build_store: backends from settings, embedded defaults, clear configuration errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_tiered_state.errors import ConfigurationError
from flask_tiered_state.observability.metrics import (
    PrometheusMetricsCollector,
    SimpleMetricsCollector,
)
from flask_tiered_state.storage.factory import build_metrics, build_store


def test_no_backends_gives_the_embedded_defaults(tmp_path: Path) -> None:
    store = build_store(local_dir=tmp_path / "state", hot_ttl_seconds=42, max_value_bytes=100)
    try:
        repos = store.get_repositories()
        assert [r.backend for r in repos] == ["memory", "sqlite", "filesystem"]
        assert (repos.redis, repos.postgres, repos.s3) == (None, None, None)
        assert (tmp_path / "state" / "tiered_state.sqlite3").is_file()
        assert (tmp_path / "state" / "cold").is_dir()
        assert store.policy.hot_ttl_seconds == 42 and store.max_value_bytes == 100
        assert store.metrics_collector is None
        assert store.cache.max_age_seconds == 300.0 and store.invalidation is None
        store.set("k", {"a": 1})
        with store.transaction() as txn:
            txn.set("k", {"a": 2})
        store.cache.clear()
        assert store.get("k") == {"a": 2}
    finally:
        store.close()


def test_cache_ttl_seconds_sets_the_cache_maximum_age(tmp_path: Path) -> None:
    for given, expected in ((None, None), (60, 60.0), (0.5, 0.5)):
        store = build_store(local_dir=tmp_path, cache_ttl_seconds=given, invalidation=False)
        try:
            assert store.cache.max_age_seconds == expected
        finally:
            store.close()


def test_embedded_defaults_need_local_dir() -> None:
    with pytest.raises(ConfigurationError, match="local_dir is needed"):
        build_store()


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.s3
def test_urls_and_a_bucket_give_the_real_backends(
    redis_url: str, redis_prefix: str, postgres_url: str, s3_bucket: str, s3_endpoint_url: str
) -> None:
    store = build_store(
        redis_url=redis_url,
        key_prefix=redis_prefix,
        database_uri=postgres_url,
        s3_bucket=s3_bucket,
        s3_endpoint_url=s3_endpoint_url,
        s3_prefix="factory/",
    )
    try:
        repos = store.get_repositories()
        assert [r.backend for r in repos] == ["redis", "postgresql", "s3"]
        assert store.warm is repos.warm
        store.set("k", 1, category="cold")
        store.cache.clear()
        assert store.get("k") == 1
    finally:
        store.delete("k")
        store.close()


@pytest.mark.redis
def test_a_redis_client_and_an_engine_are_used_as_given(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'given.sqlite3'}")
    metadata = sa.MetaData()
    store = build_store(
        redis_client=client,
        key_prefix=redis_prefix,
        engine=engine,
        sql_metadata=metadata,
        local_dir=tmp_path,
    )
    try:
        assert store.warm.engine is engine
        assert "tiered_state_entries" in metadata.tables
        assert store.get_repositories().hot.client is client  # type: ignore[attr-defined]
        assert store.invalidation is not None and store.invalidation.subscriber.connected
    finally:
        store.close()
        assert client.ping()  # a client passed in stays open
        client.close()
        engine.dispose()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"redis_url": "http://cache:6379"}, ["http://cache:6379", "redis://", "rediss://"]),
        ({"redis_url": "redis://:s3cret@cache/0", "redis_client": object()}, ["not both"]),
        ({"database_uri": "mysql://db/x"}, ["mysql://db/x", "postgresql://", "sqlite:///"]),
        ({"database_uri": "sqlite://", "engine": object()}, ["not both"]),
        ({"s3_endpoint_url": "http://minio:9000"}, ["s3_bucket"]),
        ({"s3_bucket": "b-1", "s3_endpoint_url": "ftp://minio"}, ["ftp://minio", "https://"]),
        ({"metrics": "statsd"}, ["'statsd'", "prometheus"]),
        ({"promote_after_accesses": 0}, ["promote_after_accesses"]),
        ({"cache_max_entries": 0}, ["max_entries"]),
        ({"cache_ttl_seconds": 0}, ["cache_ttl_seconds", "None"]),
        ({"cache_ttl_seconds": "300"}, ["cache_ttl_seconds", "'300'"]),
        ({"invalidation": "yes"}, ["invalidation", "'yes'"]),
    ],
)
def test_bad_settings_raise_configuration_errors_naming_them(
    tmp_path: Path, kwargs: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_store(local_dir=tmp_path, **kwargs)
    for word in words:
        assert word in str(caught.value)


def test_passwords_are_not_repeated_in_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_store(redis_url="http://user:s3cret@cache:6379", local_dir=tmp_path)
    assert "s3cret" not in str(caught.value) and "cache:6379" in str(caught.value)


@pytest.mark.parametrize(
    ("package", "module", "kwargs", "extra"),
    [
        ("redis", "redis_repository", {"redis_url": "redis://127.0.0.1:1/0"}, "redis"),
        ("boto3", "s3_repository", {"s3_bucket": "some-bucket"}, "s3"),
    ],
)
def test_a_missing_optional_package_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    package: str,
    module: str,
    kwargs: dict[str, Any],
    extra: str,
) -> None:
    # A real install without the extra cannot be had on demand: hide the package.
    monkeypatch.setitem(sys.modules, package, None)
    monkeypatch.delitem(sys.modules, f"flask_tiered_state.storage.{module}", raising=False)
    with pytest.raises(ConfigurationError) as caught:
        build_store(local_dir=tmp_path, **kwargs)
    assert f'pip install "flask-tiered-state[{extra}]"' in str(caught.value)


def test_a_missing_postgres_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigurationError, match=r"flask-tiered-state\[postgres\]"):
        build_store(database_uri="postgresql://nobody@127.0.0.1:1/none", local_dir=tmp_path)


def test_metrics_setting() -> None:
    assert build_metrics(None) is None and build_metrics(False) is None
    assert isinstance(build_metrics(True), PrometheusMetricsCollector)
    assert isinstance(build_metrics("prometheus"), PrometheusMetricsCollector)
    assert isinstance(build_metrics("simple"), SimpleMetricsCollector)
    mine = SimpleMetricsCollector()
    assert build_metrics(mine) is mine


def test_metrics_true_falls_back_without_prometheus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    assert isinstance(build_metrics(True), SimpleMetricsCollector)
    with pytest.raises(ConfigurationError, match=r"flask-tiered-state\[metrics\]"):
        build_metrics("prometheus")


def test_a_failing_backend_closes_the_ones_already_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_tiered_state.storage import memory_repository

    closed: list[str] = []
    monkeypatch.setattr(
        memory_repository.MemoryStateRepository, "close", lambda self: closed.append("hot")
    )
    with pytest.raises(ConfigurationError):
        build_store(database_uri="mysql://db/x", local_dir=tmp_path)
    assert closed == ["hot"]

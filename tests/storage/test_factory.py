"""build_store: backends from settings, embedded defaults, clear configuration errors."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_tiered_state.errors import ConfigurationError
from flask_tiered_state.observability.metrics import (
    PrometheusMetricsCollector,
    SimpleMetricsCollector,
)
from flask_tiered_state.storage.base import StateCategory
from flask_tiered_state.storage.factory import build_metrics, build_store
from tests.conftest import s3_url


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
    with pytest.raises(ConfigurationError, match="needs local_dir"):
        build_store()


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.s3
def test_urls_give_the_real_backends(
    redis_url: str, redis_prefix: str, postgres_url: str, s3_bucket: str, s3_endpoint_url: str
) -> None:
    cold_url = s3_url(s3_bucket, s3_endpoint_url, "factory/")
    assert cold_url is not None
    store = build_store(
        hot_url=redis_url,
        hot_options={"socket_timeout": 2.5},
        key_prefix=redis_prefix,
        warm_url=postgres_url,
        warm_options={"lock_timeout": 1.5, "use_copy": False},
        cold_url=cold_url + "&storage_class=STANDARD",
        cold_options={"read_timeout": 7},
    )
    try:
        repos = store.get_repositories()
        assert [r.backend for r in repos] == ["redis", "postgresql", "s3"]
        hot, warm, cold = repos
        assert hot.key_prefix == redis_prefix  # type: ignore[attr-defined]
        assert hot.client.connection_pool.connection_kwargs["socket_timeout"] == 2.5  # type: ignore[attr-defined]
        assert (cold.prefix, cold.storage_class) == ("factory/", "STANDARD")  # type: ignore[attr-defined]
        assert cold._client.meta.config.read_timeout == 7  # type: ignore[attr-defined]
        with warm.engine.connect() as connection:  # type: ignore[attr-defined]
            assert connection.exec_driver_sql("SHOW lock_timeout").scalar() == "1500ms"
        assert store.warm is warm
        store.set("k", 1, category="cold")
        store.cache.clear()
        assert store.get("k") == 1
    finally:
        store.delete("k")
        store.close()


def test_an_engine_stands_for_the_warm_tier(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'given.sqlite3'}")
    metadata = sa.MetaData()
    store = build_store(engine=engine, sql_metadata=metadata, local_dir=tmp_path)
    try:
        assert store.warm.engine is engine
        assert "tiered_state_entries" in metadata.tables
    finally:
        store.close()
        engine.dispose()  # an engine passed in is not disposed by the store


def test_relative_file_urls_live_in_local_dir(tmp_path: Path) -> None:
    store = build_store(cold_url="file:archive", local_dir=tmp_path)
    try:
        assert store.get_repositories().cold.root == tmp_path / "archive"  # type: ignore[attr-defined]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"hot_url": "http://cache:6379"}, ["http://", "redis://", "memory://"]),
        ({"hot_url": "memory://somewhere"}, ["memory://", "alone"]),
        ({"hot_url": "memory://", "hot_options": {"ttl": 5}}, ["'ttl'", "default_ttl_seconds"]),
        ({"hot_url": 6379}, ["hot tier's URL", "redis://"]),
        ({"warm_url": "mysql://db/x"}, ["mysql://", "postgresql://", "sqlite://"]),
        ({"warm_url": "sqlite://", "engine": object()}, ["not both"]),
        ({"warm_options": ["use_copy"]}, ["warm tier's options", "dict"]),
        ({"cold_url": "s3:///prefix"}, ["names no bucket"]),
        ({"cold_url": "s3://Bad_Bucket/x"}, ["'Bad_Bucket'", "3-63 characters"]),
        ({"cold_url": "s3://b-1/x?storage_class=GLACIER"}, ["'GLACIER'", "STANDARD_IA"]),
        ({"cold_url": "s3://b-1/x?colour=red"}, ["colour", "endpoint_url"]),
        ({"cold_url": "file://server/share"}, ["file:///absolute/path"]),
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
        build_store(hot_url="http://user:s3cret@cache:6379", local_dir=tmp_path)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("package", "url", "extra"),
    [
        ("redis", "redis://127.0.0.1:1/0", "redis"),
        ("boto3", "s3://some-bucket/", "s3"),
        ("psycopg", "postgresql://nobody@127.0.0.1:1/none", "postgres"),
    ],
)
def test_a_missing_optional_package_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, package: str, url: str, extra: str
) -> None:
    # A real install without the extra cannot be had on demand: hide the package.
    monkeypatch.setitem(sys.modules, package, None)
    for name in list(sys.modules):
        if name.startswith(f"flask_tiered_state.storage.{extra.replace('postgres', 'sql')}"):
            monkeypatch.delitem(sys.modules, name)
    category = {"redis": "hot_url", "s3": "cold_url", "postgres": "warm_url"}[extra]
    urls: dict[str, Any] = {category: url}
    with pytest.raises(ConfigurationError) as caught:
        build_store(local_dir=tmp_path, **urls)
    assert f'pip install "flask-tiered-state[{extra}]"' in str(caught.value)


def test_third_party_backends_register_a_scheme(tmp_path: Path) -> None:
    """A backend registered for a scheme serves that scheme's URLs, with the options and
    the context; an unknown scheme names the known ones."""
    from flask_tiered_state.storage import MemoryStateRepository, backend_schemes
    from flask_tiered_state.storage.base import BackendContext, StateRepository, check_options
    from flask_tiered_state.storage.registry import _REGISTERED, register_backend

    made: list[tuple[str, dict[str, Any], BackendContext]] = []

    def toy(url: str, options: Mapping[str, Any], context: BackendContext) -> StateRepository:
        made.append((url, dict(options), context))
        chosen = check_options(options, MemoryStateRepository.__init__)
        return MemoryStateRepository(context.category, **chosen)

    with pytest.raises(ConfigurationError) as caught:
        build_store(hot_url="toy://box", local_dir=tmp_path)
    assert "toy://" in str(caught.value) and "redis://" in str(caught.value)
    register_backend("toy", toy)
    try:
        assert "toy" in backend_schemes()
        store = build_store(
            hot_url="toy://box", hot_options={"default_ttl_seconds": 9}, local_dir=tmp_path
        )
        try:
            assert store.get_repositories().hot.default_ttl_seconds == 9  # type: ignore[attr-defined]
            url, options, context = made[0]
            assert (url, options, context.category) == ("toy://box", {"default_ttl_seconds": 9},
                                                        StateCategory.HOT)  # fmt: skip
        finally:
            store.close()
        with pytest.raises(ConfigurationError, match="lowercase name"):
            register_backend("Not A Scheme", toy)
    finally:
        _REGISTERED.pop("toy", None)


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
    from flask_tiered_state.storage.memory import MemoryStateRepository

    closed: list[str] = []
    monkeypatch.setattr(MemoryStateRepository, "close", lambda self: closed.append("hot"))
    with pytest.raises(ConfigurationError):
        build_store(warm_url="mysql://db/x", local_dir=tmp_path)
    assert closed == ["hot"]

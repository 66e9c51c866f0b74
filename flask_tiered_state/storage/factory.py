"""Build a :class:`TieredStore` from settings.

Each tier has a real backend and an embedded default:

- HOT: a ``redis://``, ``rediss://`` or ``unix://`` URL (or a redis-py client) ->
  :class:`RedisStateRepository`; none -> :class:`MemoryStateRepository`.
- WARM: a SQLAlchemy URL or Engine -> :class:`SQLStateRepository`; none -> a SQLite
  file in ``local_dir``.
- COLD: a bucket (and an endpoint URL for S3-compatible servers) ->
  :class:`S3StateRepository`; none -> :class:`FilesystemStateRepository` in ``local_dir``.

Backends are imported only when configured, so the core install works without the
``redis``, ``postgres`` and ``s3`` extras; a configured backend whose package is
missing raises :class:`ConfigurationError` naming the extra to install.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import StateCategory, StateRepositories, StateRepository
from .cache import StateCache, check_max_age
from .deadlines import check_seconds
from .memory_repository import MemoryStateRepository
from .store import TieredStore
from .tiering import TierPromotionPolicy

__all__ = ["build_metrics", "build_store"]

REDIS_SCHEMES = ("redis", "rediss", "unix")
SQL_SCHEMES = ("postgresql", "postgres", "sqlite")
SQLITE_FILE = "tiered_state.sqlite3"
COLD_DIRECTORY = "cold"


def _redacted(url: str) -> str:
    """``url`` without its user and password, for error messages."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else repr(url[:40])


def _backend_module(name: str, extra: str, packages: tuple[str, ...]) -> ModuleType:
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in packages:
            raise
        raise ConfigurationError(
            f"The configured {extra} backend needs the {missing!r} package, which is not "
            f'installed; install it with pip install "flask-tiered-state[{extra}]".'
        ) from exc


def _hot(
    redis_url: str | None, redis_client: Any, key_prefix: str, timeout: float = 1.0
) -> StateRepository:
    if redis_url is not None and redis_client is not None:
        raise ConfigurationError("Give redis_url or redis_client, not both.")
    if redis_url is None and redis_client is None:
        return MemoryStateRepository(StateCategory.HOT)
    if redis_url is not None:
        scheme = urlsplit(redis_url).scheme if isinstance(redis_url, str) else None
        if scheme not in REDIS_SCHEMES:
            shown = _redacted(redis_url) if isinstance(redis_url, str) else repr(redis_url)
            raise ConfigurationError(
                f"The Redis URL {shown} is not supported; use a URL with one of the schemes "
                f"{', '.join(s + '://' for s in REDIS_SCHEMES)}."
            )
    module = _backend_module("redis_repository", "redis", ("redis", "hiredis"))
    repository: StateRepository = module.RedisStateRepository(
        redis_client if redis_client is not None else redis_url,
        key_prefix=key_prefix,
        socket_timeout=timeout,
    )
    return repository


def _warm(
    database_uri: Any,
    engine: Any,
    metadata: Any,
    local_dir: Path | None,
    create_tables: bool,
    use_copy: bool = True,
    timeouts: dict[str, Any] | None = None,
) -> StateRepository:
    if database_uri is not None and engine is not None:
        raise ConfigurationError("Give database_uri or engine, not both.")
    target = engine if engine is not None else database_uri
    if target is None:
        target = f"sqlite:///{_local(local_dir, 'the WARM tier (SQLite file)') / SQLITE_FILE}"
    elif isinstance(target, str):
        scheme = urlsplit(target).scheme.partition("+")[0]
        if scheme not in SQL_SCHEMES:
            raise ConfigurationError(
                f"The database URL {_redacted(target)} is not supported; use a SQLAlchemy URL "
                "with one of the schemes postgresql://, postgresql+psycopg://, sqlite:///."
            )
    module = _backend_module("sql_repository", "postgres", ("psycopg", "psycopg_binary"))
    repository: StateRepository = module.SQLStateRepository(
        target,
        metadata=metadata,
        create_tables=create_tables,
        use_copy=use_copy,
        connect_timeout=2.0,
        **(timeouts or {}),
    )
    return repository


def _cold(
    bucket: str | None,
    endpoint_url: str | None,
    prefix: str,
    storage_class: str,
    region_name: str | None,
    local_dir: Path | None,
    read_timeout: float = 10.0,
) -> StateRepository:
    if bucket is None:
        if endpoint_url is not None:
            raise ConfigurationError(
                f"s3_endpoint_url {_redacted(endpoint_url)} is set but s3_bucket is not; "
                "give the bucket too, or neither for the local COLD directory."
            )
        cold_dir = _local(local_dir, "the COLD tier (directory)") / COLD_DIRECTORY
        from .filesystem_repository import FilesystemStateRepository

        return FilesystemStateRepository(cold_dir)
    if endpoint_url is not None and urlsplit(endpoint_url).scheme not in ("http", "https"):
        raise ConfigurationError(
            f"s3_endpoint_url {_redacted(endpoint_url)} is not supported; use an http:// or "
            "https:// URL."
        )
    module = _backend_module("s3_repository", "s3", ("boto3", "botocore"))
    repository: StateRepository = module.S3StateRepository(
        bucket,
        prefix=prefix,
        endpoint_url=endpoint_url,
        storage_class=storage_class,
        region_name=region_name,
        connect_timeout=2.0,
        read_timeout=read_timeout,
    )
    return repository


def _local(local_dir: Path | None, needed_by: str) -> Path:
    if local_dir is None:
        raise ConfigurationError(
            f"local_dir is needed for {needed_by}: give local_dir, or configure the backend."
        )
    local_dir.mkdir(parents=True, exist_ok=True)
    return local_dir.absolute()


def build_metrics(metrics: Any) -> Any:
    """A collector from the ``metrics`` setting.

    None or False: none. True: Prometheus when prometheus-client is installed, else the
    in-memory collector. ``"prometheus"`` or ``"simple"``: that one. A collector: itself.
    """
    from ..observability.metrics import (
        MetricsCollector,
        PrometheusMetricsCollector,
        SimpleMetricsCollector,
    )

    if metrics is None or metrics is False:
        return None
    if metrics is True:
        try:
            return PrometheusMetricsCollector()
        except ConfigurationError:
            return SimpleMetricsCollector()
    if metrics == "prometheus":
        return PrometheusMetricsCollector()
    if metrics == "simple":
        return SimpleMetricsCollector()
    if isinstance(metrics, MetricsCollector):
        return metrics
    raise ConfigurationError(
        f"metrics must be None, a bool, 'prometheus', 'simple' or a MetricsCollector, "
        f"not {metrics!r}."
    )


def build_store(
    *,
    redis_url: str | None = None,
    redis_client: Any = None,
    database_uri: Any = None,
    engine: Any = None,
    sql_metadata: Any = None,
    s3_bucket: str | None = None,
    s3_endpoint_url: str | None = None,
    s3_prefix: str = "",
    s3_storage_class: str = "STANDARD_IA",
    s3_region_name: str | None = None,
    key_prefix: str = "tiered_state:",
    local_dir: str | os.PathLike[str] | None = None,
    cache_max_entries: int = 10_000,
    cache_max_bytes: int = 64 * 1024 * 1024,
    hot_ttl_seconds: int = 3600,
    promote_after_accesses: int = 5,
    promotion_window_seconds: float = 60.0,
    demote_after_idle_seconds: float = 30 * 24 * 3600.0,
    max_value_bytes: int | None = None,
    metrics: Any = None,
    create_tables: bool = True,
    cache_ttl_seconds: float | None = 300,
    invalidation: bool = True,
    sql_use_copy: bool = True,
    sql_statement_timeout: float | None = 5.0,
    sql_lock_timeout: float | None = 2.0,
    redis_timeout: float = 1.0,
    s3_timeout: float = 10.0,
    call_timeout: float | None = 10.0,
    cache_unsynced_seconds: float = 1.0,
    drop_replay_interval: float | None = 1.0,
) -> TieredStore:
    """A :class:`TieredStore` over the configured backends (see the module docstring).

    :param local_dir: where the SQLite file and the COLD directory live when those
        tiers use their embedded defaults.
    :param metrics: see :func:`build_metrics`.
    :param cache_ttl_seconds: the maximum age of a value in the in-process cache
        (counted from when it was cached); the backstop that bounds how long a change
        made by another process can go unseen. None: no maximum age.
    :param invalidation: with a Redis HOT tier, keep the caches of all processes on
        that Redis and key prefix in step through pub/sub (see
        :mod:`~flask_tiered_state.storage.invalidation`). Without Redis only
        ``cache_ttl_seconds`` applies.
    :param sql_use_copy: on PostgreSQL with psycopg, write WARM batches with COPY; False
        behind PgBouncer in transaction mode (see
        :class:`~flask_tiered_state.storage.sql_repository.SQLStateRepository`).
    :param sql_statement_timeout: seconds, PostgreSQL's ``statement_timeout`` for an
        engine built from ``database_uri`` (None: the server's).
    :param sql_lock_timeout: seconds, PostgreSQL's ``lock_timeout`` likewise.
    :param redis_timeout: the Redis socket timeout, seconds.
    :param s3_timeout: the read timeout of each S3 request, seconds.
    :param call_timeout: the time budget of each store call (see
        :class:`~flask_tiered_state.storage.store.TieredStore`).
    :param cache_unsynced_seconds: how long after caching the cache serves an entry while
        the invalidation subscriber is disconnected.
    :param drop_replay_interval: see :class:`~flask_tiered_state.storage.store.TieredStore`.
    :raises ConfigurationError: a setting is invalid or a backend's package is missing.
    """
    policy = TierPromotionPolicy(
        promote_after_accesses=promote_after_accesses,
        promotion_window_seconds=promotion_window_seconds,
        demote_after_idle_seconds=demote_after_idle_seconds,
        hot_ttl_seconds=hot_ttl_seconds,
    )
    max_age = check_max_age(cache_ttl_seconds, "cache_ttl_seconds")
    if not isinstance(invalidation, bool):
        raise ConfigurationError(f"invalidation must be True or False, not {invalidation!r}.")
    cache = StateCache(
        cache_max_entries,
        cache_max_bytes,
        max_age_seconds=max_age,
        unsynced_max_age_seconds=cache_unsynced_seconds,
    )
    round_trip = check_seconds("call_timeout", call_timeout) or 30.0
    sql_timeouts = {
        "statement_timeout": check_seconds("sql_statement_timeout", sql_statement_timeout),
        "lock_timeout": check_seconds("sql_lock_timeout", sql_lock_timeout),
        "timeout": round_trip,
    }
    collector = build_metrics(metrics)
    local = None if local_dir is None else Path(local_dir)
    built: list[StateRepository] = []
    try:
        hot_timeout = check_seconds("redis_timeout", redis_timeout, allow_none=False)
        built.append(_hot(redis_url, redis_client, key_prefix, hot_timeout or 1.0))
        built.append(
            _warm(
                database_uri, engine, sql_metadata, local, create_tables, sql_use_copy,
                sql_timeouts,
            )
        )  # fmt: skip
        cold_timeout = check_seconds("s3_timeout", s3_timeout, allow_none=False) or 10.0
        built.append(
            _cold(
                s3_bucket, s3_endpoint_url, s3_prefix, s3_storage_class, s3_region_name, local,
                cold_timeout,
            )
        )  # fmt: skip
        return TieredStore(
            StateRepositories(*built),
            cache=cache,
            policy=policy,
            metrics=collector,
            max_value_bytes=max_value_bytes,
            invalidation=invalidation,
            call_timeout=call_timeout,
            drop_replay_interval=drop_replay_interval,
        )
    except BaseException:
        for repository in built:
            repository.close()
        raise

"""Build a :class:`TieredStore` from the tiers' URLs (see :mod:`.registry`).

Each tier is a URL whose scheme names its backend, with the backend's options; a tier
without one uses its embedded default (process memory for HOT, a SQLite file and a
directory in ``local_dir`` for WARM and COLD). A Flask-SQLAlchemy engine may stand for
the WARM tier instead of a URL. Backends are imported only when configured, so the core
install works without the ``redis``, ``postgres`` and ``s3`` extras; a configured backend
whose package is missing raises :class:`ConfigurationError` naming the extra to install.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .base import BackendContext, StateCategory, StateRepositories, StateRepository, check_options
from .cache import StateCache, check_max_age
from .registry import default_url, repository_from_url
from .store import TieredStore
from .tiering import TierPromotionPolicy

__all__ = ["build_metrics", "build_store", "store_arguments_for_clients"]


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
    hot_url: str | None = None,
    warm_url: str | None = None,
    cold_url: str | None = None,
    hot_options: Mapping[str, Any] | None = None,
    warm_options: Mapping[str, Any] | None = None,
    cold_options: Mapping[str, Any] | None = None,
    engine: Any = None,
    sql_metadata: Any = None,
    hot_repository: StateRepository | None = None,
    cold_repository: StateRepository | None = None,
    key_prefix: str = "tiered_state:",
    local_dir: str | os.PathLike[str] | None = None,
    cache_max_entries: int = 10_000,
    cache_max_bytes: int = 64 * 1024 * 1024,
    cache_ttl_seconds: float | None = 300,
    cache_unsynced_seconds: float = 1.0,
    hot_ttl_seconds: int = 3600,
    promote_after_accesses: int = 5,
    promotion_window_seconds: float = 60.0,
    demote_after_idle_seconds: float = 30 * 24 * 3600.0,
    max_value_bytes: int | None = None,
    metrics: Any = None,
    create_tables: bool = True,
    invalidation: bool = True,
    call_timeout: float | None = 10.0,
    drop_replay_interval: float | None = 1.0,
    slow_operation_ms: float | None = None,
) -> TieredStore:
    """A :class:`TieredStore` over the tiers' backends (see the module docstring).

    :param hot_url: the HOT tier (``redis://...``; default ``memory://``).
    :param warm_url: the WARM tier (``postgresql://...``, ``sqlite:///...``; default a
        SQLite file in ``local_dir``).
    :param cold_url: the COLD tier (``s3://bucket/prefix?...``, ``file:///dir``; default
        a directory in ``local_dir``).
    :param hot_options: keyword arguments of the HOT backend; likewise ``warm_options``
        and ``cold_options``.
    :param engine: a SQLAlchemy engine for the WARM tier instead of ``warm_url`` (e.g.
        Flask-SQLAlchemy's ``db.engine``, used as configured and never disposed here).
    :param sql_metadata: a :class:`sqlalchemy.MetaData` for the SQL tables (e.g.
        ``db.metadata``), so the application's migrations see them.
    :param hot_repository: a repository built by the caller for the HOT tier instead of
        ``hot_url`` (see :func:`store_arguments_for_clients`); likewise
        ``cold_repository``. The store closes them with itself.
    :param key_prefix: the prefix of every key in a shared HOT server (Redis).
    :param local_dir: where the embedded defaults keep their files.
    :param metrics: see :func:`build_metrics`.
    :param cache_ttl_seconds: the maximum age of a value in the in-process cache
        (counted from when it was cached); the backstop that bounds how long a change
        made by another process can go unseen. None: no maximum age.
    :param cache_unsynced_seconds: how long after caching the cache serves an entry while
        the invalidation subscriber is disconnected.
    :param invalidation: with a Redis HOT tier, keep the caches of all processes on
        that Redis and key prefix in step through pub/sub (see
        :mod:`~flask_tiered_state.storage.invalidation`). Without Redis only
        ``cache_ttl_seconds`` applies.
    :param call_timeout: the time budget of each store call (see
        :class:`~flask_tiered_state.storage.store.TieredStore`).
    :param drop_replay_interval: see :class:`~flask_tiered_state.storage.store.TieredStore`.
    :param slow_operation_ms: log at WARNING and count every repository call (and every
        change of a manager on the store) slower than this many milliseconds (see
        :mod:`~flask_tiered_state.observability.slow`); None: off.
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
    if not isinstance(key_prefix, str):
        raise ConfigurationError(f"key_prefix must be a string, not {key_prefix!r}.")
    if engine is not None and warm_url is not None:
        raise ConfigurationError("Give warm_url or engine, not both.")
    if hot_repository is not None and hot_url is not None:
        raise ConfigurationError("Give hot_url or hot_repository, not both.")
    if cold_repository is not None and cold_url is not None:
        raise ConfigurationError("Give cold_url or cold_repository, not both.")
    given = {StateCategory.HOT: hot_repository, StateCategory.COLD: cold_repository}
    cache = StateCache(
        cache_max_entries,
        cache_max_bytes,
        max_age_seconds=max_age,
        unsynced_max_age_seconds=cache_unsynced_seconds,
    )
    collector = build_metrics(metrics)
    slow = None
    if slow_operation_ms is not None:
        from ..observability.slow import SlowOperationLog

        slow = SlowOperationLog(slow_operation_ms, collector=collector)
    local = None if local_dir is None else Path(local_dir)
    tiers = {
        StateCategory.HOT: (hot_url, hot_options),
        StateCategory.WARM: (warm_url, warm_options),
        StateCategory.COLD: (cold_url, cold_options),
    }
    built: list[StateRepository] = []
    try:
        for category, (url, options) in tiers.items():
            context = BackendContext(
                category,
                key_prefix=key_prefix,
                local_dir=local,
                sql_metadata=sql_metadata,
                create_tables=create_tables,
            )
            if category is StateCategory.WARM and engine is not None:
                built.append(_on_engine(engine, options, context))
                continue
            repository = given.get(category)
            if repository is not None:
                built.append(repository)
                continue
            target = default_url(category, local) if url is None else url
            built.append(repository_from_url(target, options, context))
        return TieredStore(
            StateRepositories(*built),
            cache=cache,
            policy=policy,
            metrics=collector,
            max_value_bytes=max_value_bytes,
            invalidation=invalidation,
            call_timeout=call_timeout,
            drop_replay_interval=drop_replay_interval,
            slow_operations=slow,
        )
    except BaseException:
        for repository in built:
            repository.close()
        raise


def _on_engine(
    engine: Any, options: Mapping[str, Any] | None, context: BackendContext
) -> StateRepository:
    """The WARM tier on a SQLAlchemy engine given as it is (Flask-SQLAlchemy's)."""
    from .sql.repository import SQLStateRepository

    chosen = check_options(options or {}, SQLStateRepository.__init__, fixed=("category",))
    chosen.setdefault("metadata", context.sql_metadata)
    chosen.setdefault("create_tables", context.create_tables)
    return SQLStateRepository(engine, category=context.category, **chosen)


def store_arguments_for_clients(
    *,
    redis_manager: Any = None,
    database_manager: Any = None,
    s3_manager: Any = None,
    bucket: str | None = None,
    s3_prefix: str = "",
    key_prefix: str = "tiered_state:",
) -> dict[str, Any]:
    """:func:`build_store` arguments for an application's own clients.

    :param redis_manager: a ``redis.Redis`` client or ``redis.ConnectionPool``: the HOT
        tier (the application keeps it open).
    :param database_manager: a SQLAlchemy ``Engine``, a Flask-SQLAlchemy ``db`` (its
        engine and metadata, read inside an app context) or a database URL: the WARM tier.
    :param s3_manager: a boto3 S3 client, with ``bucket`` (and ``s3_prefix``): COLD.
    :raises ConfigurationError: a client of another kind, or one missing its bucket.
    """
    import sqlalchemy as sa

    arguments: dict[str, Any] = {}
    if redis_manager is not None:
        from .redis.repository import RedisStateRepository

        arguments["hot_repository"] = RedisStateRepository(redis_manager, key_prefix=key_prefix)
    if isinstance(database_manager, (str, sa.URL)):
        arguments["warm_url"] = str(database_manager)
    elif isinstance(database_manager, sa.Engine):
        arguments["engine"] = database_manager
    elif database_manager is not None:
        try:  # a Flask-SQLAlchemy extension
            engine, metadata = database_manager.engine, database_manager.metadata
        except AttributeError:
            raise ConfigurationError(
                "database_manager must be a SQLAlchemy Engine, a Flask-SQLAlchemy db or a "
                f"database URL, not {type(database_manager).__name__}."
            ) from None
        except RuntimeError as exc:  # outside an app context
            raise ConfigurationError(
                f"database_manager is a Flask-SQLAlchemy db, whose engine needs an app "
                f"context: call this inside 'with app.app_context():' ({exc})."
            ) from exc
        arguments.update(engine=engine, sql_metadata=metadata)
    if s3_manager is not None:
        if not isinstance(bucket, str):
            raise ConfigurationError(
                f"s3_manager needs bucket=, the name of the bucket to use, not {bucket!r}."
            )
        from .s3.repository import S3StateRepository

        arguments["cold_repository"] = S3StateRepository(
            bucket, prefix=s3_prefix, client=s3_manager
        )
    elif bucket is not None:
        raise ConfigurationError("bucket= goes with s3_manager=, a boto3 S3 client.")
    return arguments

"""TieredStores and repositories on the run's private services, built as an app would."""

from __future__ import annotations

from typing import Any

from .env import BenchEnv

__all__ = ["build_bench_store", "postgres_engine"]


def build_bench_store(
    env: BenchEnv,
    name: str,
    *,
    redis: bool = True,
    database_url: str | None = None,
    s3: bool = False,
    **options: Any,
) -> Any:
    """A TieredStore through :func:`~flask_tiered_state.storage.factory.build_store`.

    :param redis: HOT on the Redis server (else the in-process memory tier).
    :param database_url: WARM on this database (else SQLite in a temporary directory).
    :param s3: COLD on a new bucket of the moto server (else a temporary directory).
    :param options: more ``build_store`` keywords.
    """
    from flask_tiered_state.storage.factory import build_store

    kwargs: dict[str, Any] = {"local_dir": env.tempdir(name), **options}
    if redis:
        kwargs.update(hot_url=env.redis_url(), key_prefix=env.redis_prefix(name))
    if database_url is not None:
        kwargs["warm_url"] = database_url
    if s3:
        endpoint = env.s3_endpoint()
        kwargs["cold_url"] = (
            f"s3://{env.bucket(name)}/?endpoint_url={endpoint}&region_name=us-east-1"
        )
    return env.closing(build_store(**kwargs))


def postgres_engine(env: BenchEnv, url: str) -> Any:
    """A plain SQLAlchemy engine (default pool) on ``url``."""
    import sqlalchemy as sa

    return env.closing(sa.create_engine(url))

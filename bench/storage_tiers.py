"""Single-key reads per tier: ``TieredStore.get`` with an empty local cache, against the
raw clients reading the same value (issue 2: HOT-miss, WARM and COLD ``get``; issue 16:
WARM ``get`` against the same work a cache in front of a database does by hand)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from .data import dumps, records
from .env import BenchEnv
from .harness import (
    Benchmark,
    Round,
    Row,
    Settings,
    chunked,
    compare,
    cycling,
    interleave,
)
from .stores import build_bench_store, postgres_engine

__all__ = [
    "BENCHMARKS",
    "WARM_READ_TARGET",
    "IntegrityMismatch",
    "checked_loads",
    "share_row",
]

T = TypeVar("T")
TARGET = 1.3
#: WARM reads against the hand-written cache-aside read: Redis miss, one SELECT of the
#: value and its checksum, the same sha256 check, json.loads (issue 16).
WARM_READ_TARGET = 1.2


class IntegrityMismatch(AssertionError):
    """A raw side read a value that does not match its stored checksum."""


def checked_loads(
    key: str, text: str, checksum: str, decode: Callable[[str], Any] = json.loads
) -> Any:
    """``decode(text)`` after the integrity check the WARM tier does on every read
    (``storage.sql.rows.verified``): the sha256 of the text's UTF-8 bytes must equal
    the stored checksum."""
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != checksum:
        raise IntegrityMismatch(f"the value of {key!r} does not match its checksum")
    return decode(text)


def _reads(
    read: Callable[[T], Any], keys: Sequence[T], size: int, setup: Callable[[], object] | None
) -> Round:
    """Rounds reading the next ``size`` keys each (cycling through ``keys``)."""

    def body(chunk: Sequence[T]) -> object:
        return [read(k) for k in chunk]

    return cycling(chunked(keys, size), body, setup)


def share_row(
    benchmark: str,
    samples: Mapping[str, Sequence[float]],
    part: str,
    whole: str,
    *,
    units: float = 1,
    unit: str = "op",
) -> Row:
    """An info row of ``part`` against ``whole`` with the ratio also spelled out as a
    percentage (the table's two decimals would show a share of a few per cent as 0.0x)."""
    row = compare(benchmark, samples, part, whole, units=units, unit=unit)
    return dataclasses.replace(row, note=f"{row.ratio or 0.0:.1%} of it")


def _with_checksum(text: str) -> tuple[str, str]:
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()


def _fetch_value(repository: Any) -> Callable[[str], Any]:
    fetch = repository.fetch
    return lambda key: json.loads(fetch(key).value)


def get_hot(env: BenchEnv, settings: Settings) -> list[Row]:
    from flask_tiered_state.storage.base import StateCategory

    count = settings.pick(300, 50)
    # WARM and COLD are the embedded defaults: a HOT hit never reaches them.
    store = build_bench_store(env, "get_hot")
    env.note(
        "get_hot: the store's WARM and COLD tiers are the embedded SQLite file and directory; "
        "a HOT hit never reaches them. get_warm: COLD is the directory (never reached)."
    )
    values = records("h", count)
    store.batch_set(values, category=StateCategory.HOT, ttl_seconds=3600)
    client, raw_prefix = env.redis_client(), env.redis_prefix("get_hot_raw")
    pipe = client.pipeline(transaction=False)
    for key, value in values.items():
        pipe.set(raw_prefix + key, dumps(value), ex=3600)
    pipe.execute()
    keys = list(values)
    raw_keys = [raw_prefix + k for k in keys]
    get = client.get
    size = 25
    samples = interleave(
        {
            "store": _reads(store.get, keys, size, store.cache.clear),
            "repository": _reads(_fetch_value(store.get_repositories().hot), keys, size, None),
            "raw": _reads(lambda name: json.loads(get(name)), raw_keys, size, None),
        },
        rounds=settings.rounds_for(60, 8),
    )
    return [
        compare("HOT get: TieredStore.get, empty cache vs redis-py GET + json.loads", samples,
                "store", "raw", units=size, target=TARGET),
        compare("HOT fetch: RedisStateRepository.fetch + json.loads vs the same", samples,
                "repository", "raw", units=size),
    ]  # fmt: skip


class CoreReader:
    """Raw SQLAlchemy Core reads of the store's table: ``SELECT value WHERE key = :key``
    (or ``SELECT value, checksum`` and the integrity check, :meth:`read_checked`) on one
    pooled connection held across reads (its transaction ends between rounds, untimed),
    or on a connection checked out per read."""

    def __init__(self, env: BenchEnv, url: str, table: str) -> None:
        import sqlalchemy as sa

        self.engine = postgres_engine(env, url)
        columns = (sa.Column("value", sa.Text), sa.Column("checksum", sa.String))
        key = sa.Column("key", sa.String, primary_key=True)
        entries = sa.Table(table, sa.MetaData(), key, *columns)
        by_key = entries.c.key == sa.bindparam("key")
        self.select = sa.select(entries.c.value).where(by_key)
        self.select_checked = sa.select(entries.c.value, entries.c.checksum).where(by_key)
        self.held = env.closing(self.engine.connect())

    def read(self, key: str) -> Any:
        text = self.held.execute(self.select, {"key": key}).scalar_one_or_none()
        return None if text is None else json.loads(text)

    def read_checked(self, key: str) -> Any:
        row = self.held.execute(self.select_checked, {"key": key}).one_or_none()
        return None if row is None else checked_loads(key, row[0], row[1])

    def read_connecting(self, key: str) -> Any:
        with self.engine.connect() as conn:
            text = conn.execute(self.select, {"key": key}).scalar_one_or_none()
        return None if text is None else json.loads(text)

    def end_round(self) -> None:
        self.held.rollback()


def get_warm(env: BenchEnv, settings: Settings) -> list[Row]:
    import psycopg

    from flask_tiered_state.storage.base import StateCategory

    count = settings.pick(200, 40)
    url = env.database("get_warm")
    store = build_bench_store(env, "get_warm", database_url=url)
    values = records("w", count)
    store.batch_set(values, category=StateCategory.WARM)
    keys = list(values)
    table = store.warm.table.name
    core = CoreReader(env, url, table)
    redis_get, absent = env.redis_client().get, env.redis_prefix("get_warm_absent")

    def waterfall_read(key: str) -> Any:
        if redis_get(absent + key) is None:
            return core.read_checked(key)
        raise AssertionError("the raw HOT key must be absent")

    def unchecked_read(key: str) -> Any:
        if redis_get(absent + key) is None:
            return core.read(key)
        raise AssertionError("the raw HOT key must be absent")

    pg = env.closing(psycopg.connect(env.libpq_url(url), autocommit=True))
    cursor = pg.cursor()
    sql = f'SELECT value FROM "{table}" WHERE key = %s'

    def psycopg_read(key: str) -> Any:
        cursor.execute(sql, (key,))
        row = cursor.fetchone()
        assert row is not None
        return json.loads(row[0])

    stored = [_with_checksum(dumps(values[key])) for key in keys]

    def sha256_check(item: tuple[str, str]) -> bool:
        return hashlib.sha256(item[0].encode("utf-8")).hexdigest() == item[1]

    size = 20
    samples = interleave(
        {
            "store": _reads(store.get, keys, size, store.cache.clear),
            "repository": _reads(_fetch_value(store.warm), keys, size, None),
            "core": _reads(core.read, keys, size, core.end_round),
            "waterfall": _reads(waterfall_read, keys, size, core.end_round),
            "unchecked": _reads(unchecked_read, keys, size, core.end_round),
            "sha256": _reads(sha256_check, stored, size, None),
            "psycopg": _reads(psycopg_read, keys, size, None),
            "core_connect": _reads(core.read_connecting, keys, size, None),
        },
        rounds=settings.rounds_for(50, 6),
    )
    held = "SQLAlchemy Core SELECT on a held pooled connection + json.loads"
    same_work = "redis-py GET (miss) + Core SELECT value, checksum + sha256 check + json.loads"
    rows = [
        (f"WARM get: TieredStore.get, empty cache vs the same work raw: {same_work}", "store",
         "waterfall", WARM_READ_TARGET),
        (f"WARM get: TieredStore.get, empty cache (HOT miss + SQL) vs one {held}", "store",
         "core", None),
        ("WARM get: the raw read's integrity check: the same work raw vs without it (GET miss "
         "+ Core SELECT value + json.loads)", "waterfall", "unchecked", None),
        ("WARM get: TieredStore.get vs psycopg SELECT (autocommit, one cursor)", "store",
         "psycopg", None),
        (f"WARM fetch: SQLStateRepository.fetch + json.loads vs {held}", "repository", "core",
         None),
        ("WARM fetch: SQLStateRepository.fetch + json.loads vs psycopg SELECT", "repository",
         "psycopg", None),
        ("SQLAlchemy connect() per read (BEGIN, SELECT, ROLLBACK) vs psycopg SELECT",
         "core_connect", "psycopg", None),
    ]  # fmt: skip
    share = share_row("WARM get: the sha256 check of the value (encode, hash, compare) vs "
                      "TieredStore.get", samples, "sha256", "store", units=size)  # fmt: skip
    return [*(compare(n, samples, a, b, units=size, target=t) for n, a, b, t in rows), share]


def get_cold(env: BenchEnv, settings: Settings) -> list[Row]:
    from flask_tiered_state.storage.base import StateCategory

    count = settings.pick(30, 10)
    url = env.database("get_cold")
    store = build_bench_store(env, "get_cold", database_url=url, s3=True)
    values = records("c", count)
    store.batch_set(values, category=StateCategory.COLD)
    keys = list(values)
    cold = store.get_repositories().cold
    client, bucket, prefix = env.s3_client(), cold.bucket, cold.prefix
    core = CoreReader(env, url, store.warm.table.name)
    redis_get, absent = env.redis_client().get, env.redis_prefix("get_cold_absent")

    def boto_read(key: str) -> Any:
        return json.loads(client.get_object(Bucket=bucket, Key=prefix + key)["Body"].read())

    def waterfall_read(key: str) -> Any:
        if redis_get(absent + key) is None and core.read(key) is None:
            return boto_read(key)
        raise AssertionError("the raw HOT and WARM copies must be absent")

    size = 5
    samples = interleave(
        {
            "store": _reads(store.get, keys, size, store.cache.clear),
            "repository": _reads(_fetch_value(cold), keys, size, None),
            "raw": _reads(boto_read, keys, size, None),
            "waterfall": _reads(waterfall_read, keys, size, core.end_round),
        },
        rounds=settings.rounds_for(24, 4),
    )
    raw = "boto3 get_object + read + json.loads"
    rows = [
        (f"COLD get: TieredStore.get, empty cache (HOT + WARM miss + S3) vs {raw}", "store",
         "raw", TARGET),
        ("COLD get: TieredStore.get vs the same work raw: Redis GET + SELECT (misses) + "
         "boto3 GET", "store", "waterfall", TARGET),
        (f"COLD fetch: S3StateRepository.fetch + json.loads vs {raw}", "repository", "raw", None),
    ]  # fmt: skip
    return [compare(n, samples, a, b, units=size, target=t) for n, a, b, t in rows]


BENCHMARKS = [
    Benchmark("get_hot", "TieredStore.get of a HOT value, cache empty", get_hot, ("redis",)),
    Benchmark("get_warm", "TieredStore.get of a WARM value, cache empty", get_warm,
              ("redis", "postgres")),
    Benchmark("get_cold", "TieredStore.get of a COLD value, cache empty", get_cold,
              ("redis", "postgres", "s3")),
]  # fmt: skip

"""``batch_get`` / ``batch_set`` per tier: the TieredStore, its repository called
directly, and the best raw batch of each client (issue 2: <= 1.3x the best raw
batch, <= 1.5x direct repository access).

Every store here is the real stack (Redis, PostgreSQL, S3 on moto), because a
batch write to one tier also drops the copies the other tiers may hold.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .data import dumps, records
from .env import BenchEnv
from .harness import Benchmark, Round, Row, Settings, compare, interleave, timed
from .stores import build_bench_store

__all__ = ["BENCHMARKS"]

RAW_TARGET = 1.3
REPOSITORY_TARGET = 1.5
#: S3StateRepository's default ``max_workers``; the raw side gets the same pool.
S3_WORKERS = 16
_REPO_CALL = {"batch_get": "fetch_many", "batch_set": "store_many"}


def _full_store(env: BenchEnv, name: str) -> tuple[Any, str]:
    """A store on Redis, a new PostgreSQL database and a new bucket; and the database URL."""
    url = env.database(name)
    return build_bench_store(env, name, database_url=url, s3=True), url


def _decoded(found: Mapping[str, Any]) -> dict[str, Any]:
    return {key: json.loads(stored.value) for key, stored in found.items()}


def _requests(values: Mapping[str, Any], ttl: int | None = None, version: int | None = None) -> Any:
    from flask_tiered_state.storage.base import WriteRequest

    return [WriteRequest(k, dumps(v), version=version, ttl_seconds=ttl) for k, v in values.items()]


def _best(samples: Mapping[str, Sequence[float]], names: Sequence[str]) -> str:
    """The raw variant with the lowest median round."""
    return min(names, key=lambda name: statistics.median(samples[name]))


def _rows(
    tier: str,
    op: str,
    samples: Mapping[str, Sequence[float]],
    size: int,
    raws: Mapping[str, str],
    extra: Sequence[tuple[str, str, str]] = (),
) -> list[Row]:
    """Store vs the best raw variant (``raws``: name -> description), store vs
    repository, repository vs best raw, then ``extra`` info rows (text, a, b)."""
    best = _best(samples, list(raws))
    unit = f"{size} keys"
    label = f"{tier} {op} {size}"
    rows = [
        compare(f"{label}: TieredStore vs best raw ({raws[best]})", samples, "store", best,
                unit=unit, target=RAW_TARGET),
        compare(f"{label}: TieredStore vs repository {_REPO_CALL[op]}", samples, "store",
                "repository", unit=unit, target=REPOSITORY_TARGET),
        compare(f"{label}: repository {_REPO_CALL[op]} vs best raw", samples, "repository",
                best, unit=unit),
    ]  # fmt: skip
    rows += [
        compare(f"{label}: {raws[name]} vs best raw", samples, name, best, unit=unit)
        for name in raws
        if name != best
    ]
    rows += [compare(f"{label}: {text}", samples, a, b, unit=unit) for text, a, b in extra]
    return rows


# -- HOT ----------------------------------------------------------------------------


def batch_hot(env: BenchEnv, settings: Settings) -> list[Row]:
    from flask_tiered_state.storage.base import StateCategory

    size, ttl = settings.pick(1000, 200), 3600
    store, _ = _full_store(env, "batch_hot")
    repo = store.get_repositories().hot
    client, raw_prefix = env.redis_client(), env.redis_prefix("batch_hot_raw")
    store_values, repo_values = records("hs", size), records("hr", size)
    raw_values = {raw_prefix + k: v for k, v in records("hw", size).items()}
    store.batch_set(store_values, category=StateCategory.HOT, ttl_seconds=ttl)

    def raw_set() -> None:
        pipe = client.pipeline(transaction=False)
        for name, value in raw_values.items():
            pipe.set(name, dumps(value), ex=ttl)
        pipe.execute()

    raw_set()
    store_keys, raw_keys = list(store_values), list(raw_values)
    rounds = settings.rounds_for(15, 3)
    gets = interleave(
        {
            "store": timed(lambda: store.batch_get(store_keys), store.cache.clear),
            "repository": timed(lambda: _decoded(repo.fetch_many(store_keys))),
            "raw": timed(
                lambda: {
                    k: json.loads(v) for k, v in zip(raw_keys, client.mget(raw_keys), strict=True)
                }
            ),
        },
        rounds=rounds,
    )
    sets = interleave(
        {
            "store": timed(
                lambda: store.batch_set(store_values, category=StateCategory.HOT, ttl_seconds=ttl)
            ),
            "repository": timed(lambda: repo.store_many(_requests(repo_values, ttl))),
            "raw": timed(raw_set),
        },
        rounds=rounds,
    )
    return [
        *_rows("HOT", "batch_get", gets, size, {"raw": "redis-py MGET + json.loads"}),
        *_rows("HOT", "batch_set", sets, size, {"raw": "redis-py pipeline of SET EX"}),
    ]


# -- WARM ---------------------------------------------------------------------------


class RawPostgres:
    """The best raw psycopg batches on the store's own table (same columns, own keys)."""

    def __init__(self, env: BenchEnv, url: str, table: str) -> None:
        import psycopg

        self.conn = env.closing(psycopg.connect(env.libpq_url(url), autocommit=True))
        self.table = table
        self.conn.execute(
            "CREATE TEMPORARY TABLE raw_load (key text, value text, checksum text, size bigint) "
            "ON COMMIT DELETE ROWS"
        )
        updates = (
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, checksum = "
            "EXCLUDED.checksum, size = EXCLUDED.size, version = t.version + 1, stored_at = "
            "EXCLUDED.stored_at, last_accessed = EXCLUDED.last_accessed"
        )
        columns = "(key, value, checksum, size, version, category, stored_at, last_accessed)"
        self.upsert = (
            f"INSERT INTO \"{table}\" AS t {columns} VALUES (%s, %s, %s, %s, 1, 'warm', %s, %s) "
            + updates
        )
        self.merge = (
            f'INSERT INTO "{table}" AS t {columns} SELECT key, value, checksum, size, 1, '
            f"'warm', %(now)s, %(now)s FROM raw_load " + updates
        )
        self.select = f'SELECT key, value FROM "{table}" WHERE key = ANY(%s)'

    @staticmethod
    def rows(values: Mapping[str, Any]) -> list[tuple[str, str, str, int]]:
        out = []
        for key, value in values.items():
            text = dumps(value)
            body = text.encode("utf-8")
            out.append((key, text, hashlib.sha256(body).hexdigest(), len(body)))
        return out

    def executemany(self, values: Mapping[str, Any]) -> None:
        now = time.time()
        rows = [(*row, now, now) for row in self.rows(values)]
        with self.conn.transaction(), self.conn.cursor() as cursor:
            cursor.executemany(self.upsert, rows)

    def copy_merge(self, values: Mapping[str, Any]) -> None:
        rows = self.rows(values)
        with self.conn.transaction(), self.conn.cursor() as cursor:
            with cursor.copy("COPY raw_load (key, value, checksum, size) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(self.merge, {"now": time.time()})

    def fetch(self, keys: list[str]) -> dict[str, Any]:
        with self.conn.cursor() as cursor:
            cursor.execute(self.select, (keys,))
            return {key: json.loads(text) for key, text in cursor}


def batch_warm(env: BenchEnv, settings: Settings) -> list[Row]:
    from flask_tiered_state.storage.base import StateCategory

    size = settings.pick(1000, 200)
    store, url = _full_store(env, "batch_warm")
    repo = store.warm
    raw = RawPostgres(env, url, repo.table.name)
    store_values, repo_values = records("ws", size), records("wr", size)
    many_values, copy_values = records("wm", size), records("wc", size)
    store.batch_set(store_values, category=StateCategory.WARM)
    raw.executemany(many_values)
    raw.copy_merge(copy_values)
    keys, many_keys = list(store_values), list(many_values)
    mget, absent = env.redis_client().mget, env.redis_prefix("batch_warm_absent")
    absent_keys = [absent + k for k in many_keys]

    def waterfall() -> dict[str, Any]:
        assert not any(mget(absent_keys))
        return raw.fetch(many_keys)

    rounds = settings.rounds_for(15, 3)
    gets = interleave(
        {
            "store": timed(lambda: store.batch_get(keys), store.cache.clear),
            "repository": timed(lambda: _decoded(repo.fetch_many(keys))),
            "raw": timed(lambda: raw.fetch(many_keys)),
            "waterfall": timed(waterfall),
        },
        rounds=rounds,
    )
    sets = interleave(
        {
            "store": timed(lambda: store.batch_set(store_values, category=StateCategory.WARM)),
            "repository": timed(lambda: repo.store_many(_requests(repo_values))),
            "executemany": timed(lambda: raw.executemany(many_values)),
            "copy": timed(lambda: raw.copy_merge(copy_values)),
        },
        rounds=rounds,
    )
    same_work = "TieredStore vs the same work raw (MGET miss + SELECT = ANY)"
    return [
        *_rows("WARM", "batch_get", gets, size,
               {"raw": "psycopg SELECT .. WHERE key = ANY(%s) + json.loads"},
               [(same_work, "store", "waterfall")]),
        *_rows("WARM", "batch_set", sets, size,
               {"copy": "psycopg COPY into temp table + one merge",
                "executemany": "psycopg executemany UPSERT"}),
    ]  # fmt: skip


# -- COLD ---------------------------------------------------------------------------


def batch_cold(env: BenchEnv, settings: Settings) -> list[Row]:
    from flask_tiered_state.storage.base import StateCategory

    size = settings.pick(100, 20)
    store, _ = _full_store(env, "batch_cold")
    repo = store.get_repositories().cold
    workers = S3_WORKERS
    client = env.s3_client(max_pool_connections=workers)
    pool = ThreadPoolExecutor(workers)
    env.on_close("raw S3 thread pool", pool.shutdown)
    bucket, prefix = repo.bucket, repo.prefix
    store_values, repo_values = records("cs", size), records("cr", size)
    versioned_values, raw_values = records("cv", size), records("cw", size)
    store.batch_set(store_values, category=StateCategory.COLD)

    def get(key: str) -> Any:
        return json.loads(client.get_object(Bucket=bucket, Key=prefix + key)["Body"].read())

    def put(item: tuple[str, Any]) -> None:
        body = dumps(item[1]).encode("utf-8")
        client.put_object(Bucket=bucket, Key=prefix + item[0], Body=body,
                          ContentType="application/json", StorageClass="STANDARD_IA")  # fmt: skip

    def raw_set() -> None:
        list(pool.map(put, raw_values.items()))

    raw_set()
    keys, raw_keys = list(store_values), list(raw_values)
    versions = iter(range(1, 1_000_000))
    rounds = settings.rounds_for(5, 2)
    gets = interleave(
        {
            "store": timed(lambda: store.batch_get(keys), store.cache.clear),
            "repository": timed(lambda: _decoded(repo.fetch_many(keys))),
            "raw": timed(lambda: dict(zip(raw_keys, pool.map(get, raw_keys), strict=True))),
        },
        rounds=rounds,
    )
    sets: dict[str, Round] = {
        "store": timed(lambda: store.batch_set(store_values, category=StateCategory.COLD)),
        "repository": timed(lambda: repo.store_many(_requests(repo_values))),
        "versioned": timed(
            lambda: repo.store_many(_requests(versioned_values, version=next(versions)))
        ),
        "raw": timed(raw_set),
    }
    set_samples = interleave(sets, rounds=rounds)
    env.note(
        f"COLD batches use {size} keys, not 1,000: moto's server runs in this process and "
        "serves one request per ~5 ms, so 1,000-key rounds would take minutes. The thread "
        f"pools of both sides have {workers} workers."
    )
    concurrent = f"boto3 on a {workers}-thread pool"
    return [
        *_rows("COLD", "batch_get", gets, size, {"raw": f"get_object + json.loads, {concurrent}"}),
        *_rows("COLD", "batch_set", set_samples, size, {"raw": f"put_object, {concurrent}"},
               [("repository store_many with explicit versions (PUT only) vs best raw",
                 "versioned", "raw")]),
    ]  # fmt: skip


BENCHMARKS = [
    Benchmark("batch_hot", "batch_get/batch_set on Redis", batch_hot, ("redis", "postgres", "s3")),
    Benchmark("batch_warm", "batch_get/batch_set on PostgreSQL", batch_warm,
              ("redis", "postgres", "s3")),
    Benchmark("batch_cold", "batch_get/batch_set on S3 (moto)", batch_cold,
              ("redis", "postgres", "s3")),
]  # fmt: skip

"""``batch_get`` / ``batch_set`` per tier: the TieredStore, its repository called
directly, and the best raw batch of each client (issue 2: <= 1.3x the best raw
batch, <= 1.5x direct repository access).

Every store here is the real stack (Redis, PostgreSQL, S3 on moto), because a
batch write to one tier also drops the copies the other tiers may hold. HOT and
WARM also run their raw side with orjson (info rows), to show what the JSON codec
is worth.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import import_module
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
#: Keys per COLD batch in a full run (see the note ``batch_cold`` prints).
COLD_KEYS = 1000
_REPO_CALL = {"batch_get": "fetch_many", "batch_set": "store_many"}


def _full_store(env: BenchEnv, name: str) -> tuple[Any, str]:
    """A store on Redis, a new PostgreSQL database and a new bucket; and the database URL."""
    url = env.database(name)
    return build_bench_store(env, name, database_url=url, s3=True), url


Loads = Callable[[str | bytes], Any]
Dumps = Callable[[Any], str]


def _orjson() -> tuple[Loads, Dumps] | None:
    """orjson's ``loads`` and a ``dumps`` giving :func:`~bench.data.dumps`'s text; None
    when orjson is not installed (its rows are then left out)."""
    try:
        import orjson
    except ImportError:
        return None

    def dumps_sorted(value: Any) -> str:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()

    return orjson.loads, dumps_sorted


def _note_codec(env: BenchEnv) -> None:
    try:  # the codec module is newer than this benchmark
        backend = getattr(import_module("flask_tiered_state.json_codec"), "BACKEND", "json")
    except ImportError:
        backend = "json"
    library = "json (stdlib)" if backend == "json" else str(backend)
    if _orjson() is None:
        rows = "orjson is not installed, so the rows 'with orjson' are left out."
    else:
        rows = (
            "The HOT and WARM batch rows 'with orjson' repeat the raw side with orjson.loads "
            "/ orjson.dumps (sorted keys): what the codec alone is worth."
        )
    text = f"JSON codec of the library: {library}. {rows}"
    if text not in env.notes:
        env.note(text)


def _orjson_rows(
    samples: Mapping[str, Sequence[float]], text: str, same_with_json: str
) -> list[tuple[str, str, str]]:
    """Info rows (see :func:`_rows`) for the ``orjson`` variant, when it ran."""
    if "orjson" not in samples:
        return []
    return [
        (f"TieredStore vs {text}", "store", "orjson"),
        (f"{text} vs the same with json", "orjson", same_with_json),
    ]


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

    def raw_set(encode: Dumps = dumps) -> None:
        pipe = client.pipeline(transaction=False)
        for name, value in raw_values.items():
            pipe.set(name, encode(value), ex=ttl)
        pipe.execute()

    def raw_get(decode: Loads = json.loads) -> dict[str, Any]:
        return {k: decode(v) for k, v in zip(raw_keys, client.mget(raw_keys), strict=True)}

    raw_set()
    store_keys, raw_keys = list(store_values), list(raw_values)
    get_rounds: dict[str, Round] = {
        "store": timed(lambda: store.batch_get(store_keys), store.cache.clear),
        "repository": timed(lambda: _decoded(repo.fetch_many(store_keys))),
        "raw": timed(raw_get),
    }
    set_rounds: dict[str, Round] = {
        "store": timed(
            lambda: store.batch_set(store_values, category=StateCategory.HOT, ttl_seconds=ttl)
        ),
        "repository": timed(lambda: repo.store_many(_requests(repo_values, ttl))),
        "raw": timed(raw_set),
    }
    fast = _orjson()
    if fast is not None:
        get_rounds["orjson"] = timed(lambda: raw_get(fast[0]))
        set_rounds["orjson"] = timed(lambda: raw_set(fast[1]))
    _note_codec(env)
    rounds = settings.rounds_for(15, 3)
    gets, sets = interleave(get_rounds, rounds=rounds), interleave(set_rounds, rounds=rounds)
    return [
        *_rows("HOT", "batch_get", gets, size, {"raw": "redis-py MGET + json.loads"},
               _orjson_rows(gets, "redis-py MGET + orjson.loads", "raw")),
        *_rows("HOT", "batch_set", sets, size, {"raw": "redis-py pipeline of SET EX"},
               _orjson_rows(sets, "redis-py pipeline of SET EX, orjson.dumps", "raw")),
    ]  # fmt: skip


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
    def rows(values: Mapping[str, Any], encode: Dumps = dumps) -> list[tuple[str, str, str, int]]:
        out = []
        for key, value in values.items():
            text = encode(value)
            body = text.encode("utf-8")
            out.append((key, text, hashlib.sha256(body).hexdigest(), len(body)))
        return out

    def executemany(self, values: Mapping[str, Any]) -> None:
        now = time.time()
        rows = [(*row, now, now) for row in self.rows(values)]
        with self.conn.transaction(), self.conn.cursor() as cursor:
            cursor.executemany(self.upsert, rows)

    def copy_merge(self, values: Mapping[str, Any], encode: Dumps = dumps) -> None:
        rows = self.rows(values, encode)
        with self.conn.transaction(), self.conn.cursor() as cursor:
            with cursor.copy("COPY raw_load (key, value, checksum, size) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(self.merge, {"now": time.time()})

    def fetch(self, keys: list[str], decode: Loads = json.loads) -> dict[str, Any]:
        with self.conn.cursor() as cursor:
            cursor.execute(self.select, (keys,))
            return {key: decode(text) for key, text in cursor}


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

    get_rounds: dict[str, Round] = {
        "store": timed(lambda: store.batch_get(keys), store.cache.clear),
        "repository": timed(lambda: _decoded(repo.fetch_many(keys))),
        "raw": timed(lambda: raw.fetch(many_keys)),
        "waterfall": timed(waterfall),
    }
    set_rounds: dict[str, Round] = {
        "store": timed(lambda: store.batch_set(store_values, category=StateCategory.WARM)),
        "repository": timed(lambda: repo.store_many(_requests(repo_values))),
        "executemany": timed(lambda: raw.executemany(many_values)),
        "copy": timed(lambda: raw.copy_merge(copy_values)),
    }
    fast = _orjson()
    if fast is not None:
        get_rounds["orjson"] = timed(lambda: raw.fetch(many_keys, fast[0]))
        set_rounds["orjson"] = timed(lambda: raw.copy_merge(copy_values, fast[1]))
    _note_codec(env)
    rounds = settings.rounds_for(15, 3)
    gets, sets = interleave(get_rounds, rounds=rounds), interleave(set_rounds, rounds=rounds)
    same_work = "TieredStore vs the same work raw (MGET miss + SELECT = ANY)"
    select = "psycopg SELECT .. WHERE key = ANY(%s)"
    copy = "psycopg COPY into temp table + one merge"
    return [
        *_rows("WARM", "batch_get", gets, size, {"raw": f"{select} + json.loads"},
               [(same_work, "store", "waterfall"),
                *_orjson_rows(gets, f"{select} + orjson.loads", "raw")]),
        *_rows("WARM", "batch_set", sets, size,
               {"copy": copy, "executemany": "psycopg executemany UPSERT"},
               _orjson_rows(sets, f"{copy}, orjson.dumps", "copy")),
    ]  # fmt: skip


# -- COLD ---------------------------------------------------------------------------


def batch_cold(env: BenchEnv, settings: Settings) -> list[Row]:
    from flask_tiered_state.storage.base import StateCategory

    size = settings.pick(COLD_KEYS, 20)
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
        f"COLD batches use {size} keys. S3 is moto's server in a separate process (as a "
        "remote S3 would be), so its request handling does not compete with the measured "
        "code for this process's GIL; it handles one request at a time (a few ms each "
        f"here), which bounds both sides alike. The thread pools of both sides have {workers} "
        "workers."
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

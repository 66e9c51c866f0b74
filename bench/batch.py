"""``batch_get`` / ``batch_set`` per tier: the TieredStore, its repository called
directly, and the best raw batch of each client (issue 2: <= 1.3x the best raw
batch, <= 1.5x direct repository access). The WARM ``batch_get`` is held to the same
work done by hand instead (issue 16: <= 1.2x of MGET + one ``SELECT .. = ANY`` +
decoding + the sha256 check), and measures what the integrity checksum costs.

Every store here is the real stack (Redis, PostgreSQL, S3 on moto), because a
batch write to one tier also drops the copies the other tiers may hold. HOT and
WARM also run their raw side with orjson (info rows), to show what the JSON codec
is worth.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from typing import Any

from .batch_rows import (
    REPOSITORY_TARGET,
    Dumps,
    Loads,
    batch_rows,
    decoded,
    full_store,
    note_codec,
    orjson_codec,
    orjson_rows,
    write_requests,
)
from .data import dumps, records
from .env import BenchEnv
from .harness import Benchmark, Round, Row, Settings, compare, interleave, timed
from .storage_tiers import WARM_READ_TARGET, checked_loads, share_row

__all__ = ["BENCHMARKS"]

# -- HOT ----------------------------------------------------------------------------


def batch_hot(env: BenchEnv, settings: Settings) -> list[Row]:
    from flask_tiered_state.storage.base import StateCategory

    size, ttl = settings.pick(1000, 200), 3600
    store, _ = full_store(env, "batch_hot")
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
        "repository": timed(lambda: decoded(repo.fetch_many(store_keys))),
        "raw": timed(raw_get),
    }
    set_rounds: dict[str, Round] = {
        "store": timed(
            lambda: store.batch_set(store_values, category=StateCategory.HOT, ttl_seconds=ttl)
        ),
        "repository": timed(lambda: repo.store_many(write_requests(repo_values, ttl))),
        "raw": timed(raw_set),
    }
    fast = orjson_codec()
    if fast is not None:
        get_rounds["orjson"] = timed(lambda: raw_get(fast[0]))
        set_rounds["orjson"] = timed(lambda: raw_set(fast[1]))
    note_codec(env)
    rounds = settings.rounds_for(15, 3)
    gets, sets = interleave(get_rounds, rounds=rounds), interleave(set_rounds, rounds=rounds)
    return [
        *batch_rows("HOT", "batch_get", gets, size, {"raw": "redis-py MGET + json.loads"},
               orjson_rows(gets, "redis-py MGET + orjson.loads", "raw")),
        *batch_rows("HOT", "batch_set", sets, size, {"raw": "redis-py pipeline of SET EX"},
               orjson_rows(sets, "redis-py pipeline of SET EX, orjson.dumps", "raw")),
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
        self.select_checked = f'SELECT key, value, checksum FROM "{table}" WHERE key = ANY(%s)'

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

    def fetch_checked(self, keys: list[str], decode: Loads = json.loads) -> dict[str, Any]:
        """:meth:`fetch` of the values and their checksums, each value checked as the
        WARM tier checks it (sha256 of its UTF-8 bytes against the stored checksum)."""
        with self.conn.cursor() as cursor:
            cursor.execute(self.select_checked, (keys,))
            return {key: checked_loads(key, text, sum_, decode) for key, text, sum_ in cursor}


def batch_warm(env: BenchEnv, settings: Settings) -> list[Row]:
    from flask_tiered_state.storage.base import StateCategory

    size = settings.pick(1000, 200)
    store, url = full_store(env, "batch_warm")
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

    def waterfall(decode: Loads = json.loads) -> dict[str, Any]:
        assert not any(mget(absent_keys))
        return raw.fetch_checked(many_keys, decode)

    get_rounds: dict[str, Round] = {
        "store": timed(lambda: store.batch_get(keys), store.cache.clear),
        "repository": timed(lambda: decoded(repo.fetch_many(keys))),
        "waterfall": timed(waterfall),
        "checked": timed(lambda: raw.fetch_checked(many_keys)),
        "raw": timed(lambda: raw.fetch(many_keys)),
    }
    texts = [dumps(value) for value in store_values.values()]
    for name, digest in integrity_digests().items():
        get_rounds[name] = timed(_integrity_check(texts, digest))
    set_rounds: dict[str, Round] = {
        "store": timed(lambda: store.batch_set(store_values, category=StateCategory.WARM)),
        "repository": timed(lambda: repo.store_many(write_requests(repo_values))),
        "executemany": timed(lambda: raw.executemany(many_values)),
        "copy": timed(lambda: raw.copy_merge(copy_values)),
    }
    fast = orjson_codec()
    if fast is not None:
        get_rounds["orjson"] = timed(lambda: waterfall(fast[0]))
        set_rounds["orjson"] = timed(lambda: raw.copy_merge(copy_values, fast[1]))
    note_codec(env)
    rounds = settings.rounds_for(15, 3)
    gets, sets = interleave(get_rounds, rounds=rounds), interleave(set_rounds, rounds=rounds)
    copy = "psycopg COPY into temp table + one merge"
    return [
        *warm_get_rows(gets, size),
        *batch_rows("WARM", "batch_set", sets, size,
               {"copy": copy, "executemany": "psycopg executemany UPSERT"},
               orjson_rows(sets, f"{copy}, orjson.dumps", "copy")),
    ]  # fmt: skip


Digest = Callable[[bytes], str]


def integrity_digests() -> dict[str, Digest]:
    """The candidates for the integrity checksum (issue 16), name -> hex digest of bytes;
    xxh3_128 only when the ``xxhash`` package is installed."""
    digests: dict[str, Digest] = {
        "sha256": lambda data: hashlib.sha256(data).hexdigest(),
        "blake2b-16": lambda data: hashlib.blake2b(data, digest_size=16).hexdigest(),
        "blake2b-32": lambda data: hashlib.blake2b(data, digest_size=32).hexdigest(),
    }
    try:
        xxh3 = import_module("xxhash").xxh3_128_hexdigest
    except ImportError:
        return digests
    digests["xxh3_128"] = lambda data: xxh3(data)  # the same call layers as the others
    return digests


def _integrity_check(texts: list[str], digest: Digest) -> Callable[[], object]:
    """The read-side check of ``texts`` with ``digest``: encode, hash, compare."""
    stored = [(text, digest(text.encode("utf-8"))) for text in texts]

    def check() -> object:
        for text, checksum in stored:
            if digest(text.encode("utf-8")) != checksum:
                raise AssertionError("a value does not match its checksum")
        return None

    return check


def warm_get_rows(samples: Mapping[str, Sequence[float]], size: int) -> list[Row]:
    """The WARM ``batch_get`` rows: the store against the same work by hand (issue 16),
    its repository, the former raw comparator, and what the integrity check costs."""
    unit, label = f"{size} keys", f"WARM batch_get {size}"
    select = "psycopg SELECT .. WHERE key = ANY(%s)"
    checked = f"{select} of value, checksum + sha256 check"
    same_work = f"the same work raw (redis-py MGET miss + {checked} + json.loads)"
    rows = [
        (f"TieredStore vs {same_work}", "store", "waterfall", WARM_READ_TARGET),
        ("TieredStore vs repository fetch_many", "store", "repository", REPOSITORY_TARGET),
        (f"repository fetch_many vs {checked} + json.loads", "repository", "checked", None),
        (f"TieredStore vs {select} of value + json.loads (no HOT probe, no check: the former "
         "comparator)", "store", "raw", None),
        (f"the raw integrity check: {checked} + json.loads vs {select} of value + json.loads",
         "checked", "raw", None),
    ]  # fmt: skip
    if "orjson" in samples:
        rows += [
            ("TieredStore vs the same work raw with orjson.loads", "store", "orjson", None),
            ("the same work raw: with orjson.loads vs with json.loads", "orjson", "waterfall",
             None),
        ]  # fmt: skip
    share = share_row(f"{label}: the sha256 check of the {size} values (encode, hash, "
                      "compare) vs TieredStore", samples, "sha256", "store", unit=unit)  # fmt: skip
    alternatives = [
        compare(f"{label}: integrity check with {name} vs with sha256", samples, name, "sha256",
                unit=unit)
        for name in ("blake2b-16", "blake2b-32", "xxh3_128")
        if name in samples
    ]  # fmt: skip
    return [
        *(compare(f"{label}: {text}", samples, a, b, unit=unit, target=target)
          for text, a, b, target in rows),
        share,
        *alternatives,
    ]  # fmt: skip


BENCHMARKS = [
    Benchmark("batch_hot", "batch_get/batch_set on Redis", batch_hot, ("redis", "postgres", "s3")),
    Benchmark("batch_warm", "batch_get/batch_set on PostgreSQL", batch_warm,
              ("redis", "postgres", "s3")),
]  # fmt: skip

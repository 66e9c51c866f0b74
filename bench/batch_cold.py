"""``batch_get`` / ``batch_set`` on the COLD tier (S3 on moto's server, a separate
process): the TieredStore, its repository and boto3 on a thread pool of the same size."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .batch_rows import (
    COLD_KEYS,
    S3_WORKERS,
    batch_rows,
    decoded,
    full_store,
    write_requests,
)
from .data import dumps, records
from .env import BenchEnv
from .harness import Benchmark, Round, Row, Settings, interleave, timed

__all__ = ["BENCHMARKS"]


def batch_cold(env: BenchEnv, settings: Settings) -> list[Row]:
    from flask_tiered_state.storage.base import StateCategory

    size = settings.pick(COLD_KEYS, 20)
    store, _ = full_store(env, "batch_cold")
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
            "repository": timed(lambda: decoded(repo.fetch_many(keys))),
            "raw": timed(lambda: dict(zip(raw_keys, pool.map(get, raw_keys), strict=True))),
        },
        rounds=rounds,
    )
    sets: dict[str, Round] = {
        "store": timed(lambda: store.batch_set(store_values, category=StateCategory.COLD)),
        "repository": timed(lambda: repo.store_many(write_requests(repo_values))),
        "versioned": timed(
            lambda: repo.store_many(write_requests(versioned_values, version=next(versions)))
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
        *batch_rows("COLD", "batch_get", gets, size,
                    {"raw": f"get_object + json.loads, {concurrent}"}),
        *batch_rows("COLD", "batch_set", set_samples, size, {"raw": f"put_object, {concurrent}"},
               [("repository store_many with explicit versions (PUT only) vs best raw",
                 "versioned", "raw")]),
    ]  # fmt: skip


BENCHMARKS = [
    Benchmark("batch_cold", "batch_get/batch_set on S3 (moto)", batch_cold,
              ("redis", "postgres", "s3")),
]  # fmt: skip

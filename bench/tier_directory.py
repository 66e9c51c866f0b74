"""The tier directory (issue 16, item 3): a HOT-home ``batch_set`` of keys that never had
a WARM or COLD copy touches neither tier.

Rows: the store's HOT ``batch_set`` of 1,000 never-moved keys against a redis-py pipeline
that does what a careful hand-written versioned write does (one Lua call per 1,000 keys
reading each key's version and writing the next with ``SET ... EX``); the SQL statements
and S3 requests each such batch sends (target 0); the same batch without the directory
(every key dropped in WARM and COLD, the path before it), and what marking costs a WARM
write (one more Redis round trip before the SQL).
"""

from __future__ import annotations

from typing import Any

from .batch_rows import full_store
from .data import dumps, records
from .env import BenchEnv
from .harness import Benchmark, Row, Settings, compare, interleave, timed

__all__ = ["BENCHMARKS"]

#: What a hand-written versioned batch write runs: KEYS the names, ARGV[1] the TTL, then
#: one JSON text per key; each stored as "<version>|<json>", the version one past the
#: current one.
RAW_VERSIONED_SET_EX = r"""
local ttl = ARGV[1]
local out = {}
for i, key in ipairs(KEYS) do
  local old = redis.call('GET', key)
  local v = 0
  if old then v = tonumber(string.match(old, '^(%d+)|')) or 0 end
  redis.call('SET', key, string.format('%d', v + 1) .. '|' .. ARGV[i + 1], 'EX', ttl)
  out[i] = v + 1
end
return out
"""


class _Requests:
    """Counts the SQL statements of an engine and the requests of a botocore client."""

    def __init__(self, engine: Any, s3_client: Any) -> None:
        import sqlalchemy as sa

        self.sql = self.s3 = 0

        def on_sql(*_: Any, **__: Any) -> None:
            self.sql += 1

        def on_s3(**_: Any) -> None:
            self.s3 += 1

        sa.event.listen(engine, "before_cursor_execute", on_sql)
        s3_client.meta.events.register("before-call", on_s3)

    def reset(self) -> None:
        self.sql = self.s3 = 0


def tier_directory(env: BenchEnv, settings: Settings) -> list[Row]:
    from flask_tiered_state.storage.base import StateCategory

    hot, warm = StateCategory.HOT, StateCategory.WARM
    size, ttl = settings.pick(1000, 200), 3600
    store, _ = full_store(env, "tier_directory")
    if store.tier_directory is None or not store.tier_directory.ready():
        raise RuntimeError("the store has no ready tier directory")
    repositories = store.get_repositories()
    requests = _Requests(repositories.warm.engine, repositories.cold._client)
    client, raw_prefix = env.redis_client(), env.redis_prefix("tier_directory_raw")
    fresh, unmarked = records("td", size), records("tu", size)
    raw_values = {raw_prefix + k: v for k, v in records("tr", size).items()}
    warm_keys = records("tw", 50)
    raw_names = list(raw_values)
    script = client.register_script(RAW_VERSIONED_SET_EX)

    def raw_set() -> None:
        pipe = client.pipeline(transaction=False)
        texts = [dumps(v) for v in raw_values.values()]
        script(keys=raw_names, args=[ttl, *texts], client=pipe)
        pipe.execute()

    directory = store.tier_directory

    def without_directory() -> None:
        store.coordinator.directory = None
        try:
            store.batch_set(unmarked, category=hot, ttl_seconds=ttl)
        finally:
            store.coordinator.directory = directory

    raw_set()
    store.batch_set(fresh, category=hot, ttl_seconds=ttl)
    rounds = settings.rounds_for(15, 3)
    samples = interleave(
        {
            "store": timed(lambda: store.batch_set(fresh, category=hot, ttl_seconds=ttl)),
            "raw": timed(raw_set),
            "before": timed(without_directory),
        },
        rounds=rounds,
    )
    requests.reset()
    store.batch_set(fresh, category=hot, ttl_seconds=ttl)
    sql, s3 = requests.sql, requests.s3

    # What marking costs a WARM write: the same set with and without the directory.
    warm_items = list(warm_keys.items())

    def warm_set(with_directory: bool) -> None:
        store.coordinator.directory = directory if with_directory else None
        try:
            for key, value in warm_items:
                store.set(key, value, category=warm)
        finally:
            store.coordinator.directory = directory

    warm_samples = interleave(
        {"marked": timed(lambda: warm_set(True)), "unmarked": timed(lambda: warm_set(False))},
        rounds=rounds,
    )
    count_note = f"{sql} SQL statements, {s3} S3 requests per batch of {size:,}"
    return [
        compare(
            f"tier directory: HOT batch_set of {size:,} never-moved keys",
            samples, "store", "raw", units=size, unit="key", target=1.4,
            note="vs redis-py pipeline of SET EX (with the versioning script)",
        ),
        Row(
            f"tier directory: SQL statements + S3 requests per HOT batch_set of {size:,} "
            "never-moved keys (target 0)",
            None, None, note=count_note, status="PASS" if sql == s3 == 0 else "FAIL",
        ),
        compare(
            f"tier directory: HOT batch_set of {size:,} keys without the directory",
            samples, "before", "raw", units=size, unit="key",
            note="drops in WARM and COLD for every key (the path before); vs the same raw",
        ),
        compare(
            "tier directory: WARM set of one key, marking it first",
            warm_samples, "marked", "unmarked", units=len(warm_items),
            note="one more Redis round trip; vs the same set with no directory",
        ),
    ]  # fmt: skip


BENCHMARKS = [
    Benchmark("tier_directory", "HOT batch_set that skips WARM/COLD for never-moved keys",
              tier_directory, ("redis", "postgres", "s3")),
]  # fmt: skip

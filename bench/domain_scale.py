"""The domain layer's per-call cost as the number of states grows (issue 16, "Scale"):
``get_state`` on a WARM miss, ``update_state``, and the first page of ``search_states``
with one filter, at 1,000, 100,000 and 1,000,000 states (1,000 and 20,000 in quick mode),
and the memory of a process whose manager works over the largest table.

Each size has its own database, filled straight through the WARM tier's ``store_many``
(60 % users, 1 in 5 of all states with ``data.status`` active: 12 % match the filter);
HOT is an empty Redis prefix and the user type's home is WARM, so a read with the local
cache cleared is a HOT miss and one SELECT. The sizes run interleaved in every round,
each on its own random ids, so that the per-call costs compare like with like.

Memory: a fresh process (so that filling the table does not count) opens a manager on
the largest database, reads 30,000 random states (filling the local cache to its
bounds), runs 20 searches and 200 updates, and reports its resident set size (RSS)
before the manager and after; the target is the local cache's byte bound + 50 MB.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from typing import Any

from .domain import SEARCH_TYPES, populate_warm
from .env import BenchEnv
from .harness import Benchmark, Row, Settings, compare, interleave, timed
from .stores import build_bench_store

__all__ = ["BENCHMARKS"]

#: Calls per timed round of the per-call rows.
CALLS = 100


def user_ids(count: int) -> list[str]:
    """The ids of the user states among the first ``count`` of :func:`populate_warm`."""
    types = SEARCH_TYPES
    return [f"s{n:07d}" for n in range(count) if types[(n // 5) % len(types)] == "user"]


class _Size:
    def __init__(self, env: BenchEnv, count: int) -> None:
        from flask_tiered_state.domain.manager import StateManager

        self.count = count
        self.name = f"scale{count}"
        self.url = env.database(self.name)
        store = build_bench_store(env, self.name, database_url=self.url, redis=True)
        self.manager = env.closing(StateManager.create(store=store, close_store=False))
        for name in ("user", "transaction", "subscription"):
            self.manager.register_state_type(name)
        started = time.perf_counter()
        populate_warm(self.manager, count)
        with self.manager.store.warm.engine.connect() as connection:
            connection.exec_driver_sql(f'ANALYZE "{self.manager.store.warm.table.name}"')
            connection.commit()
        self.filled = time.perf_counter() - started
        self.ids = user_ids(count)
        self.rng = random.Random(count)
        self.revision = 0

    def clear_cache(self) -> None:
        self.manager.store.cache.clear()

    def gets(self) -> None:
        get = self.manager.get_state
        for state_id in self.rng.sample(self.ids, CALLS):
            get(state_id, auto_promote=False)

    def updates(self) -> None:
        self.revision += 1
        update = self.manager.update_state
        for state_id in self.rng.sample(self.ids, CALLS):
            update(state_id, {"data": {"credits": self.revision}}, merge=True)

    def searches(self) -> None:
        search = self.manager.search_states
        for _ in range(CALLS // 10):
            search("user", {"data.status": "active"})


_RSS_SCRIPT = r"""
import json, random, resource, sys, time
def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
sys.path.insert(0, sys.argv[4])
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.storage.factory import build_store
import gc; gc.collect()
before = rss()
store = build_store(warm_url=sys.argv[1], hot_url=sys.argv[2], key_prefix=sys.argv[3],
                    local_dir=sys.argv[5])
manager = StateManager.create(store=store)
for name in ("user", "transaction", "subscription"):
    manager.register_state_type(name)
from bench.domain_scale import user_ids
ids = user_ids(int(sys.argv[6]))
rng = random.Random(7)
for state_id in rng.sample(ids, min(30_000, len(ids))):
    manager.get_state(state_id, auto_promote=False)
for _ in range(20):
    manager.search_states("user", {"data.status": "active"})
for state_id in rng.sample(ids, 200):
    manager.update_state(state_id, {"data": {"credits": 1}}, merge=True)
gc.collect()
after = rss()
print(json.dumps({"before": before, "after": after, "peak": resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss * 1024, "cache_max_bytes": store.cache.max_bytes,
    "cache_bytes": getattr(store.cache, "bytes", None)}))
manager.close()
"""


def _rss(env: BenchEnv, size: _Size) -> dict[str, Any]:
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    url = size.url
    result = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, url, env.redis_url(),
         env.redis_prefix(size.name + "-rss"), root, env.tempdir(size.name + "-rss"),
         str(size.count)],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"the RSS process failed: {result.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def domain_scale(env: BenchEnv, settings: Settings) -> list[Row]:
    counts = (1_000, 20_000) if settings.quick else (1_000, 100_000, 1_000_000)
    sizes = []
    for count in counts:
        size = _Size(env, count)
        print(f"[bench] domain_scale: {count:,} states filled in {size.filled:.0f} s",
              flush=True, file=sys.stderr)  # fmt: skip
        sizes.append(size)
    variants = {}
    for size in sizes:
        variants[f"get{size.count}"] = timed(size.gets, size.clear_cache)
        variants[f"update{size.count}"] = timed(size.updates, size.clear_cache)
        variants[f"search{size.count}"] = timed(size.searches)
    samples = interleave(variants, rounds=settings.rounds_for(7, 3))
    small = sizes[0]
    rows: list[Row] = []
    judge = not settings.quick
    for size in sizes[1:]:
        for operation, what, units in (
            ("get", "get_state on a WARM miss", CALLS),
            ("update", "update_state (merge, history)", CALLS),
            ("search", "search_states first page, one filter", CALLS // 10),
        ):
            rows.append(compare(
                f"scale {what}: {size.count:,} states vs {small.count:,}", samples,
                f"{operation}{size.count}", f"{operation}{small.count}", units=units,
                unit="call", target=1.2 if judge else None, floor=0.8 if judge else None,
            ))  # fmt: skip
    largest = sizes[-1]
    memory = _rss(env, largest)
    grown = memory["after"] - memory["before"]
    bound = memory["cache_max_bytes"] + 50 * 2**20
    rows.append(Row(
        f"scale RSS growth of a manager over {largest.count:,} WARM states "
        f"({grown / 2**20:.0f} MB) vs the local cache's bound + 50 MB ({bound / 2**20:.0f} MB)",
        None, None, target=1.0 if judge else None, paired=grown / bound,
    ))  # fmt: skip
    env.note(
        "domain_scale: per-call cost of get_state (WARM miss, local cache cleared, HOT "
        f"empty), update_state and the first search page at {', '.join(f'{c:,}' for c in counts)} "
        f"states ({CALLS} gets and updates, {CALLS // 10} searches per round; sizes "
        "interleaved). Filled in: "
        + ", ".join(f"{s.count:,}: {s.filled:.0f} s" for s in sizes)
        + f". RSS of a fresh process over {largest.count:,} states: "
        f"{memory['before'] / 2**20:.0f} MB before the manager, "
        f"{memory['after'] / 2**20:.0f} MB after 30,000 reads, 20 searches and 200 updates "
        f"(peak {memory['peak'] / 2**20:.0f} MB; local cache bound "
        f"{memory['cache_max_bytes'] / 2**20:.0f} MB)."
    )
    return rows


BENCHMARKS = [
    Benchmark("domain_scale", "get/update/search per call, 1,000 to 1,000,000 states",
              domain_scale, ("redis", "postgres")),
]  # fmt: skip

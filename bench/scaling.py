"""Per-key cost of ``TieredStore.batch_set`` as batches grow (issue 2: flat within
+-20% from 1,000 to 100,000 keys).

Sizes run interleaved; a small size repeats its batch within a round so that every
round moves a similar number of keys. COLD stops at a few hundred keys: moto's server
(a separate process) serves a few hundred requests a second here and a COLD write of
an existing key costs two (HEAD, PUT), so 100,000 keys would take over ten minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .data import records
from .env import BenchEnv
from .harness import Benchmark, Row, Settings, compare, interleave, timed
from .stores import build_bench_store

__all__ = ["BENCHMARKS"]

FLOOR, TARGET = 0.8, 1.2


def _per_key(
    env: BenchEnv,
    settings: Settings,
    tier: str,
    sizes: Sequence[int],
    rounds: int,
    ttl: int | None = None,
) -> list[Row]:
    from flask_tiered_state.storage.base import StateCategory

    category = StateCategory(tier)
    name = f"scaling_{tier}"
    url = env.database(name)
    store = build_bench_store(env, name, database_url=url, s3=True)
    top = max(sizes)
    batches: dict[str, tuple[list[dict[str, Any]], int]] = {}
    for size in sizes:
        repeats = max(1, top // size // 10) if size < top else 1
        batches[str(size)] = (
            [records(f"s{size}r{r}", size, distinct=1000) for r in range(repeats)],
            size * repeats,
        )

    def writer(items: list[dict[str, Any]]) -> Any:
        def body() -> None:
            for values in items:
                store.batch_set(values, category=category, ttl_seconds=ttl)

        return timed(body)

    samples = interleave(
        {label: writer(items) for label, (items, _) in batches.items()}, rounds=rounds
    )
    per_key = {label: [s / batches[label][1] for s in samples[label]] for label in batches}
    base = str(min(sizes))
    rows = [
        compare(
            f"{tier.upper()} batch_set per key: {int(label):,} vs {int(base):,} keys per batch",
            per_key, label, base, unit="key", target=TARGET, floor=FLOOR,
        )
        for label in batches
        if label != base
    ]  # fmt: skip
    per_round = ", ".join(f"{int(n):,} keys x{len(items)}" for n, (items, _) in batches.items())
    env.note(
        f"{tier.upper()} scaling: batches per round: {per_round}; {rounds} rounds after one "
        "warm-up. Library column: per-key cost at the larger size; raw column: per-key cost "
        "at the smallest size."
    )
    return rows


def scaling_hot(env: BenchEnv, settings: Settings) -> list[Row]:
    sizes = (1_000, 10_000, 100_000) if not settings.quick else (1_000, 5_000)
    return _per_key(env, settings, "hot", sizes, settings.rounds_for(2, 2), ttl=3600)


def scaling_warm(env: BenchEnv, settings: Settings) -> list[Row]:
    sizes = (1_000, 10_000, 100_000) if not settings.quick else (1_000, 5_000)
    return _per_key(env, settings, "warm", sizes, settings.rounds_for(3, 2))


def scaling_cold(env: BenchEnv, settings: Settings) -> list[Row]:
    sizes = (100, 500) if not settings.quick else (20, 60)
    return _per_key(env, settings, "cold", sizes, settings.rounds_for(2, 2))


BENCHMARKS = [
    Benchmark("scaling_hot", "per-key batch_set cost, HOT, 1k to 100k keys", scaling_hot,
              ("redis", "postgres", "s3")),
    Benchmark("scaling_warm", "per-key batch_set cost, WARM, 1k to 100k keys", scaling_warm,
              ("redis", "postgres", "s3")),
    Benchmark("scaling_cold", "per-key batch_set cost, COLD (moto), 100 to 500 keys",
              scaling_cold, ("redis", "postgres", "s3")),
]  # fmt: skip

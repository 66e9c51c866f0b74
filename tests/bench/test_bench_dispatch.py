"""The dispatcher benchmark runs: its quick form loses and duplicates no event, gives
finite ratios against the raw queue consumer, a lag figure, and leaves nothing behind.
No timing target is asserted (timings belong to ``python -m bench``)."""

from __future__ import annotations

import io
import math

import pytest

from bench.env import BenchEnv
from bench.harness import Settings
from bench.runner import ALL, run

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


def test_quick_dispatch_loses_nothing_and_measures_throughput_and_lag(
    redis_url: str, postgres_url: str
) -> None:
    with BenchEnv(redis_url=redis_url) as env:
        rows = run([b for b in ALL if b.name == "dispatch"], Settings(quick=True), env,
                   log=io.StringIO())  # fmt: skip
        notes = list(env.notes)
    exactly_once, *drains, lag_single, lag_batched = rows
    assert exactly_once.verdict == "PASS", exactly_once.note
    assert exactly_once.note.startswith("0 lost, 0 duplicated of ")
    assert len(drains) == 2
    assert all(r.ratio is not None and math.isfinite(r.ratio) for r in drains)
    assert [r.verdict for r in (lag_single, lag_batched)] == ["PASS", "PASS"]
    assert all(r.library is not None and 0 < r.library < 30 for r in (lag_single, lag_batched))
    assert sum(note.startswith("dispatch lag: ") for note in notes) == 2
    assert all("0 not delivered, 0 delivered twice" in n for n in notes if "lag:" in n)

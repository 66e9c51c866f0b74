"""The tier directory benchmark runs in quick mode, counts no SQL statement and no S3
request for never-moved keys, and leaves nothing behind (no timing is asserted)."""

from __future__ import annotations

import io
import math

from bench.env import BenchEnv
from bench.harness import Settings
from bench.runner import ALL, run


def test_quick_tier_directory_counts_no_lower_tier_request(
    redis_url: str, postgres_url: str
) -> None:
    benchmarks = [b for b in ALL if b.name == "tier_directory"]
    with BenchEnv(redis_url=redis_url) as env:
        rows = run(benchmarks, Settings(quick=True), env, log=io.StringIO())
        pattern = f"bench:{env.run_id}:*"
    assert len(rows) == 4, [r.note for r in rows]
    timed = [r for r in rows if r.status is None]
    assert len(timed) == 3
    assert all(r.ratio is not None and math.isfinite(r.ratio) for r in timed)
    (count,) = [r for r in rows if r.status is not None]
    assert (count.status, count.note) == (
        "PASS",
        "0 SQL statements, 0 S3 requests per batch of 200",
    )
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=pattern, count=1000)) == []
    finally:
        client.close()

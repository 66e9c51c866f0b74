"""The HTTP benchmark runs: both apps answer under gunicorn, its rows are finite cost
ratios that say which load generator made them, and a run leaves no server process, no
Redis key and no database behind. No timing target is asserted here."""

from __future__ import annotations

import io
import math
import os
from typing import Any

import pytest

import bench.http
from bench.env import BenchEnv
from bench.harness import Settings
from bench.runner import ALL, run

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_quick_http_compares_both_apps_and_stops_every_server(
    redis_url: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("gunicorn")
    started: list[bench.http.Server] = []

    class Recorded(bench.http.Server):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(bench.http, "Server", Recorded)
    monkeypatch.setenv(bench.http.LOAD_ENV, "python")  # wrk may be absent; this is the fallback
    with BenchEnv(redis_url=redis_url) as env:
        rows = run([b for b in ALL if b.name == "http"], Settings(quick=True), env,
                   log=io.StringIO())  # fmt: skip
        pattern = f"bench:{env.run_id}:*"
        database_prefix = f"tiered_state_bench_{env.run_id}_"
        assert [s.name for s in started] == ["library", "handwritten"]
        assert not any(_group_alive(s.process.pid) for s in started)  # stopped by the run
    assert [r.status for r in rows] == [None, None], [r.note for r in rows]
    assert rows[0].benchmark.startswith("HTTP GET a state (cache warm)")
    assert rows[1].benchmark.startswith("HTTP POST an UPDATE transition")
    for row in rows:
        assert row.ratio is not None and math.isfinite(row.ratio) and row.ratio > 0
        assert "Python load generator" in row.note and "req/s" in row.note
        assert row.verdict == "info"  # quick sizes judge nothing
    import psycopg
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=pattern, count=1000)) == []
    finally:
        client.close()
    admin_url = postgres_url.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0]
    with psycopg.connect(admin_url + "/postgres") as admin:
        left = admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (database_prefix + "%",)
        ).fetchall()
    assert left == []


def test_a_server_that_cannot_start_is_stopped_and_named(tmp_path: Any) -> None:
    pytest.importorskip("gunicorn")
    with BenchEnv() as env:
        server = bench.http.Server(env, "broken", "bench.no_such_module:create_app()", {})
        with pytest.raises(RuntimeError, match="gunicorn broken did not answer"):
            server.wait_ready("/")
        assert server.process.returncode is not None
        assert not _group_alive(server.process.pid)

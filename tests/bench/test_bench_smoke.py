"""The benchmark harness works: rows come out with finite ratios, the table renders,
and a run leaves nothing behind. No timing target is asserted here (timings belong to
``python -m bench``, never to unit tests)."""

from __future__ import annotations

import importlib.util
import io
import math
import os
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

import bench.env
from bench.env import BenchEnv, ServiceUnavailable
from bench.harness import Benchmark, Row, Settings, compare, interleave, render_table
from bench.runner import ALL, main, run, select

QUICK = Settings(quick=True)


def _by_name(name: str) -> list[Benchmark]:
    return [b for b in ALL if b.name == name]


def test_interleave_alternates_the_order_and_pairs_rounds() -> None:
    calls: list[str] = []

    def variant(name: str, seconds: float) -> Callable[[], float]:
        def round_() -> float:
            calls.append(name)
            return seconds

        return round_

    samples = interleave(
        {"lib": variant("lib", 3.0), "raw": variant("raw", 2.0)}, rounds=4, warmup=1
    )
    assert calls == ["lib", "raw", "lib", "raw", "raw", "lib", "lib", "raw", "raw", "lib"]
    assert samples == {"lib": [3.0] * 4, "raw": [2.0] * 4}
    row = compare("x", samples, "lib", "raw", units=2, target=1.3)
    assert (row.library, row.raw, row.ratio, row.verdict) == (1.5, 1.0, 1.5, "FAIL")
    assert compare("x", samples, "lib", "raw", target=1.6).verdict == "PASS"
    assert compare("x", samples, "raw", "lib", target=1.2, floor=0.8).verdict == "FAIL"


def test_table_marks_failures_and_states_skips() -> None:
    text = render_table(
        [
            Row("fast", 2e-6, 1e-6, target=3.0),
            Row("slow", 0.5, 0.1, unit="1000 keys", target=1.3),
            Row("needs s3", None, None, note="moto missing", status="SKIP"),
        ]
    )
    lines = text.splitlines()
    assert lines[0] == "| benchmark | library | raw baseline | ratio | target | verdict |"
    assert lines[2] == "| fast | 2.0 µs/op | 1.0 µs/op | 2.00x | <= 3x | PASS |"
    assert (
        lines[3]
        == "| slow | 500.00 ms/1000 keys | 100.00 ms/1000 keys | 5.00x | <= 1.3x | **FAIL** |"
    )
    assert lines[4] == "| needs s3 (moto missing) | - | - | - | - | SKIP |"


def test_select_by_name_group_and_glob() -> None:
    assert [b.name for b in select(["batch"])] == ["batch_hot", "batch_warm", "batch_cold"]
    assert [b.name for b in select(["get_hot", "*search"])] == ["get_hot", "domain_search"]
    assert len(select(None)) == len(ALL)
    with pytest.raises(SystemExit, match="matches no benchmark"):
        select(["nope"])


def test_quick_domain_get_gives_finite_ratios_and_cleans_up() -> None:
    with BenchEnv() as env:
        rows = run(_by_name("domain_get"), QUICK, env, log=io.StringIO())
        workdir = env.tempdir("probe").parent
        assert workdir.exists()
    assert not workdir.exists()
    assert [r.status for r in rows] == [None, None, None]
    for row in rows:
        assert row.ratio is not None and math.isfinite(row.ratio) and row.ratio > 0
        assert row.verdict in {"PASS", "FAIL", "info"}
    assert rows[0].target == 3.0


def test_quick_get_hot_on_redis_leaves_no_keys(redis_url: str) -> None:
    import redis

    with BenchEnv(redis_url=redis_url) as env:
        rows = run(_by_name("get_hot"), QUICK, env, log=io.StringIO())
        pattern = f"bench:{env.run_id}:*"
    assert len(rows) == 2 and all(r.status is None for r in rows)
    assert all(r.ratio is not None and math.isfinite(r.ratio) for r in rows)
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=pattern, count=1000)) == []
    finally:
        client.close()


def test_quick_encryption_gives_an_info_ratio_per_operation(
    redis_url: str, postgres_url: str
) -> None:
    with BenchEnv(redis_url=redis_url) as env:
        rows = run(_by_name("encryption"), QUICK, env, log=io.StringIO())
        pattern = f"bench:{env.run_id}:*"
        notes = list(env.notes)
    assert len(rows) == 9 and [r.status for r in rows] == [None] * 9
    for row in rows:
        assert row.benchmark.startswith("encryption: ")
        assert row.ratio is not None and math.isfinite(row.ratio) and row.ratio > 0
        assert row.verdict == "info"  # the issue set no target
    assert sum(note.startswith("encryption: PostgreSQL WARM, Redis HOT.") for note in notes) == 1
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=pattern, count=1000)) == []
    finally:
        client.close()


def test_a_floor_alone_is_an_at_least_target() -> None:
    fast = Row("direct", 1.5, 0.01, floor=100.0)
    assert (fast.target_text, fast.verdict) == (">= 100x", "PASS")
    assert Row("direct", 0.5, 0.01, floor=100.0).verdict == "FAIL"


def test_quick_ops_times_every_operation_and_prints_the_documents_table(
    redis_url: str, postgres_url: str
) -> None:
    with BenchEnv(redis_url=redis_url) as env:
        rows = run(_by_name("ops"), QUICK, env, log=io.StringIO())
        pattern = f"bench:{env.run_id}:*"
        notes = list(env.notes)
    assert [r.status for r in rows] == [None] * len(rows), [r.note for r in rows]
    names = [r.benchmark for r in rows]
    assert "ops 100 keys: per-key manager path vs backup (direct)" in names
    assert "ops 400 keys: batch_get_state vs backup (direct)" in names
    for operation in ("backup", "checkpoint", "restore", "recovery"):
        assert f"ops per-key cost of {operation}: 400 keys vs 100" in names
    assert names[-1].startswith("ops peak memory of a 400-key backup vs one archive chunk")
    for row in rows:
        assert row.ratio is not None and math.isfinite(row.ratio) and row.ratio > 0
        assert row.verdict == "info"  # quick sizes judge nothing
    (note,) = [n for n in notes if n.startswith("ops: ")]
    assert "| 1,000 | 9.33 s | 6.79 ms |" in note  # the design document's figures
    assert "| 400 | " in note and "MB" in note
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=pattern, count=1000)) == []
    finally:
        client.close()


def test_command_line_prints_one_table(tmp_path: Path) -> None:
    out = io.StringIO()
    target = tmp_path / "table.md"
    assert main(["--quick", "--only", "domain_get", "--output", str(target)], out=out) == 0
    text = out.getvalue()
    assert text.startswith("| benchmark | library | raw baseline | ratio | target | verdict |")
    assert "get_state, local-cache hit vs dict lookup + copy.deepcopy" in text
    assert target.read_text(encoding="utf-8") == text


def test_a_missing_server_gives_a_skip_row_in_one_line() -> None:
    with BenchEnv(redis_url="redis://127.0.0.1:1/0") as env:
        rows = run(_by_name("get_hot"), QUICK, env, log=io.StringIO())
    assert [(r.benchmark, r.verdict) for r in rows] == [("get_hot", "SKIP")]
    assert "127.0.0.1:1" in rows[0].note
    assert len(render_table(rows).splitlines()) == 3


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_quick_batch_cold_runs_s3_in_a_separate_process(redis_url: str, postgres_url: str) -> None:
    with BenchEnv(redis_url=redis_url) as env:
        rows = run(_by_name("batch_cold"), QUICK, env, log=io.StringIO())
        port = int(env.s3_endpoint().rsplit(":", 1)[1])
        # werkzeug logs each request of the separate server to this file
        log = (env.tempdir("moto") / "moto-server.log").read_text(encoding="utf-8")
        assert f'"PUT /bench-{env.run_id}-batch-cold'.lower() in log.lower()
        notes = list(env.notes)
    assert _refused(port)
    assert [r.status for r in rows] == [None] * len(rows) and len(rows) >= 6
    assert all(r.ratio is not None and math.isfinite(r.ratio) for r in rows)
    assert rows[0].benchmark.startswith("COLD batch_get 20: ")
    assert any("COLD batches use 20 keys" in note for note in notes)


def test_quick_batch_hot_shows_the_json_codec(redis_url: str, postgres_url: str) -> None:
    with BenchEnv(redis_url=redis_url) as env:
        rows = run(_by_name("batch_hot"), QUICK, env, log=io.StringIO())
        notes = list(env.notes)
    codec = [r for r in rows if "orjson" in r.benchmark]
    if importlib.util.find_spec("orjson") is None:
        assert codec == []
    else:
        assert len(codec) == 4 and all(r.target is None and r.verdict == "info" for r in codec)
    assert sum(note.startswith("JSON codec of the library: ") for note in notes) == 1


def _kept_log(env: BenchEnv) -> Path:
    return Path(tempfile.gettempdir()) / f"tiered-state-bench-{env.run_id}-moto.log"


def test_a_moto_server_that_exits_gives_a_skip_naming_its_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = "import sys; print('no moto today'); sys.exit(3)"
    monkeypatch.setattr(bench.env, "MOTO_COMMAND", (sys.executable, "-c", code))
    with BenchEnv() as env:
        with pytest.raises(ServiceUnavailable, match="exited with status 3") as failure:
            env.s3_endpoint()
        with pytest.raises(ServiceUnavailable, match="exited with status 3"):
            env.s3_endpoint()  # remembered: no second server, no second wait
    kept = _kept_log(env)
    try:
        assert f"log {kept}; its last line: no moto today" in str(failure.value)
        assert kept.read_text(encoding="utf-8") == "no moto today\n"  # survives close
    finally:
        kept.unlink()


def test_a_moto_server_that_never_answers_is_stopped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    monkeypatch.setattr(bench.env, "MOTO_COMMAND", (sys.executable, "-c", code))
    monkeypatch.setattr(bench.env, "MOTO_START_TIMEOUT", 2.0)
    with BenchEnv() as env, pytest.raises(ServiceUnavailable) as failure:
        env.s3_endpoint()
    _kept_log(env).unlink()
    assert "did not answer on port" in str(failure.value) and "within 2 s" in str(failure.value)
    with pytest.raises(ProcessLookupError):  # terminated and reaped
        os.kill(int(pid_file.read_text()), 0)

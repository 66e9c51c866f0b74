"""Selecting and running benchmarks; the command line of ``python -m bench``."""

from __future__ import annotations

import argparse
import cProfile
import fnmatch
import io
import pstats
import sys
import time
import traceback
from collections.abc import Sequence
from typing import TextIO

from . import (
    batch,
    batch_cold,
    dispatch,
    domain,
    domain_scale,
    encryption,
    http,
    ops,
    scaling,
    storage_tiers,
    tier_directory,
)
from .env import BenchEnv, ServiceUnavailable
from .harness import Benchmark, Row, Settings, render_table

__all__ = ["ALL", "main", "run", "select"]

ALL: list[Benchmark] = [
    *storage_tiers.BENCHMARKS,
    *batch.BENCHMARKS,
    *batch_cold.BENCHMARKS,
    *scaling.BENCHMARKS,
    *domain.BENCHMARKS,
    *domain_scale.BENCHMARKS,
    *dispatch.BENCHMARKS,
    *encryption.BENCHMARKS,
    *ops.BENCHMARKS,
    *http.BENCHMARKS,
    *tier_directory.BENCHMARKS,
]


def select(
    patterns: Sequence[str] | None, benchmarks: Sequence[Benchmark] = ALL
) -> list[Benchmark]:
    """The benchmarks named by ``patterns``: a name, a glob, or a group prefix
    (``batch`` selects ``batch_hot``, ``batch_warm``, ...). None or empty: all."""
    if not patterns:
        return list(benchmarks)
    chosen = [
        b
        for b in benchmarks
        if any(
            b.name == p or b.name.startswith(p + "_") or fnmatch.fnmatchcase(b.name, p)
            for p in patterns
        )
    ]
    if not chosen:
        names = ", ".join(b.name for b in benchmarks)
        raise SystemExit(f"--only {' '.join(patterns)} matches no benchmark; choose from {names}.")
    return chosen


def run(
    benchmarks: Sequence[Benchmark],
    settings: Settings,
    env: BenchEnv,
    *,
    profile: bool = False,
    log: TextIO = sys.stderr,
) -> list[Row]:
    """Run each benchmark; one that cannot reach its servers gives a SKIP row, one that
    breaks an ERROR row, and the others still run."""
    rows: list[Row] = []
    for benchmark in benchmarks:
        print(f"[bench] {benchmark.name}: {benchmark.description} ...", file=log, flush=True)
        started = time.perf_counter()
        profiler = cProfile.Profile() if profile else None
        try:
            if profiler is not None:
                profiler.enable()
            try:
                rows += benchmark.run(env, settings)
            finally:
                if profiler is not None:
                    profiler.disable()
        except ServiceUnavailable as exc:
            rows.append(Row(benchmark.name, None, None, note=str(exc), status="SKIP"))
        except Exception as exc:
            traceback.print_exc(file=log)
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            rows.append(Row(benchmark.name, None, None, note=reason, status="ERROR"))
        print(f"[bench] {benchmark.name}: {time.perf_counter() - started:.1f} s", file=log)
        env.benchmark_done()
        if profiler is not None:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
            print(out.getvalue(), file=log)
    return rows


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="flask_tiered_state against the raw clients, in one process: one "
        "Markdown table of ratios and their targets.",
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller sizes")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only these benchmarks (name, glob or group prefix; repeatable, or "
        "comma-separated)",
    )
    parser.add_argument("--rounds", type=int, help="rounds per benchmark (overrides defaults)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--output", metavar="FILE", help="also write the table to FILE")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile each benchmark (stderr); slows it"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when a target FAILs"
    )
    args = parser.parse_args(argv)
    out = sys.stdout if out is None else out
    patterns = [p for item in args.only or () for p in item.split(",") if p]
    chosen = select(patterns)
    if args.list:
        for b in chosen:
            print(f"{b.name:16} {b.description} (needs: {', '.join(b.needs) or '-'})", file=out)
        return 0
    settings = Settings(quick=args.quick, rounds=args.rounds)
    started = time.perf_counter()
    with BenchEnv() as env:
        rows = run(chosen, settings, env, profile=args.profile)
        notes = list(env.notes)
    text = render_table(rows)
    if notes:
        text += "\n\n" + "\n\n".join(notes)
    mode = "quick" if args.quick else "full"
    text += (
        f"\n\n_{mode} run, {time.perf_counter() - started:.0f} s. Library and raw: medians of "
        "interleaved rounds; ratio: median of the per-round ratios (each round pairs the two "
        "sides run back to back)._"
    )
    print(text, file=out)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return 1 if args.strict and any(r.verdict == "FAIL" for r in rows) else 0

"""Backups, checkpoints and recovery (issue 15): the tiers read directly versus the
manager's per-key path, on PostgreSQL WARM, Redis HOT and a directory COLD.

Each size (100, 500, 1,000 and 100,000 keys; much smaller in quick mode) gets its own
database and Redis prefix, seeded with ``batch_set_state`` in chunks. Timed, in
interleaved rounds:

- ``manager``: ``get_keys_by_pattern("*")`` then ``get_state`` per id, the local cache
  cleared first (what a backup script built on the manager's public reads does);
- ``batch``: the same ids through ``batch_get_state`` (local cache cleared);
- ``read``: the bare direct read, ``keys`` and ``fetch_many`` (1,000 keys a call) of
  each tier, nothing written: the floor under every direct operation;
- ``backup``: ``BackupManager.create_backup`` (records of every tier, keys listed and
  fetched with ``fetch_many``, written as a gzip JSON-lines archive to a directory);
- ``checkpoint``: ``StateCapture.capture_full_state`` (a consistent cut);
- ``restore``: ``restore_backup(mode="missing")`` after the WARM records were deleted
  (every state comes back through the manager's write path, a history row each);
- ``recovery``: ``RecoveryHandler.recover_critical_state(["state:*"])`` with HOT emptied
  (every key gets a verified HOT copy).

Peak memory is :mod:`tracemalloc`'s, one extra untimed run of each operation (tracing
slows the code it watches). "One chunk" is the peak of making one archive chunk from
nothing: ``chunk_items`` records read from WARM with ``fetch_many`` (as a backup reads
them) and written by an :class:`ArchiveWriter`. The records of a chunk are the working
set a backup cannot go below; the target is that a whole backup stays within twice it.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .data import record
from .env import BenchEnv
from .harness import Benchmark, Row, Settings, chunked, compare, format_seconds, interleave, timed
from .stores import build_bench_store

__all__ = ["BENCHMARKS", "DOCUMENT"]

#: The design document's table: keys -> (manager per-key path, direct path), seconds.
DOCUMENT = {100: (0.097, 0.0006), 500: (2.392, 0.00307), 1000: (9.330, 0.00679)}
#: The size at which the issue's "direct >= 100x faster" target is judged.
JUDGED = 1000


@dataclass
class _Size:
    """The measurements of one size: median seconds and peak bytes per operation."""

    keys: int
    seconds: dict[str, float] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)


def _fields(number: int) -> dict[str, Any]:
    base = record(number)
    return {"name": base["name"], "data": base["data"], "metadata": base["metadata"]}


class _Setup:
    """One size's manager, tiers and ops objects."""

    def __init__(self, env: BenchEnv, keys: int) -> None:
        from flask_tiered_state.domain.manager import StateManager
        from flask_tiered_state.ops.backup import BackupManager
        from flask_tiered_state.ops.capture import StateCapture
        from flask_tiered_state.ops.recovery import RecoveryHandler

        name = f"ops{keys}"
        store = build_bench_store(env, name, database_url=env.database(name), redis=True)
        self.manager = env.closing(StateManager.create(store=store, close_store=False))
        self.manager.register_state_type("user")
        self.store = store
        self.repositories = self.manager.get_repositories()
        self.ids = [f"u{n:07d}" for n in range(keys)]
        for number, chunk in enumerate(chunked(self.ids, 1000)):
            start = number * 1000
            self.manager.batch_set_state(
                {i: _fields(start + n) for n, i in enumerate(chunk)}, state_type="user"
            )
        self.destination = env.tempdir(f"{name}-archives")
        self.backups = BackupManager(manager=self.manager, destination=self.destination)
        self.capture = StateCapture.for_manager(self.manager, self.destination)
        self.recovery = RecoveryHandler.for_manager(self.manager, ["state:*"])
        #: The backup each restore round reads.
        self.source = self.backups.create_backup(tiers=("warm",))["backup_id"]
        self._made: list[str] = []

    # -- the operations ----------------------------------------------------------

    def manager_path(self) -> None:
        for state_id in self.manager.get_keys_by_pattern("*"):
            self.manager.get_state(state_id, auto_promote=False)

    def batch_path(self) -> None:
        self.manager.batch_get_state(self.manager.get_keys_by_pattern("*"))

    def direct_read(self) -> None:
        for repository in self.repositories:
            for chunk in chunked(list(repository.keys("state:*")), 1000):
                repository.fetch_many(chunk)

    def backup(self) -> None:
        self._made.append(self.backups.create_backup()["backup_id"])

    def checkpoint(self) -> None:
        self._made.append(self.capture.capture_full_state()["archive_id"])

    def restore(self) -> None:
        report = self.backups.restore_backup(self.source, dry_run=False)
        if report["errors"] or report["counts"]["recreated"] + report["counts"]["restored"] != len(
            self.ids
        ):
            raise AssertionError(f"restore of {len(self.ids)} keys: {report['counts']}")

    def recover(self) -> None:
        report = self.recovery.recover_critical_state()
        if not report.ok:
            raise AssertionError(f"recovery: {report.summary()}")

    # -- untimed preparations ----------------------------------------------------

    def cold_cache(self) -> None:
        self.store.cache.clear()
        self._drop_archives()
        self._vacuum()

    def _vacuum(self) -> None:
        """Vacuum the WARM and history tables: every operation reads tables in the state
        autovacuum keeps them in. A restore round deletes and rewrites every row; left
        alone, the next rounds read past as many dead rows (at 1,000 keys: a checkpoint
        30-45 % slower) or race the autovacuum those rows start (at 100,000 keys)."""
        engine = self.manager.history.engine
        tables = (self.repositories.warm.table.name, self.manager.history.table.name)  # type: ignore[attr-defined]
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in tables:
                connection.exec_driver_sql(f"VACUUM (ANALYZE) {table}")

    def _drop_archives(self) -> None:
        from flask_tiered_state.ops.archive import delete_archive

        while self._made:
            delete_archive(self.destination, self._made.pop())

    def wipe_warm(self) -> None:
        """No record left: WARM deleted, and HOT's copies (a recovery round placed them)."""
        self.wipe_hot()
        self.repositories.warm.delete_many(["state:" + i for i in self.ids])
        self.store.cache.clear()
        self._vacuum()

    def wipe_hot(self) -> None:
        self.cold_cache()
        hot = self.repositories.hot
        hot.delete_many(list(hot.keys("state:*")))

    def rounds(self) -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
        """Each operation and the setup before it."""
        return {
            "manager": (self.manager_path, self.cold_cache),
            "batch": (self.batch_path, self.cold_cache),
            "read": (self.direct_read, self.cold_cache),
            "backup": (self.backup, self.cold_cache),
            "checkpoint": (self.checkpoint, self.cold_cache),
            "restore": (self.restore, self.wipe_warm),
            "recovery": (self.recover, self.wipe_hot),
        }


def _peak(body: Callable[[], object], setup: Callable[[], object]) -> int:
    """tracemalloc's peak of one run of ``body`` (after ``setup``, untraced), in bytes."""
    setup()
    gc.collect()
    tracemalloc.start()
    try:
        body()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _one_chunk(setup: _Setup, env: BenchEnv) -> tuple[int, int]:
    """The peak of making one archive chunk from nothing: its records read from WARM
    (``fetch_many``, ``chunk_keys`` keys a call, as a backup reads) and written by an
    :class:`ArchiveWriter`; (bytes, items)."""
    from flask_tiered_state.ops.archive import ArchiveWriter, new_archive_id

    keys = ["state:" + i for i in setup.ids[: setup.backups.chunk_items]]
    warm = setup.repositories.warm
    target = env.tempdir("ops-one-chunk")

    def items() -> Any:
        for part in chunked(keys, setup.backups.chunk_keys):
            for key, stored in warm.fetch_many(part).items():
                yield {"key": key, "state_id": key[6:], "tier": "warm",
                       "version": stored.metadata.version, "value": stored.value}  # fmt: skip

    gc.collect()
    tracemalloc.start()
    try:
        writer = ArchiveWriter(target, new_archive_id(), "backup",
                               chunk_items=setup.backups.chunk_items)  # fmt: skip
        writer.add("records", items())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    writer.abort()
    return peak, len(keys)


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def _measure(env: BenchEnv, keys: int, rounds: int, skip: Sequence[str]) -> tuple[_Size, _Setup]:
    setup = _Setup(env, keys)
    chosen = {name: op for name, op in setup.rounds().items() if name not in skip}
    variants = {name: timed(body, before) for name, (body, before) in chosen.items()}
    samples = interleave(variants, rounds=rounds, warmup=1 if rounds > 1 else 0)
    result = _Size(keys, samples=samples)
    result.seconds = {name: statistics.median(s) for name, s in samples.items()}
    for name, (body, before) in chosen.items():
        if name in ("backup", "checkpoint", "restore", "recovery"):
            result.peak[name] = _peak(body, before)
    setup.cold_cache()
    return result, setup


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else format_seconds(seconds)


def _table(sizes: Sequence[_Size], large: int) -> str:
    head = (
        "| keys | manager per-key | batch_get_state | direct read | backup | checkpoint | "
        "restore | recovery | peak memory: backup / checkpoint / restore / recovery |"
    )
    lines = [head, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    per_key = None
    for size in sizes:
        if size.keys == JUDGED and "manager" in size.seconds:
            per_key = size.seconds["manager"] / size.keys
    for size in sizes:
        s = size.seconds
        if "manager" in s:
            manager = _ms(s["manager"])
        elif per_key is not None:
            manager = f"not run, ≈ {format_seconds(per_key * size.keys)} extrapolated"
        else:
            manager = "not run"
        peaks = " / ".join(_mb(size.peak[o]) if o in size.peak else "-"
                           for o in ("backup", "checkpoint", "restore", "recovery"))  # fmt: skip
        timings = [_ms(s.get(o)) for o in ("batch", "read", "backup", "checkpoint", "restore",
                                           "recovery")]  # fmt: skip
        cells = [f"{size.keys:,}", manager, *timings, peaks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _document(sizes: Sequence[_Size]) -> str:
    ours = {s.keys: s.seconds for s in sizes}
    lines = [
        "| keys | document: manager | document: direct | ours: manager per-key | "
        "ours: direct read | ours: backup |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for keys, (manager, direct) in DOCUMENT.items():
        mine = ours.get(keys, {})
        lines.append(f"| {keys:,} | {format_seconds(manager)} | {format_seconds(direct)} | "
                     f"{_ms(mine.get('manager'))} | {_ms(mine.get('read'))} | "
                     f"{_ms(mine.get('backup'))} |")  # fmt: skip
    return "\n".join(lines)


def ops(env: BenchEnv, settings: Settings) -> list[Row]:
    sizes = (10, 50, 100, 400) if settings.quick else (100, 500, 1000, 100_000)
    small_rounds = settings.rounds_for(5, 2)
    large_rounds = settings.rounds_for(2, 2)
    large = sizes[-1]
    judge = not settings.quick  # the targets are about the full sizes
    measured: list[_Size] = []
    rows: list[Row] = []
    chunk_peak = chunk_items = 0
    for keys in sizes:
        is_large = keys == large
        started = time.perf_counter()
        size, setup = _measure(env, keys, large_rounds if is_large else small_rounds,
                               ("manager",) if is_large and not settings.quick else ())  # fmt: skip
        print(f"[bench] ops: {keys:,} keys in {time.perf_counter() - started:.0f} s",
              flush=True, file=sys.stderr)  # fmt: skip
        measured.append(size)
        if is_large:
            chunk_peak, chunk_items = _one_chunk(setup, env)
        unit = f"{keys} keys"
        if "manager" in size.samples:
            rows.append(compare(f"ops {keys:,} keys: per-key manager path vs backup (direct)",
                                size.samples, "manager", "backup", unit=unit,
                                floor=100.0 if judge and keys == JUDGED else None))  # fmt: skip
            rows.append(compare(f"ops {keys:,} keys: per-key manager path vs direct read "
                                "(keys + fetch_many)", size.samples, "manager", "read",
                                unit=unit))  # fmt: skip
        rows.append(compare(f"ops {keys:,} keys: batch_get_state vs backup (direct)",
                            size.samples, "batch", "backup", unit=unit,
                            target=1.5 if judge else None))  # fmt: skip
    small = next(s for s in measured if s.keys == (JUDGED if judge else sizes[-2]))
    big = measured[-1]
    for operation in ("backup", "checkpoint", "restore", "recovery"):
        rows.append(Row(f"ops per-key cost of {operation}: {big.keys:,} keys vs {small.keys:,}",
                        big.seconds[operation] / big.keys, small.seconds[operation] / small.keys,
                        unit="key", target=1.2 if judge else None,
                        floor=0.8 if judge else None))  # fmt: skip
    backup_peak = big.peak["backup"]
    rows.append(Row(f"ops peak memory of a {big.keys:,}-key backup vs one archive chunk "
                    f"({_mb(backup_peak)} vs {_mb(chunk_peak)}, {chunk_items:,} records)",
                    None, None, target=2.0 if judge else None,
                    paired=backup_peak / chunk_peak))  # fmt: skip
    env.note(
        "ops: backups, checkpoints, restore and recovery on PostgreSQL WARM, Redis HOT and a "
        "directory COLD; 'library' is the first-named path, 'raw baseline' the direct one "
        "(for the per-key rows: the larger size's cost per key, and the smaller's). Median "
        "seconds per operation over the whole key set; peak memory by tracemalloc (one "
        "extra run each). The per-key manager path is not run at the largest size.\n\n"
        + _table(measured, large)
        + "\n\nThe design document's table beside ours (document: its machine and its "
        "implementation; ours: this run):\n\n" + _document(measured)
    )
    return rows


BENCHMARKS = [
    Benchmark("ops", "backups, checkpoints, restore, recovery: direct tiers vs the manager",
              ops, ("redis", "postgres")),
]  # fmt: skip

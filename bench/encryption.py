"""Field encryption at rest (issue 14): what sealing and opening cost per read and per
write, on PostgreSQL WARM + Redis HOT.

One manager with a master key and two types of the same records: ``sealed`` encrypts
``data.password`` and ``data.card.number`` (AES-256-GCM per field, per-state data keys
wrapped by the master key), ``plain`` encrypts nothing. Each row compares the same call
on both: the "library" column is the encrypted type, the "raw baseline" the plain one,
and the ratio is the price of encryption. The issue set no target: the rows are "info".
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from .data import record
from .env import BenchEnv
from .harness import Benchmark, Row, Settings, chunked, compare, cycling, interleave, timed
from .stores import build_bench_store

__all__ = ["BENCHMARKS"]

SIDES = ("sealed", "plain")
FIELDS = ["data.password", "data.card.number"]


def _manager(env: BenchEnv) -> Any:
    from flask_tiered_state import generate_master_key
    from flask_tiered_state.domain.manager import StateManager

    url = env.database("encryption")
    store = build_bench_store(env, "encryption", database_url=url, redis=True)
    manager = env.closing(
        StateManager.create(store=store, close_store=False, encryption_keys=[generate_master_key()])
    )
    manager.register_state_type("sealed", encrypted_fields=FIELDS)
    manager.register_state_type("plain")
    return manager


_revisions = itertools.count(1)


def _state(number: int) -> dict[str, Any]:
    """A bench record's fields, with a new password and card number each time."""
    revision = next(_revisions)
    base = record(number)
    data = {**base["data"], "password": f"pw-{number}-{revision:08d}",
            "card": {"number": f"4111{revision:012d}", "exp": "12/30"}}  # fmt: skip
    return {"name": base["name"], "data": data, "metadata": base["metadata"]}


def _ids(side: str, what: str, count: int) -> list[str]:
    return [f"{side[0]}{what}{n:06d}" for n in range(count)]


def _populate(manager: Any, side: str, state_ids: Sequence[str]) -> None:
    for chunk in chunked(state_ids, 1000):
        manager.batch_set_state({i: _state(n) for n, i in enumerate(chunk)}, state_type=side)


def _pairs(
    make: Callable[[str], Callable[[], float]],
) -> dict[str, Callable[[], float]]:
    return {side: make(side) for side in SIDES}


def encryption(env: BenchEnv, settings: Settings) -> list[Row]:
    manager = _manager(env)
    store, data_keys = manager.store, manager.data_keys
    cached, warm = settings.pick(2000, 200), settings.pick(400, 60)
    updates, batch = settings.pick(200, 20), settings.pick(1000, 200)
    single_rounds, batch_rounds = settings.rounds_for(40, 3), settings.rounds_for(12, 3)
    ids = {
        side: {
            "hit": _ids(side, "h", cached),
            "warm": _ids(side, "w", warm),
            "upd": _ids(side, "u", updates),
            "batch": _ids(side, "b", batch),
        }
        for side in SIDES
    }
    for side in SIDES:
        for group in ids[side].values():
            _populate(manager, side, group)
    for side in SIDES:  # the cache-hit ids are read once: the local cache holds them
        for state_id in ids[side]["hit"]:
            assert manager.get_state(state_id, auto_promote=False) is not None
    fresh = itertools.count()

    def setup_for(side: str, group: str, *, local_cache: bool, data_key_cache: bool) -> Any:
        """Untimed, before each round: the local cache kept or cleared; the data keys of
        ``group`` in the process's key cache (re-read where its 60 s ran out, or where an
        earlier round cleared it) or cleared from it."""

        def setup() -> None:
            if not local_cache:
                store.cache.clear()
            if not data_key_cache:
                data_keys._cache.clear()  # no public way: a new process starts so
            elif side == "sealed":
                data_keys.for_reading(ids[side][group])

        return setup

    def reads(side: str) -> Callable[[], float]:
        def body(chunk: Sequence[str]) -> None:
            for state_id in chunk:
                manager.get_state(state_id, auto_promote=False)

        setup = setup_for(side, "hit", local_cache=True, data_key_cache=True)
        return cycling(chunked(ids[side]["hit"], 100), body, setup)

    def warm_reads(side: str, *, data_key_cache: bool = True) -> Callable[[], float]:
        def body(chunk: Sequence[str]) -> None:
            for state_id in chunk:
                manager.get_state(state_id, auto_promote=False)

        setup = setup_for(side, "warm", local_cache=False, data_key_cache=data_key_cache)
        return cycling(chunked(ids[side]["warm"], 20), body, setup)

    def writes(side: str) -> Callable[[], float]:
        def body(chunk: Sequence[str]) -> None:
            for state_id in chunk:
                manager.update_state(state_id, _state(0))

        setup = setup_for(side, "upd", local_cache=True, data_key_cache=True)
        return cycling(chunked(ids[side]["upd"], 5), body, setup)

    def registrations(side: str) -> Callable[[], float]:
        def body(_: object) -> None:
            for _n in range(5):
                manager.register_state(f"{side[0]}r{next(fresh):07d}", side, _state(0))

        return cycling([None], body)

    def batch_reads(side: str, *, data_key_cache: bool = True) -> Callable[[], float]:
        setup = setup_for(side, "batch", local_cache=False, data_key_cache=data_key_cache)
        return timed(lambda: manager.batch_get_state(ids[side]["batch"]), setup)

    def batch_upserts(side: str) -> Callable[[], float]:
        items = ids[side]["batch"]
        setup = setup_for(side, "batch", local_cache=True, data_key_cache=True)
        return timed(lambda: manager.batch_set_state({i: _state(0) for i in items},
                                                     state_type=side), setup)  # fmt: skip

    def batch_registrations(side: str) -> Callable[[], float]:
        def body() -> None:
            start = next(fresh) * batch
            new = {f"{side[0]}n{start + n:08d}": _state(n) for n in range(batch)}
            manager.batch_set_state(new, state_type=side)

        return timed(body)

    env.note(
        "encryption: PostgreSQL WARM, Redis HOT. Each row compares a type with 2 encrypted "
        "fields (the 'library' column) to the same type without (the 'raw baseline' "
        "column); the ratio is the cost of encryption. 'data keys not cached': the "
        "process's cache of unwrapped data keys is cleared too (a process's first read of "
        "a state, or the first read after the key cache's 60 s)."
    )
    rows: list[Row] = []

    def measure(label: str, make: Callable[[str], Callable[[], float]], units: int,
                unit: str, rounds: int) -> None:  # fmt: skip
        samples = interleave(_pairs(make), rounds=rounds)
        rows.append(compare(f"encryption: {label}, 2 encrypted fields vs none", samples,
                            "sealed", "plain", units=units, unit=unit))  # fmt: skip

    measure("get_state, local-cache hit", reads, 100, "op", single_rounds)
    measure("get_state, WARM read (local cache cleared)", warm_reads, 20, "op", single_rounds)
    measure("get_state, WARM read, data keys not cached",
            lambda s: warm_reads(s, data_key_cache=False), 20, "op", single_rounds)  # fmt: skip
    measure("update_state (history row, Redis HOT drop)", writes, 5, "op", single_rounds)
    measure("register_state (a new data key)", registrations, 5, "op", single_rounds)
    measure(f"batch_get_state of {batch:,} (local cache cleared)", batch_reads, 1,
            f"{batch} states", batch_rounds)  # fmt: skip
    measure(f"batch_get_state of {batch:,}, data keys not cached",
            lambda s: batch_reads(s, data_key_cache=False), 1, f"{batch} states",
            batch_rounds)  # fmt: skip
    measure(f"batch_set_state of {batch:,} existing states", batch_upserts, 1,
            f"{batch} states", batch_rounds)  # fmt: skip
    measure(f"batch_set_state of {batch:,} new states (new data keys)", batch_registrations,
            1, f"{batch} states", batch_rounds)  # fmt: skip
    return rows


BENCHMARKS = [
    Benchmark("encryption", "field encryption at rest: encrypted type vs plain type",
              encryption, ("redis", "postgres")),
]  # fmt: skip

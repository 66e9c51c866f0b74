"""What the fault tests' other processes run: managers on the test's private servers.

Each worker is a function run in a process of its own (``multiprocessing``, spawned,
so it shares nothing with the test but the servers). A worker gets a :class:`Servers`
and a ``multiprocessing`` queue, and puts its figures on the queue as one dict.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flask_tiered_state import StateManager
from flask_tiered_state.errors import ConcurrencyError, TierUnavailableError
from flask_tiered_state.storage.base import StateCategory
from flask_tiered_state.storage.factory import build_store
from tests.conftest import s3_url

#: multiprocessing context of every worker: a fresh interpreter, no inherited sockets.
CONTEXT = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Servers:
    """Where a worker's manager keeps its states (the test's private servers)."""

    redis_url: str | None
    database_uri: str
    key_prefix: str
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    local_dir: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def open_manager(servers: Servers, **options: Any) -> StateManager:
    """A manager over the servers, with ``options`` for :func:`build_store`."""
    store = build_store(
        hot_url=servers.redis_url,
        warm_url=servers.database_uri,
        key_prefix=servers.key_prefix,
        cold_url=s3_url(servers.s3_bucket, servers.s3_endpoint_url),
        local_dir=servers.local_dir,
        **{**servers.options, **options},
    )
    return StateManager.create(store=store)


@contextmanager
def manager_of(servers: Servers, **options: Any) -> Iterator[StateManager]:
    manager = open_manager(servers, **options)
    try:
        yield manager
    finally:
        manager.close()


def register_users(manager: StateManager, state_ids: Sequence[str]) -> None:
    manager.batch_set_state(
        {i: {"name": i, "data": {"count": 0}} for i in state_ids}, state_type="user", actor="setup"
    )


def increment(manager: StateManager, state_id: str, *, attempts: int = 50) -> int:
    """A read-modify-write: add one to ``data.count`` with compare-and-set on the version
    read, again after each conflict. Returns the version acknowledged."""
    for _ in range(attempts):
        record = manager.get_state(state_id)
        assert record is not None, state_id
        data = {**record["data"], "count": record["data"]["count"] + 1}
        try:
            new = manager.update_state(state_id, {"data": data}, expected_version=record["version"])
        except ConcurrencyError:
            time.sleep(random.uniform(0, 0.002))
            continue
        return int(new["version"])
    raise AssertionError(f"{state_id}: no update won in {attempts} attempts")


# --------------------------------------------------------------------------- workers


def rmw_worker(
    servers: Servers, state_ids: list[str], updates: int, threads: int, out: Any
) -> None:
    """``updates`` increments spread over ``threads`` threads; reports how many each state
    got (acknowledged) and how many conflicts were retried."""
    from concurrent.futures import ThreadPoolExecutor

    done: dict[str, int] = dict.fromkeys(state_ids, 0)
    with manager_of(servers) as manager:
        rng = random.Random()

        def one(_: int) -> str:
            state_id = rng.choice(state_ids)
            increment(manager, state_id)
            return state_id

        with ThreadPoolExecutor(threads) as pool:
            for state_id in pool.map(one, range(updates)):
                done[state_id] += 1
    out.put({"acknowledged": done})


def writer_worker(
    servers: Servers,
    state_ids: list[str],
    seconds: float,
    minimum: int,
    rate: float,
    out: Any,
) -> None:
    """Increments states in turn, ``rate`` updates a second, for ``seconds`` (and at
    least ``minimum`` updates); reports the last version acknowledged for each state."""
    acknowledged: dict[str, int] = {}
    count = 0
    errors: list[str] = []
    with manager_of(servers) as manager:
        started = time.monotonic()
        deadline = started + seconds
        while time.monotonic() < deadline or count < minimum:
            ahead = started + count / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            state_id = state_ids[count % len(state_ids)]
            try:
                acknowledged[state_id] = increment(manager, state_id, attempts=10)
            except (TierUnavailableError, AssertionError) as exc:  # reported: never expected
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
            count += 1
    out.put({"acknowledged": acknowledged, "updates": count, "errors": errors[:20]})


def mover_worker(
    servers: Servers, state_ids: list[str], batch: int, pause: float, stop: Any, out: Any
) -> None:
    """Demotes every state to COLD and promotes it to HOT again, ``batch`` states at a
    time in a random order with ``pause`` seconds between batches, until ``stop`` is set
    (a round moves every state)."""
    keys = [f"state:{i}" for i in state_ids]
    rounds = demoted = promoted = 0
    with manager_of(servers) as manager:
        store = manager.store
        while not stop.is_set():
            random.shuffle(keys)
            for start in range(0, len(keys), batch):
                chunk = keys[start : start + batch]
                demoted += store.batch_demote(chunk)
                promoted += store.batch_promote(chunk)
                if stop.wait(pause):
                    break
            rounds += 1
    out.put({"rounds": rounds, "demoted": demoted, "promoted": promoted})


#: Versions per state whose acknowledgement time :func:`acked_writer_worker` records.
SLOTS = 256


def reader_worker(
    servers: Servers,
    state_ids: list[str],
    acked: Any,
    stop: Any,
    out: Any,
) -> None:
    """Reads states in turn until ``stop``, comparing each read with the acknowledgements
    ``acked`` holds (per state, per version, the monotonic time the writer's call for it
    returned; 0.0 while not acknowledged). A read that returned version ``v`` although
    ``v + 1`` had been acknowledged before the read began is stale by the time since that
    acknowledgement. Reports the reads, the stale ones and the stalest."""
    reads = stale = 0
    worst = 0.0
    errors = 0
    stale_at: list[tuple[float, float]] = []
    with manager_of(servers) as manager:
        index = 0
        while not stop.is_set():
            position = index % len(state_ids)
            index += 1
            started = time.monotonic()
            try:
                record = manager.get_state(state_ids[position])
            except TierUnavailableError:
                errors += 1
                continue
            reads += 1
            if record is None or record["version"] + 1 >= SLOTS:
                continue
            newer_at = acked[position * SLOTS + record["version"] + 1]
            if 0.0 < newer_at < started:
                stale += 1
                worst = max(worst, started - newer_at)
                stale_at.append((started, started - newer_at))
            # A real process does I/O between reads, giving the GIL to its invalidation
            # thread; a loop of cache hits alone would keep that thread waiting for it.
            time.sleep(0)
    out.put(
        {"reads": reads, "stale": stale, "worst_stale_seconds": worst, "errors": errors,
         "stale_at": stale_at}
    )  # fmt: skip


def acked_writer_worker(
    servers: Servers,
    state_ids: list[str],
    transitions: int,
    acked: Any,
    progress: Any,
    out: Any,
) -> None:
    """``transitions`` increments over the states in turn, recording in ``acked`` the
    monotonic time each version was acknowledged (for :func:`reader_worker`) and the
    count in ``progress``. A call that fails is retried (the retry re-reads first, so a
    write that did happen is not repeated); reports the last version acknowledged per
    state and the failures."""
    acknowledged: dict[str, int] = {}
    failures: list[str] = []
    with manager_of(servers) as manager:
        done = 0
        while done < transitions:
            position = done % len(state_ids)
            state_id = state_ids[position]
            try:
                version = increment(manager, state_id)
            except TierUnavailableError as exc:
                failures.append(f"{type(exc).__name__}: {exc}"[:300])
                time.sleep(0.01)
                continue
            if version < SLOTS:
                acked[position * SLOTS + version] = time.monotonic()
            acknowledged[state_id] = version
            done += 1
            progress.value = done
    out.put({"acknowledged": acknowledged, "failures": failures[:50], "failed": len(failures)})


def run_workers(
    *targets: tuple[Callable[..., None], tuple[Any, ...]], timeout: float = 120
) -> list[dict[str, Any]]:
    """Start one process per ``(function, args)`` (each gets a queue as its last
    argument) and return what each put on its queue, in order."""
    queues = [CONTEXT.Queue() for _ in targets]
    processes = [
        CONTEXT.Process(target=function, args=(*args, queue), daemon=True)
        for (function, args), queue in zip(targets, queues, strict=True)
    ]
    for process in processes:
        process.start()
    results = [queue.get(timeout=timeout) for queue in queues]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0, f"{process.name} exited with {process.exitcode}"
    return results


def partitioned_batch_writer(
    servers: Servers, state_ids: list[str], ready: Any, go: Any, out: Any
) -> None:
    """:func:`partitioned_writer` with one ``batch_update_state`` of every state: reports
    ``({state_id: acknowledged version}, monotonic time of the acknowledgement)``."""
    manager = open_manager(servers)
    records = manager.batch_get_state(state_ids)
    assert records.keys() == set(state_ids)
    ready.set()
    go.wait()
    updated = manager.batch_update_state(
        {i: {"data": {"count": records[i]["data"]["count"] + 1}} for i in state_ids}
    )
    out.put(({i: r["version"] for i, r in updated.items()}, time.monotonic()))
    time.sleep(3600)


def partitioned_warm_writer(servers: Servers, key: str, ready: Any, go: Any, out: Any) -> None:
    """Opens a store, says ``ready``, waits for ``go``, writes ``key`` WARM-home (the
    test has cut it off from Redis by then: its tier-directory mark and HOT drop are
    refused), reports the monotonic time of the acknowledgement, then idles until
    killed."""
    manager = open_manager(servers)
    ready.set()
    go.wait()
    manager.store.set(key, {"writer": "warm"}, category=StateCategory.WARM)
    out.put(time.monotonic())
    time.sleep(3600)


def partitioned_writer(servers: Servers, state_id: str, ready: Any, go: Any, out: Any) -> None:
    """Reads ``state_id`` (caching it), says ``ready``, waits for ``go``, then updates it
    once and reports ``(acknowledged version, monotonic time of the acknowledgement)``;
    then idles until it is killed (the test partitions it from Redis before ``go``)."""
    manager = open_manager(servers)
    record = manager.get_state(state_id)
    assert record is not None
    ready.set()
    go.wait()
    updated = manager.update_state(
        state_id, {"data": {"count": record["data"]["count"] + 1}},
        expected_version=record["version"],
    )  # fmt: skip
    out.put((updated["version"], time.monotonic()))
    time.sleep(3600)

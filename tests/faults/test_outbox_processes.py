"""The outbox under process death and under several dispatchers (issue 12).

1. A writer process doing 1,000 transitions with asynchronous callbacks is killed with
   SIGKILL at random points and restarted until 1,000 were attempted; then a dispatcher
   process, itself killed mid-delivery and restarted, delivers until nothing is
   pending. The consumers are idempotent by ``event_id``: every committed transition's
   effect is there exactly once, none of a transition that did not commit, and each
   callback saw each state's events in commit order.
2. Four dispatcher processes share a backlog of 2,000 events on 100 states: every event
   is delivered, per-state order is kept, each attempt is made by exactly one
   dispatcher (failures are injected on the first attempt of 1 in 8 events), and all
   four did work.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_tiered_state.domain.callbacks import event_name
from flask_tiered_state.domain.model import StateTransition

from .dispatch_workers import (
    KILL_TEST_CALLBACKS,
    create_consumer_tables,
    dispatcher_worker,
    injected,
    kill,
    new_counter,
    new_event,
    register_consumers,
    start,
    transition_worker,
)
from .workers import Servers, manager_of, register_users

pytestmark = pytest.mark.slow

TRANSITIONS = 1000
WRITER_KILLS = 5


@pytest.fixture
def database(local_cold_servers: Servers) -> Iterator[sa.Engine]:
    """An engine on the test's database, with the consumers' tables."""
    create_consumer_tables(local_cold_servers.database_uri)
    engine = sa.create_engine(local_cold_servers.database_uri)
    yield engine
    engine.dispose()


def rows(engine: sa.Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(sa.text(sql), params))


def scalar(engine: sa.Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as connection:
        return connection.execute(sa.text(sql), params).scalar_one()


def wait_until(check: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.005)


def tables(servers: Servers) -> tuple[str, str]:
    with manager_of(servers) as manager:
        return manager.history.table.name, manager.outbox.table.name


# --------------------------------------------------------------------------- 1. kills


def test_killed_writer_and_dispatcher_lose_no_event_and_apply_none_twice(
    local_cold_servers: Servers, database: sa.Engine, tmp_path: Path
) -> None:
    servers = local_cold_servers
    state_ids = [f"k{n:02d}" for n in range(50)]
    with manager_of(servers) as manager:
        register_users(manager, state_ids)
    history, deliveries = tables(servers)
    started = time.monotonic()

    # The writer: killed at random points, restarted until 1,000 were attempted.
    event_log = tmp_path / "events.log"
    attempted = new_counter()
    kill_points = sorted(random.sample(range(50, TRANSITIONS - 50), WRITER_KILLS))
    writer_errors: list[str] = []
    for point in [*kill_points, None]:
        writer, out = start(transition_worker, servers, state_ids, TRANSITIONS, attempted,
                            str(event_log), 2)  # fmt: skip
        if point is None:
            writer_errors += out.get(timeout=120)["errors"]
            writer.join(timeout=30)
            assert writer.exitcode == 0
            break
        wait_until(
            lambda p=point, w=writer: attempted.value >= p or not w.is_alive(), "progress", 60
        )
        time.sleep(random.uniform(0, 0.01))
        kill(writer)
    assert attempted.value == TRANSITIONS
    assert writer_errors == []
    written = time.monotonic() - started

    committed = rows(
        database,
        f"SELECT event_id, state_id, version, transition FROM {history} WHERE version > 1",
    )
    attempted_events = set(event_log.read_text().split())
    committed_events = {r.event_id for r in committed}
    uncommitted = attempted_events - committed_events
    # Every committed transition wrote its event id to the log before its commit.
    assert committed_events <= attempted_events, (
        "a committed transition whose deliveries were not written in its transaction"
    )
    assert TRANSITIONS - 2 * WRITER_KILLS <= len(committed) <= TRANSITIONS

    expected: dict[tuple[str, str], tuple[str, int]] = {}  # (event_id, callback) -> order
    for row in committed:
        event = event_name("user", StateTransition(row.transition))
        for key, events in KILL_TEST_CALLBACKS.items():
            if event in events:
                expected[(row.event_id, key)] = (row.state_id, row.version)
    outbox = {(r.event_id, r.callback) for r in rows(database, f"SELECT event_id, callback "
                                                              f"FROM {deliveries}")}  # fmt: skip
    assert outbox == set(expected), "the outbox holds exactly the committed events' deliveries"

    # The dispatcher: killed while it delivers (a consumer's effect committed, its
    # delivery not yet marked), restarted, until nothing is pending.
    ready, go, stop = new_event(), new_event(), new_event()
    go.set()
    options = {"batch": 50, "concurrency": 2, "poll_interval": 0.05}
    mid_delivery = dispatcher_kills = 0
    for _ in range(6):
        effects_now = scalar(database, "SELECT count(*) FROM consumer_effects")
        if len(expected) - effects_now < 200 or mid_delivery >= 2:
            break
        dispatcher, _out = start(dispatcher_worker, servers, "kill", options, ready, go, stop)
        threshold = effects_now + random.randint(20, 150)
        wait_until(
            lambda t=threshold: scalar(database, "SELECT count(*) FROM consumer_effects") >= t,
            "deliveries",
            60,
        )
        time.sleep(random.uniform(0, 0.02))
        kill(dispatcher)
        dispatcher_kills += 1
        # Effects whose delivery is still pending: the kill came mid-delivery.
        mid_delivery += bool(
            scalar(
                database,
                f"SELECT count(*) FROM consumer_effects e JOIN {deliveries} d ON "
                "d.event_id = e.event_id AND d.callback = e.callback WHERE d.status = 'pending'",
            )
        )
    assert mid_delivery >= 1, f"none of {dispatcher_kills} kills came mid-delivery"
    final, out = start(dispatcher_worker, servers, "kill", {**options, "once": True}, ready, go,
                       stop)  # fmt: skip
    report = out.get(timeout=120)
    final.join(timeout=30)

    counts = dict(rows(database, f"SELECT status, count(*) FROM {deliveries} GROUP BY status"))
    assert counts == {"delivered": len(expected)}, counts
    effects = rows(
        database,
        "SELECT event_id, callback, state_id, version FROM consumer_effects ORDER BY seq",
    )
    found = Counter((e.event_id, e.callback) for e in effects)
    assert set(found) == set(expected), "an effect for every committed event, no other"
    assert max(found.values()) == 1
    assert not {e.event_id for e in effects} & uncommitted
    # Per state and callback, effects in commit (version) order; calls never go back.
    order: dict[tuple[str, str], list[int]] = defaultdict(list)
    for effect in effects:
        order[(effect.state_id, effect.callback)].append(effect.version)
    wanted: dict[tuple[str, str], list[int]] = defaultdict(list)
    for (_event_id, key), (state_id, version) in expected.items():
        wanted[(state_id, key)].append(version)
    assert order == {k: sorted(v) for k, v in wanted.items()}
    calls = rows(database, "SELECT event_id, callback, state_id, version FROM consumer_calls "
                           "ORDER BY seq")  # fmt: skip
    seen: dict[tuple[str, str], int] = {}
    for call in calls:
        assert call.version >= seen.get((call.state_id, call.callback), 0), call
        seen[(call.state_id, call.callback)] = call.version
    print(
        f"\nkilled writer: {TRANSITIONS} transitions attempted, {WRITER_KILLS} SIGKILLs, "
        f"{len(committed)} committed, {len(uncommitted)} uncommitted (no delivery, no effect) "
        f"in {written:.1f} s; dispatcher: {dispatcher_kills} SIGKILLs ({mid_delivery} "
        f"mid-delivery), {len(expected)} deliveries, {len(calls)} calls "
        f"({len(calls) - len(effects)} repeated, absorbed by event_id), last run {report}; "
        f"{time.monotonic() - started:.1f} s in all"
    )


# --------------------------------------------------------------------------- 2. four dispatchers

STATES = 100
ROUNDS = 20
DISPATCHERS = 4


def test_four_dispatchers_share_a_backlog_in_order_one_claim_per_attempt(
    local_cold_servers: Servers, database: sa.Engine
) -> None:
    servers = local_cold_servers
    state_ids = [f"b{n:03d}" for n in range(STATES)]
    started = time.monotonic()
    with manager_of(servers) as manager:
        register_consumers(manager, "backlog", None)  # for the delivery rows
        register_users(manager, state_ids)
        for number in range(ROUNDS):
            manager.batch_update_state({i: {"data": {"round": number}} for i in state_ids})
        history, deliveries = manager.history.table.name, manager.outbox.table.name
    assert scalar(database, f"SELECT count(*) FROM {deliveries}") == STATES * ROUNDS

    ready = [new_event() for _ in range(DISPATCHERS)]
    go, stop = new_event(), new_event()
    options = {"batch": 20, "concurrency": 1, "poll_interval": 0.02}
    dispatchers = [
        start(dispatcher_worker, servers, "backlog", options, ready[n], go, stop)
        for n in range(DISPATCHERS)
    ]
    for each in ready:
        assert each.wait(60), "a dispatcher did not start"
    go.set()  # all four start on the whole backlog at once
    drained = time.monotonic()
    wait_until(
        lambda: scalar(database, f"SELECT count(*) FROM {deliveries} WHERE status <> "
                                 "'delivered'") == 0,
        "the backlog delivered",
        120,
    )  # fmt: skip
    drained = time.monotonic() - drained
    stop.set()
    reports = [out.get(timeout=60) for _process, out in dispatchers]
    for process, _out in dispatchers:
        process.join(timeout=30)
        assert process.exitcode == 0

    outbox = {
        r.event_id: r
        for r in rows(
            database, f"SELECT event_id, state_id, version, status, attempts FROM {deliveries}"
        )
    }
    assert len(outbox) == STATES * ROUNDS
    assert {r.status for r in outbox.values()} == {"delivered"}
    events = {
        r.event_id: r
        for r in rows(
            database, f"SELECT event_id, state_id, version FROM {history} WHERE version > 1"
        )
    }
    assert set(outbox) == set(events)
    calls = rows(
        database,
        "SELECT event_id, state_id, version, attempt, pid FROM consumer_calls ORDER BY seq",
    )
    # Each attempt made by exactly one dispatcher, as many as the outbox counted.
    per_attempt = Counter((c.event_id, c.attempt) for c in calls)
    assert max(per_attempt.values()) == 1, "an attempt was claimed twice"
    made = Counter(c.event_id for c in calls)
    assert made == {e: r.attempts for e, r in outbox.items()}
    assert {e: n for e, n in made.items() if n != 1} == {e: 2 for e in outbox if injected(e)}, (
        "no event delivered twice unless its first attempt failed"
    )
    # Per state, deliveries in commit order: versions never go back, and the successful
    # ones (each event's last attempt) are 2, 3, ..., 21 in that order.
    last_call = {c.event_id: c.attempt for c in calls}
    per_state: dict[str, list[int]] = defaultdict(list)
    succeeded: dict[str, list[int]] = defaultdict(list)
    for call in calls:
        history_row = events[call.event_id]
        assert (call.state_id, call.version) == (history_row.state_id, history_row.version)
        per_state[call.state_id].append(call.version)
        if call.attempt == last_call[call.event_id]:
            succeeded[call.state_id].append(call.version)
    for state_id in state_ids:
        assert per_state[state_id] == sorted(per_state[state_id]), state_id
        assert succeeded[state_id] == list(range(2, ROUNDS + 2)), state_id
    # All four did work, and their reports add up.
    pids = Counter(c.pid for c in calls)
    assert len(pids) == DISPATCHERS, pids
    assert {r["pid"] for r in reports} == set(pids)
    assert sum(r["delivered"] for r in reports) == STATES * ROUNDS
    assert sum(r["failed"] for r in reports) == sum(injected(e) for e in outbox)
    assert all(r["delivered"] > 0 and r["dead"] == 0 for r in reports), reports
    print(
        f"\nfour dispatchers: {STATES * ROUNDS} events on {STATES} states "
        f"({sum(injected(e) for e in outbox)} failed once, retried), drained in "
        f"{drained:.1f} s; calls per dispatcher {sorted(pids.values())}; "
        f"{time.monotonic() - started:.1f} s in all"
    )

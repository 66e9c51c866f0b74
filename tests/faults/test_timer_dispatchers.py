"""Durable timers under three dispatcher processes, one of them killed (issue 12).

1,000 timers fall due within ten seconds -- spread out, and in two bursts of 200 at
the same instant -- on 500 states (two each), while three dispatcher processes apply
them; at each burst one dispatcher is killed with SIGKILL while it applies timers, and
started again. Each timer must be applied exactly once (one history row with the actor
``scheduler``; the dispatcher that dies between applying a timer and marking it leaves
it to the next one, which must not apply it again), never before it was due, and a
timer whose ``if_version`` no longer matches is skipped with its outcome recorded and
no history row.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from .dispatch_workers import dispatcher_worker, kill, new_event, start
from .workers import Servers, manager_of, register_users

pytestmark = pytest.mark.slow

STATES = 500
TIMERS_PER_STATE = 2
BURST = 200
STALE = 20
DISPATCHERS = 3


@pytest.fixture
def database(local_cold_servers: Servers) -> Iterator[sa.Engine]:
    engine = sa.create_engine(local_cold_servers.database_uri)
    yield engine
    engine.dispose()


def scalar(engine: sa.Engine, sql: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(sa.text(sql)).scalar_one()


def test_three_dispatchers_apply_each_timer_once_never_early(
    local_cold_servers: Servers, database: sa.Engine
) -> None:
    servers = local_cold_servers
    state_ids = [f"t{n:03d}" for n in range(STATES)]
    stale_ids = [f"v{n:02d}" for n in range(STALE)]
    started = time.monotonic()

    ready = [new_event() for _ in range(DISPATCHERS)]
    go, stop = new_event(), new_event()
    options = {"batch": 20, "concurrency": 1, "poll_interval": 0.05}
    dispatchers = [
        start(dispatcher_worker, servers, "none", options, ready[n], go, stop)
        for n in range(DISPATCHERS)
    ]
    go.set()

    with manager_of(servers) as manager:
        register_users(manager, state_ids + stale_ids)
        timers_table = manager.timers.table.name
        history_table = manager.history.table.name
        for each in ready:
            assert each.wait(60), "a dispatcher did not start"
        base = time.time() + 2.5  # the first due a little after scheduling
        bursts = (base + 2.0, base + 5.0)
        slots = [random.uniform(base, base + 7.0) for _ in range(STATES * TIMERS_PER_STATE)]
        slots[:BURST] = [bursts[0]] * BURST
        slots[BURST : 2 * BURST] = [bursts[1]] * BURST
        random.shuffle(slots)

        def schedule(number: int) -> tuple[str, float]:
            reason = f"timer {number}"
            timer = manager.schedule_transition(
                state_ids[number % STATES], "update",
                at=datetime.fromtimestamp(slots[number], timezone.utc), reason=reason,
            )  # fmt: skip
            return reason, timer["due_at"]

        with ThreadPoolExecutor(4) as pool:
            due = dict(pool.map(schedule, range(len(slots))))  # reason -> due_at
        for state_id in stale_ids:  # set for version 1, then the state moves on
            manager.schedule_transition(
                state_id, "suspend", at=datetime.fromtimestamp(base + 1.0, timezone.utc),
                reason=f"stale {state_id}", if_version=1,
            )  # fmt: skip
            manager.update_state(state_id, {"data": {"moved": True}})
    scheduled = time.time() - base + 2.5

    # At each burst, kill a dispatcher while it applies timers, and start it again.
    killed = 0
    for moment in bursts:
        time.sleep(max(0.0, moment - time.time()) + random.uniform(0.02, 0.2))
        victim = random.randrange(DISPATCHERS)
        kill(dispatchers[victim][0])
        killed += 1
        ready[victim] = new_event()
        dispatchers[victim] = start(
            dispatcher_worker, servers, "none", options, ready[victim], go, stop
        )
    deadline = time.monotonic() + 60
    while scalar(database, f"SELECT count(*) FROM {timers_table} WHERE status = 'scheduled'"):
        assert time.monotonic() < deadline, "timers still scheduled a minute after the last"
        time.sleep(0.05)
    finished = time.time()
    for each in ready:
        assert each.wait(60), "a restarted dispatcher did not start"
    stop.set()
    reports = [out.get(timeout=60) for _process, out in dispatchers]
    for process, _out in dispatchers:
        process.join(timeout=30)
        assert process.exitcode == 0

    with database.connect() as connection:
        timers = list(
            connection.execute(sa.text(f"SELECT reason, status, outcome FROM {timers_table}"))
        )
        applied = list(
            connection.execute(
                sa.text(
                    f"SELECT reason, state_id, created_at FROM {history_table} "
                    "WHERE actor = 'scheduler'"
                )
            )
        )
        versions: dict[str, int] = dict(
            connection.execute(
                sa.text(f"SELECT state_id, max(version) FROM {history_table} GROUP BY state_id")
            ).all()
        )
    statuses = Counter(t.status for t in timers)
    assert statuses == {"applied": len(due), "skipped": STALE}, statuses
    # Exactly one history row per timer, none for the stale ones.
    per_timer = Counter(row.reason for row in applied)
    assert set(per_timer) == set(due)
    twice = {reason: n for reason, n in per_timer.items() if n != 1}
    assert twice == {}, f"timers applied more than once: {twice}"
    assert all(versions[s] == 1 + TIMERS_PER_STATE for s in state_ids)
    # The stale ones: skipped, the reason recorded, nothing applied.
    for timer in timers:
        if timer.reason.startswith("stale"):
            assert timer.status == "skipped"
            assert "if_version 1 no longer matches" in timer.outcome, timer.outcome
    assert all(versions[s] == 2 for s in stale_ids)
    # None early: the transition's time (the history row) is at or after due_at; both
    # are this host's wall clock (time.time() and datetime.now()).
    late = sorted(row.created_at.timestamp() - due[row.reason] for row in applied)
    early = [x for x in late if x < 0]
    assert early == [], f"{len(early)} timers applied early, by up to {-min(early):.3f} s"
    print(
        f"\ntimers: {len(due)} scheduled in {scheduled:.1f} s, due within "
        f"{max(due.values()) - base + 2.5:.1f} s "
        f"(two bursts of {BURST}), {DISPATCHERS} dispatchers, {killed} SIGKILLs; each applied "
        f"once, {STALE} stale skipped; lateness p50 {statistics.median(late) * 1000:.0f} ms, "
        f"p99 {late[int(len(late) * 0.99)] * 1000:.0f} ms, max {late[-1] * 1000:.0f} ms; all "
        f"done {finished - max(due.values()):.1f} s after the last was due; reports "
        f"{[r['timers_applied'] for r in reports]}; {time.monotonic() - started:.1f} s in all"
    )

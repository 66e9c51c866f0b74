"""Tier moves racing writers: a move removes a copy only at the version it copied.

One process updates states with compare-and-set while another demotes all of them to
COLD and promotes them back, over and over, on real Redis, PostgreSQL and S3. Before the
fix, a demotion deleted the WARM row it had copied unconditionally: an update committed
between the copy and the delete was lost, and the state was wedged for ever (its next
update hit its own history row).
"""

from __future__ import annotations

import time

import pytest

from .workers import (
    CONTEXT,
    Servers,
    increment,
    manager_of,
    mover_worker,
    register_users,
    writer_worker,
)

pytestmark = [pytest.mark.s3, pytest.mark.slow]

STATES = 150
MIN_UPDATES = 2000


def test_moves_racing_writers_lose_no_acknowledged_update(servers: Servers) -> None:
    ids = [f"u{i}" for i in range(STATES)]
    with manager_of(servers) as manager:
        register_users(manager, ids)

    stop = CONTEXT.Event()
    writer_out, mover_out = CONTEXT.Queue(), CONTEXT.Queue()
    mover = CONTEXT.Process(target=mover_worker, args=(servers, ids, 25, 0.2, stop, mover_out))
    writer = CONTEXT.Process(
        target=writer_worker, args=(servers, ids, 15.0, MIN_UPDATES, 150.0, writer_out)
    )
    started = time.monotonic()
    mover.start()
    writer.start()
    try:
        written = writer_out.get(timeout=240)  # 2,000 updates take long on a loaded machine
    finally:
        stop.set()
    moved = mover_out.get(timeout=60)
    for process in (writer, mover):
        process.join(timeout=30)
        assert process.exitcode == 0
    elapsed = time.monotonic() - started

    assert written["errors"] == []
    assert written["updates"] >= MIN_UPDATES
    # Every state was moved down and up several times, most moves winning their race.
    assert moved["rounds"] >= 3 and moved["demoted"] >= 2 * STATES, moved
    acknowledged: dict[str, int] = written["acknowledged"]
    lost, wrong_history, wedged = [], [], []
    with manager_of(servers) as manager:
        for state_id in ids:
            record = manager.get_state(state_id)
            assert record is not None
            expected = acknowledged.get(state_id, 1)
            if record["version"] != expected or record["data"]["count"] != expected - 1:
                lost.append((state_id, expected, record["version"]))
            if manager.history.count(state_id) != record["version"]:
                wrong_history.append(state_id)
        for state_id in ids:  # every state accepts an update afterwards
            try:
                increment(manager, state_id, attempts=3)
            except Exception as exc:
                wedged.append((state_id, repr(exc)))
    print(
        f"\nmoves racing writers: {written['updates']} acknowledged updates over {STATES} "
        f"states in {elapsed:.1f} s, {moved['rounds']} rounds of moves "
        f"({moved['demoted']} demotions, {moved['promoted']} promotions); lost "
        f"{len(lost)}, history mismatches {len(wrong_history)}, wedged {len(wedged)}"
    )
    assert lost == []
    assert wrong_history == []
    assert wedged == []

"""Concurrent read-modify-write updates never lose one (compare-and-set on the version).

Four processes of four threads each (16 writers at once) add one to a counter of random
states, 2,000 increments per process, with ``expected_version`` and a retry on each
conflict. Every acknowledged increment must be in the counters, and every state's
version must equal its number of history rows.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from .workers import Servers, manager_of, register_users, rmw_worker, run_workers

pytestmark = pytest.mark.slow

STATES = 100
PROCESSES = 4
THREADS = 4
UPDATES = 2000


def test_concurrent_read_modify_write_loses_no_update(servers: Servers) -> None:
    ids = [f"c{i}" for i in range(STATES)]
    with manager_of(servers) as manager:
        register_users(manager, ids)
    started = time.monotonic()
    results = run_workers(
        *[(rmw_worker, (servers, ids, UPDATES, THREADS)) for _ in range(PROCESSES)],
        timeout=180,
    )
    elapsed = time.monotonic() - started
    acknowledged: Counter[str] = Counter()
    for result in results:
        acknowledged.update(result["acknowledged"])
    assert sum(acknowledged.values()) == PROCESSES * UPDATES
    lost: list[tuple[str, object, int]] = []
    wrong_history: list[str] = []
    with manager_of(servers) as manager:
        for state_id in ids:
            record = manager.get_state(state_id)
            assert record is not None
            if record["data"]["count"] != acknowledged[state_id]:
                lost.append((state_id, acknowledged[state_id], record["data"]["count"]))
            if record["version"] != 1 + acknowledged[state_id]:
                lost.append((state_id, "version", record["version"]))
            if manager.history.count(state_id) != record["version"]:
                wrong_history.append(state_id)
    print(
        f"\nconcurrent writers: {PROCESSES} processes x {THREADS} threads, "
        f"{PROCESSES * UPDATES} acknowledged increments over {STATES} states in "
        f"{elapsed:.1f} s; lost {len(lost)}, history mismatches {len(wrong_history)}"
    )
    assert lost == []
    assert wrong_history == []

"""A writer cut off from Redis, then killed, leaves no stale copy behind for long.

The writer's update commits in PostgreSQL, but Redis does not answer it (a black hole
between that process and Redis only), so it can neither drop the HOT copy of the old
version nor announce the change; then the process is killed. Other processes reach
Redis. Before the fix, the drop lived only in the dead process's memory: every other
process read the old version from the HOT copy until its TTL ran out (an hour), and
their updates failed. Now the writer journals the drop in PostgreSQL before it answers,
and every other process replays the journal each second.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time

import pytest

from flask_tiered_state import StateManager
from flask_tiered_state.storage.base import StateCategory

from .tcp_proxy import FaultProxy
from .workers import (
    CONTEXT,
    Servers,
    manager_of,
    partitioned_batch_writer,
    partitioned_warm_writer,
    partitioned_writer,
    register_users,
)

pytestmark = pytest.mark.slow

#: The documented bound: the journal replay interval (1 s), plus the replay's own round
#: trips and the invalidation message.
BOUND_SECONDS = 1.5


def test_a_partitioned_then_killed_writer_leaves_no_stale_copy(
    local_cold_servers: Servers, redis_proxy: FaultProxy
) -> None:
    direct = local_cold_servers
    cut_off = dataclasses.replace(direct, redis_url=f"redis://127.0.0.1:{redis_proxy.port}/0")
    with manager_of(direct) as reader:
        register_users(reader, ["p"])
        assert reader.promote_to_hot("p")  # an hour of TTL
        ready, go, out = CONTEXT.Event(), CONTEXT.Event(), CONTEXT.Queue()
        writer = CONTEXT.Process(target=partitioned_writer, args=(cut_off, "p", ready, go, out))
        writer.start()
        try:
            assert reader.get_state("p")["version"] == 1  # type: ignore[index]
            assert ready.wait(30)  # the writer has read and cached it
            redis_proxy.black_hole()  # the writer's Redis calls now hang
            go.set()
            version, acknowledged_at = out.get(timeout=30)
            assert writer.pid is not None
            os.kill(writer.pid, signal.SIGKILL)  # dies with whatever it meant to do
            writer.join(timeout=10)
            assert version == 2
            stale_reads, current_after = poll_until_current(reader, "p", version)
        finally:
            if writer.is_alive():
                writer.kill()
                writer.join(timeout=10)
        lag = current_after - acknowledged_at
        with manager_of(direct) as newcomer:  # a process started afterwards
            assert newcomer.get_state("p")["version"] == 2  # type: ignore[index]
            assert newcomer.update_state("p", {"data": {"count": 5}})["version"] == 3
        print(
            f"\npartitioned writer killed: another process read the old version {stale_reads} "
            f"times, for {lag * 1000:.0f} ms after the acknowledgement (bound "
            f"{BOUND_SECONDS * 1000:.0f} ms)"
        )
        assert lag <= BOUND_SECONDS


def test_a_partitioned_then_killed_batch_writer_leaves_no_stale_copy(
    local_cold_servers: Servers, redis_proxy: FaultProxy
) -> None:
    """The same with a batch: one transaction updates 30 states whose HOT copies other
    processes read; the writer cannot drop them (Redis does not answer it) and is
    killed. Every state is current in another process within the bound, and in a
    process started afterwards at once."""
    direct = local_cold_servers
    cut_off = dataclasses.replace(direct, redis_url=f"redis://127.0.0.1:{redis_proxy.port}/0")
    ids = [f"q{n}" for n in range(30)]
    with manager_of(direct) as reader:
        register_users(reader, ids)
        assert all(reader.promote_to_hot(i) for i in ids)  # an hour of TTL each
        ready, go, out = CONTEXT.Event(), CONTEXT.Event(), CONTEXT.Queue()
        writer = CONTEXT.Process(
            target=partitioned_batch_writer, args=(cut_off, ids, ready, go, out)
        )
        writer.start()
        try:
            assert {r["version"] for r in reader.batch_get_state(ids).values()} == {1}
            assert ready.wait(30)
            redis_proxy.black_hole()
            go.set()
            versions, acknowledged_at = out.get(timeout=30)
            assert writer.pid is not None
            os.kill(writer.pid, signal.SIGKILL)
            writer.join(timeout=10)
            assert versions == dict.fromkeys(ids, 2)
            current_after = max(poll_until_current(reader, i, 2)[1] for i in ids)
        finally:
            if writer.is_alive():
                writer.kill()
                writer.join(timeout=10)
        lag = current_after - acknowledged_at
        with manager_of(direct) as newcomer:
            assert {r["version"] for r in newcomer.batch_get_state(ids).values()} == {2}
            assert all(newcomer.history.count(i) == 2 for i in ids)
        print(f"\npartitioned batch writer killed: all {len(ids)} states current after "
              f"{lag * 1000:.0f} ms (bound {BOUND_SECONDS * 1000:.0f} ms)")  # fmt: skip
        assert lag <= BOUND_SECONDS


@pytest.mark.xfail(
    strict=True,
    reason="known bug, not fixed yet: the HOT-home write inside the replay interval reads "
    "the key unmarked and drops no lower copy; the replay marks it too late. Deleting the "
    "WARM value at replay would need to tell a HOT-home value from an older HOT copy.",
)
def test_a_mark_refused_by_a_partitioned_then_killed_writer_is_no_resurfacing_copy(
    local_cold_servers: Servers, redis_proxy: FaultProxy
) -> None:
    """A writer cut off from Redis writes a key WARM-home: its tier-directory mark is
    refused (its HOT drop too, journaled), and it is killed. At once, another process
    writes the key HOT-home -- before any journal replay could mark it. Once that HOT
    value expires, the key must be gone: the older WARM value must not resurface."""
    direct = local_cold_servers
    cut_off = dataclasses.replace(direct, redis_url=f"redis://127.0.0.1:{redis_proxy.port}/0")
    key = "state:marked-late"
    with manager_of(direct) as other:
        store = other.store
        directory = store.tier_directory
        assert directory is not None and directory.ready()
        ready, go, out = CONTEXT.Event(), CONTEXT.Event(), CONTEXT.Queue()
        writer = CONTEXT.Process(
            target=partitioned_warm_writer, args=(cut_off, key, ready, go, out)
        )
        writer.start()
        try:
            assert ready.wait(30)
            redis_proxy.black_hole()
            go.set()
            out.get(timeout=60)  # acknowledged: the value is in WARM
            assert writer.pid is not None
            os.kill(writer.pid, signal.SIGKILL)
            writer.join(timeout=10)
        finally:
            if writer.is_alive():
                writer.kill()
                writer.join(timeout=10)
        assert directory.check([key]) == set()  # the writer's mark never reached Redis
        store.set(key, {"writer": "hot"}, category=StateCategory.HOT, ttl_seconds=600)
        time.sleep(3.0)  # journal replays (each second) have run by now
        store.get_repositories().hot.delete(key)  # the HOT value's TTL ran out
        store.cache.clear()
        with manager_of(direct) as newcomer:
            assert newcomer.store.get(key) is None, newcomer.store.get(key)
        assert store.get(key) is None


def poll_until_current(manager: StateManager, state_id: str, version: int) -> tuple[int, float]:
    """Read until the state is at ``version``: (stale reads, monotonic time it was first
    current). After that no read may go back to an older version."""
    stale = 0
    deadline = time.monotonic() + 30
    while True:
        record = manager.get_state(state_id)
        assert record is not None
        if record["version"] >= version:
            current_at = time.monotonic()
            break
        stale += 1
        assert time.monotonic() < deadline, "the old version never went away"
        time.sleep(0.002)
    for _ in range(200):  # and it stays current
        assert manager.get_state(state_id)["version"] >= version  # type: ignore[index]
    return stale, current_at

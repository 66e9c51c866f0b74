"""A long-running dispatcher outlives a database outage: its passes fail while
PostgreSQL does not answer, and it delivers what was committed meanwhile once it does."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from flask_tiered_state import EventDispatcher
from flask_tiered_state.domain.model import StateTransition

from .tcp_proxy import FaultProxy
from .workers import Servers, manager_of

pytestmark = pytest.mark.slow


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"not within {timeout} s: {what}"
        time.sleep(0.02)


def test_the_dispatcher_keeps_running_through_an_outage_and_then_delivers(
    private_redis: Any, postgres_db: str, proxied_postgres_url: str, pg_proxy: FaultProxy,
    tmp_path: Any,
) -> None:  # fmt: skip
    delivered: list[tuple[str, int]] = []

    def notify(
        state_id: str, old: Any, new: dict[str, Any], transition: StateTransition, *,
        event_id: str,
    ) -> None:  # fmt: skip
        delivered.append((state_id, new["version"]))

    prefix = f"outage{time.monotonic_ns()}:"
    direct = Servers(private_redis.url, postgres_db, prefix, local_dir=str(tmp_path))
    proxied = Servers(private_redis.url, proxied_postgres_url, prefix, local_dir=str(tmp_path))
    with manager_of(direct) as writer, manager_of(proxied, drop_replay_interval=None) as worker:
        for manager in (writer, worker):
            manager.register_callback("user_updated", notify, asynchronous=True, key="notify")
        writer.register_state("u1", "user", {})
        stop = threading.Event()
        failure: list[BaseException] = []
        dispatcher = EventDispatcher(worker, poll_interval=0.05)

        def run() -> None:
            try:
                dispatcher.run(stop)
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        try:
            writer.update_state("u1", {"data": {"n": 1}})
            eventually(lambda: delivered == [("u1", 2)], "the first delivery")

            pg_proxy.refuse()
            pg_proxy.reset_all()
            writer.update_state("u1", {"data": {"n": 2}})  # committed during the outage
            writer.update_state("u1", {"data": {"n": 3}})
            time.sleep(1.0)
            assert thread.is_alive() and not failure  # still running, nothing delivered
            assert delivered == [("u1", 2)]

            pg_proxy.heal()
            eventually(lambda: len(delivered) == 3, "the deliveries after the outage")
            assert delivered == [("u1", 2), ("u1", 3), ("u1", 4)]
        finally:
            stop.set()
            thread.join(10)
            dispatcher.close()
        assert not thread.is_alive() and not failure

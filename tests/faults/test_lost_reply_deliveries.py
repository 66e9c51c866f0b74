"""A lost reply of the ONE statement that writes a change with its outbox deliveries
(PostgreSQL: the compare-and-set UPDATE, the history INSERT and one delivery INSERT per
asynchronous callback) is resolved by the history row's event id, and that answer holds
for the deliveries too: they committed with it. Each callback then gets the event once.

PostgreSQL is reached through the fault proxy (see test_lost_reply.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flask_tiered_state import StateManager
from flask_tiered_state.domain.dispatcher import EventDispatcher
from flask_tiered_state.domain.model import StateTransition
from flask_tiered_state.errors import ConcurrencyError, OutcomeUnknownError

from .tcp_proxy import FaultProxy
from .workers import Servers, open_manager

pytestmark = pytest.mark.slow

CALLBACKS = ("mail", "audit", "billing")
Seen = dict[str, list[tuple[str, int, str]]]  # callback: (state id, version, event id)


@pytest.fixture
def make(
    private_redis: Any, postgres_db: str, proxied_postgres_url: str, tmp_path: Any
) -> Iterator[Callable[..., StateManager]]:
    """Managers (each a process as far as caches go) with the asynchronous callbacks
    registered on ``user_updated``, recording into ``seen``; ``proxied=True`` reaches
    PostgreSQL through the fault proxy."""
    built: list[StateManager] = []
    prefix = f"lostd{time.monotonic_ns()}:"

    def manager(seen: Seen, *, proxied: bool = False) -> StateManager:
        servers = Servers(
            redis_url=private_redis.url,
            database_uri=proxied_postgres_url if proxied else postgres_db,
            key_prefix=prefix,
            local_dir=str(tmp_path),
        )
        built.append(open_manager(servers, drop_replay_interval=None))
        for key in CALLBACKS:
            built[-1].register_callback(
                "user_updated", recorder(seen.setdefault(key, [])), asynchronous=True, key=key
            )
        return built[-1]

    yield manager
    for each in built:
        each.close()


def recorder(into: list[tuple[str, int, str]]) -> Callable[..., None]:
    def deliver(
        state_id: str,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        transition: StateTransition,
        *,
        event_id: str,
    ) -> None:
        into.append((state_id, new["version"], event_id))

    return deliver


def deliver_all(manager: StateManager) -> int:
    with EventDispatcher(manager, poll_interval=0.01) as dispatcher:
        delivered = 0
        while (done := dispatcher.run_once().delivered) > 0:
            delivered += done
        return delivered


def events_of(manager: StateManager, state_id: str) -> dict[int, str]:
    return {row["version"]: row["event_id"] for row in manager.get_state_history(state_id)}


def test_lost_reply_of_a_one_statement_update_with_deliveries_is_resolved_as_committed(
    make: Callable[..., StateManager], pg_proxy: FaultProxy
) -> None:
    seen: Seen = {}
    writer, dispatching = make(seen, proxied=True), make(seen)
    writer.register_state("u", "user", {"data": {"n": 0}})
    writer.update_state("u", {"data": {"n": 1}}, expected_version=1)

    pg_proxy.drop_reply_to(b"lost-reply-deliveries")
    updated = writer.update_state("u", {"data": {"n": "lost-reply-deliveries"}}, expected_version=2)
    assert pg_proxy.dropped_replies == 1  # the fault happened: the reply never came
    assert updated["version"] == 3  # resolved: it committed, deliveries with it

    assert deliver_all(dispatching) == 2 * len(CALLBACKS)
    events = events_of(dispatching, "u")
    assert seen == {key: [("u", 2, events[2]), ("u", 3, events[3])] for key in CALLBACKS}
    assert dispatching.get_events("pending") == []


def test_an_unresolvable_outcome_leaves_all_of_the_change_or_none_of_it(
    make: Callable[..., StateManager], pg_proxy: FaultProxy
) -> None:
    """The reply is lost and the outcome cannot be checked: OutcomeUnknownError. Once
    the database answers, the history row and the deliveries are both there (it
    committed), each callback gets the event once, and a retry on the old version is
    refused rather than applied (and delivered) twice."""
    seen: Seen = {}
    writer, dispatching = make(seen, proxied=True), make(seen)
    writer.register_state("u", "user", {"data": {"n": 0}})
    assert writer.get_state("u") is not None  # its pooled connection, through the proxy

    pg_proxy.refuse()  # the check of the outcome would need a new connection
    pg_proxy.drop_reply_to(b"unknown-deliveries")
    with pytest.raises(OutcomeUnknownError):
        writer.update_state("u", {"data": {"n": "unknown-deliveries"}}, expected_version=1)
    pg_proxy.heal()
    assert pg_proxy.dropped_replies == 1

    with pytest.raises(ConcurrencyError):
        writer.update_state("u", {"data": {"n": "unknown-deliveries"}}, expected_version=1)
    events = events_of(dispatching, "u")
    assert sorted(events) == [1, 2]
    assert deliver_all(dispatching) == len(CALLBACKS)
    assert seen == {key: [("u", 2, events[2])] for key in CALLBACKS}

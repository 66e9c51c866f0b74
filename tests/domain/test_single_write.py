"""A change of one WARM-home record on PostgreSQL runs as ONE statement (the
compare-and-set UPDATE feeding the history INSERT and the INSERTs of its event's
deliveries) and keeps every guarantee of the store transaction it replaces: one history
row per change and one delivery per asynchronous callback, none for a failed one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from flask_tiered_state.domain.dispatcher import EventDispatcher
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateType
from flask_tiered_state.domain.writer import MAX_SINGLE_DELIVERIES
from flask_tiered_state.errors import ConcurrencyError

from .conftest import SERVERS
from .test_outbox import Delivery, recorder


@pytest.fixture(params=[SERVERS])
def backend(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@contextmanager
def statements(manager: StateManager) -> Iterator[list[tuple[str, bool]]]:
    """The SQL statements run on the WARM engine meanwhile, each with whether the driver
    connection was in autocommit (no BEGIN / COMMIT around it)."""
    engine = manager.store.warm.engine
    seen: list[tuple[str, bool]] = []

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append((statement, conn.connection.driver_connection.autocommit))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)


Seen = list[Delivery]


def test_an_update_is_one_statement_with_its_history_row(manager: StateManager) -> None:
    manager.register_state("u1", StateType.USER, {"data": {"n": 0}})
    with statements(manager) as seen:
        updated = manager.update_state("u1", {"data": {"n": 1}}, actor="ann", reason="why")
    # One statement, seen by the listener, in the driver's autocommit: no BEGIN / COMMIT.
    assert len(seen) == 1 and seen[0][0].startswith("WITH u AS (UPDATE") and seen[0][1]
    assert updated["version"] == 2
    history = manager.get_state_history("u1")
    assert [(h["version"], h["transition"], h["actor"], h["reason"]) for h in history] == [
        (1, "create", None, None),
        (2, "update", "ann", "why"),
    ]
    assert history[1]["old_record"]["data"] == {"n": 0}
    assert history[1]["new_record"] == updated
    assert history[1]["created_at"] == updated["updated_at"]
    manager.store.cache.invalidate("state:u1")
    assert manager.get_state("u1") == updated


def test_a_taken_history_version_fails_the_update_and_writes_nothing(
    manager: StateManager,
) -> None:
    created = manager.register_state("u1", StateType.USER, {"data": {"n": 0}})
    table = manager.history.table
    with manager.store.warm.engine.begin() as conn:  # a row the record does not know of
        conn.execute(
            table.insert().values(
                state_id="u1", version=2, transition="update", to_status="created",
                new_record=created, created_at=datetime.now(timezone.utc),
            )
        )  # fmt: skip
    with pytest.raises(ConcurrencyError):
        manager.update_state("u1", {"data": {"n": 1}})
    manager.store.cache.invalidate("state:u1")
    assert manager.get_state("u1") == created
    assert [h["version"] for h in manager.get_state_history("u1")] == [1, 2]
    assert manager.history.count("u1") == 2


def test_a_lost_race_is_retried_and_recorded_once(manager: StateManager) -> None:
    created = manager.register_state("u1", StateType.USER, {"data": {"n": 0}})
    # Another writer changes the record behind this process's cache (no history row).
    behind = {**created, "version": 2, "data": {"n": 5}}
    manager.store.warm.store(
        "state:u1", manager.store.encode("state:u1", behind), expected_version=1
    )
    manager.update_state("u1", {"data": {"n": 6}})
    history = manager.get_state_history("u1")
    assert [h["version"] for h in history] == [1, 3]
    assert history[1]["old_record"]["data"] == {"n": 5}
    manager.store.cache.invalidate("state:u1")
    got = manager.get_state("u1")
    assert got is not None and got["version"] == 3 and got["data"] == {"n": 6}


def test_an_archived_record_moves_home_on_update(manager: StateManager) -> None:
    manager.register_state("u1", StateType.USER, {"data": {"n": 0}})
    assert manager.store.demote_to_cold("state:u1")
    updated = manager.update_state("u1", {"data": {"n": 1}})
    assert updated["version"] == 2
    assert manager.store.warm.fetch("state:u1").metadata.version == 2
    assert [h["version"] for h in manager.get_state_history("u1")] == [1, 2]


def test_an_update_with_asynchronous_callbacks_is_one_statement_with_its_deliveries(
    manager: StateManager,
) -> None:
    seen: dict[str, Seen] = {"mail": [], "audit": [], "suspended": []}
    for key in ("mail", "audit"):
        manager.register_callback("user_updated", recorder(seen[key]), asynchronous=True, key=key)
    manager.register_callback(
        "user_suspended", recorder(seen["suspended"]), asynchronous=True, key="suspended"
    )
    manager.register_state("u1", StateType.USER, {"data": {"n": 0}})
    with statements(manager) as sql:
        updated = manager.update_state("u1", {"data": {"n": 1}})
    assert len(sql) == 1 and sql[0][0].startswith("WITH u AS (UPDATE") and sql[0][1]
    event_id = manager.get_state_history("u1")[-1]["event_id"]
    pending = manager.get_events("pending")
    assert sorted((e["callback"], e["event_id"], e["version"]) for e in pending) == [
        ("audit", event_id, 2),
        ("mail", event_id, 2),
    ]

    with EventDispatcher(manager, poll_interval=0.01) as dispatcher:
        assert dispatcher.run_once().delivered == 2
        assert dispatcher.run_once().delivered == 0
    expected = [("u1", updated["version"], "update", event_id)]
    assert seen == {"mail": expected, "audit": expected, "suspended": []}
    assert manager.get_events("pending") == []
    assert len(manager.get_events("delivered")) == 2


def test_a_lost_compare_and_set_writes_no_delivery(manager: StateManager) -> None:
    seen: Seen = []
    manager.register_callback("user_updated", recorder(seen), asynchronous=True, key="mail")
    created = manager.register_state("u1", StateType.USER, {"data": {"n": 0}})
    behind = {**created, "version": 2, "data": {"n": 5}}  # another writer, behind the cache
    manager.store.warm.store(
        "state:u1", manager.store.encode("state:u1", behind), expected_version=1
    )
    with pytest.raises(ConcurrencyError):
        manager.update_state("u1", {"data": {"n": 6}}, expected_version=1)
    assert manager.get_events() == []
    manager.update_state("u1", {"data": {"n": 6}})  # retried on the version read: 3
    event_id = manager.get_state_history("u1")[-1]["event_id"]
    with EventDispatcher(manager, poll_interval=0.01) as dispatcher:
        assert dispatcher.run_once().delivered == 1
    assert seen == [("u1", 3, "update", event_id)]


def test_more_asynchronous_callbacks_than_one_statement_takes_use_the_transaction(
    manager: StateManager,
) -> None:
    count = MAX_SINGLE_DELIVERIES + 1
    seen: list[Seen] = [[] for _ in range(count)]
    for n in range(count):
        manager.register_callback(
            "user_updated", recorder(seen[n]), asynchronous=True, key=f"cb{n}"
        )
    manager.register_state("u1", StateType.USER, {"data": {"n": 0}})
    with statements(manager) as sql:
        manager.update_state("u1", {"data": {"n": 1}})
    assert len(sql) > 1 and not any(s.startswith("WITH u AS") for s, _ in sql)
    assert not any(autocommit for _, autocommit in sql)
    event_id = manager.get_state_history("u1")[-1]["event_id"]
    with EventDispatcher(manager, poll_interval=0.01) as dispatcher:
        assert dispatcher.run_once().delivered == count
    assert seen == [[("u1", 2, "update", event_id)]] * count

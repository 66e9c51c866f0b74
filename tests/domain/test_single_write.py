"""A change of one WARM-home record on PostgreSQL runs as ONE statement (the
compare-and-set UPDATE feeding the history INSERT) and keeps every guarantee of the
store transaction it replaces: one history row per change, none for a failed one."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateType
from flask_tiered_state.errors import ConcurrencyError

from .conftest import SERVERS


@pytest.fixture(params=[SERVERS])
def backend(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


def test_an_update_is_one_statement_with_its_history_row(manager: StateManager) -> None:
    manager.register_state("u1", StateType.USER, {"data": {"n": 0}})
    engine = manager.store.warm.engine
    seen: list[str] = []
    autocommit: list[bool] = []

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)
        autocommit.append(conn.connection.driver_connection.autocommit)

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        updated = manager.update_state("u1", {"data": {"n": 1}}, actor="ann", reason="why")
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    # One statement, seen by the listener, in the driver's autocommit: no BEGIN / COMMIT.
    assert len(seen) == 1 and seen[0].startswith("WITH u AS (UPDATE") and autocommit == [True]
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

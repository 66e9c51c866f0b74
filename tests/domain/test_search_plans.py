"""Searches on PostgreSQL are planned for their values on every run: never prepared
(a prepared statement may switch to a generic plan blind to the filter's selectivity)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateType

from .conftest import SERVERS


@pytest.fixture(params=[SERVERS])
def backend(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


def test_repeated_searches_are_never_prepared_and_stay_exact(manager: StateManager) -> None:
    for i in range(5):
        status = "active" if i % 2 == 0 else "idle"
        manager.register_state(f"u{i}", StateType.USER, {"data": {"status": status}})
    manager.update_state("u2", {"data": {"status": "active", "n": 1}})  # the newest
    engine = manager.store.warm.engine
    thresholds: list[Any] = []

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "counted" in statement:  # the search statement (its count)
            thresholds.append(conn.connection.driver_connection.prepare_threshold)

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        pages = [
            manager.search_states(StateType.USER, {"data.status": "active"}, per_page=2)
            for _ in range(8)
        ]
        last = manager.search_states(StateType.USER, {"data.status": "active"}, page=2, per_page=2)
        beyond = manager.search_states(
            StateType.USER, {"data.status": "active"}, page=3, per_page=2
        )
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    # The driver's setting is never touched; psycopg never prepares a search all the same:
    # each runs in a transaction ending in ROLLBACK, where psycopg forgets its counts
    # (see tests/storage/test_sql_search.py for the prepared statements themselves).
    assert thresholds == [5] * 10
    for page in pages:
        assert [r["state_id"] for r in page.items] == ["u2", "u4"]
        assert (page.total, page.page, page.per_page, page.pages) == (3, 1, 2, 2)
    assert [r["state_id"] for r in last.items] == ["u0"] and last.total == 3
    assert beyond.items == [] and beyond.total == 3
    with engine.connect() as conn:  # and the connections keep psycopg's default
        assert conn.connection.driver_connection.prepare_threshold == 5


def test_a_first_page_walks_the_search_order_index(manager: StateManager) -> None:
    """The page's rows come from the (updated_at DESC, key) index, read from its start
    and stopped at the page's end: no sort of every match."""
    for chunk in range(5):
        manager.batch_set_state(
            {f"u{chunk}-{n:04d}": {"data": {"plan": "pro"}} for n in range(1000)},
            state_type=StateType.USER,
        )
    engine = manager.store.warm.engine
    table = manager.store.warm.table.name
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"ANALYZE {table}")
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "counted" in statement:
            statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        page = manager.search_states(StateType.USER, {"data.plan": "pro"}, per_page=20)
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    assert len(page.items) == 20 and (page.total, page.total_exact) == (1000, False)
    [(statement, parameters)] = statements
    with engine.connect() as conn:
        plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
    assert f"ix_{table}_newest" in plan, plan

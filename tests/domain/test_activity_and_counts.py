"""get_recent_activity and count_states, on SQLite + memory + filesystem and on
PostgreSQL + Redis + S3 (moto server)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from flask_tiered_state.domain.context import correlation_scope
from flask_tiered_state.domain.history import ACTIVITY_COLUMNS
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateTransition, StateType
from flask_tiered_state.errors import InvalidRequestError
from flask_tiered_state.storage.base import StateCategory

T = StateTransition


@contextmanager
def _statements(engine: sa.Engine) -> Iterator[list[str]]:
    """The SQL statements run on ``engine`` inside the block."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


# -- get_recent_activity -------------------------------------------------------------------


def test_recent_activity_lists_the_latest_changes_of_all_states(manager: StateManager) -> None:
    assert manager.get_recent_activity() == []
    with correlation_scope("req-1"):
        manager.register_state("u1", StateType.USER, {"data": {"n": 1}}, actor="ann")
        manager.register_state("t1", StateType.TRANSACTION, {"data": {}})
        manager.update_state("u1", None, T.ACTIVATE, actor="bob", reason="verified")
        manager.register_state("s1", StateType.SESSION, {"data": {}})  # HOT home: listed too
        manager.delete_state("t1", reason="test data")
    latest = manager.get_recent_activity(limit=4)
    assert [(r["state_id"], r["version"], r["transition"]) for r in latest] == [
        ("t1", 2, "delete"),
        ("s1", 1, "create"),
        ("u1", 2, "activate"),
        ("t1", 1, "create"),
    ]
    assert all(list(row) == list(ACTIVITY_COLUMNS) for row in latest)  # no records
    activate = latest[2]
    assert (activate["from_status"], activate["to_status"]) == ("created", "active")
    assert (activate["actor"], activate["reason"], activate["correlation_id"]) == (
        "bob",
        "verified",
        "req-1",
    )
    assert latest[0]["reason"] == "test data" and latest[0]["to_status"] == "deleted"
    stamps = [datetime.fromisoformat(r["created_at"]) for r in latest]
    assert all((o := s.utcoffset()) is not None and o.total_seconds() == 0 for s in stamps)
    assert stamps == sorted(stamps, reverse=True)
    # the same rows as the full history, newest first
    everything = manager.get_recent_activity()
    assert len(everything) == 5 and everything[:4] == latest
    assert everything[-1]["state_id"] == "u1" and everything[-1]["actor"] == "ann"


@pytest.mark.parametrize("limit", [0, -1, 1001, "5", True, None, 2.5])
def test_recent_activity_refuses_bad_limits(embedded_manager: StateManager, limit: Any) -> None:
    with pytest.raises(InvalidRequestError, match="limit is an integer of at least 1"):
        embedded_manager.get_recent_activity(limit)


def test_recent_activity_reads_the_primary_key_index(manager: StateManager) -> None:
    for n in range(30):
        manager.register_state(f"u{n}", StateType.USER, {})
    query = manager.history.latest_query(5)
    engine = manager.history.engine
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            # Tiny tables are cheaper to scan: forbid that, the index must serve the query.
            conn.exec_driver_sql("SET enable_seqscan = off")
            conn.exec_driver_sql("SET enable_sort = off")
            compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
            plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {compiled}"))
            assert "Index Scan Backward" in plan and "Sort" not in plan, plan
            assert f"{manager.history.table.name}_pkey" in plan, plan
        else:
            compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()
            plan = "\n".join(str(r[-1]) for r in rows)
            assert "TEMP B-TREE" not in plan, plan  # read in key order, never sorted
    assert [r["state_id"] for r in manager.get_recent_activity(3)] == ["u29", "u28", "u27"]


# -- count_states ------------------------------------------------------------------------------


def _populate(manager: StateManager) -> None:
    manager.batch_set_state(
        {f"u{n}": {"data": {"n": n}} for n in range(6)}, state_type=StateType.USER
    )
    manager.batch_update_state({"u0": None, "u1": None, "u2": None}, T.ACTIVATE)
    manager.update_state("u2", None, T.SUSPEND)
    manager.delete_state("u5")
    manager.batch_set_state({"t0": {}, "t1": {}}, state_type=StateType.TRANSACTION)
    manager.update_state("t1", None, T.EXPIRE)
    manager.register_state("s0", StateType.SESSION, {})  # HOT home: not counted
    manager.register_state("u9", StateType.USER, {})
    manager.demote_to_cold("u9")  # archived: not counted


def test_counts_by_type_and_status(manager: StateManager) -> None:
    assert manager.count_states() == {}
    _populate(manager)
    expected = {
        "user": {"active": 2, "suspended": 1, "created": 2},
        "transaction": {"created": 1, "expired": 1},
    }
    assert manager.count_states() == expected
    assert manager.count_states(by=("status", "type")) == {
        "active": {"user": 2},
        "suspended": {"user": 1},
        "created": {"user": 2, "transaction": 1},
        "expired": {"transaction": 1},
    }
    assert manager.count_states(by=("type",)) == {"user": 5, "transaction": 2}
    assert manager.count_states(by="type") == {"user": 5, "transaction": 2}
    assert manager.count_states(by=["status"]) == {
        "active": 2,
        "suspended": 1,
        "created": 3,
        "expired": 1,
    }
    with_deleted = manager.count_states(include_deleted=True)
    assert with_deleted["user"] == {**expected["user"], "deleted": 1}
    # the same figures as the searches they summarise
    for state_type, by_status in expected.items():
        for status, count in by_status.items():
            assert manager.search_states(state_type, {"status": status}).total == count
    assert sum(manager.count_states(by="type").values()) == manager.search_states().total


def test_counts_cover_warm_home_types_only(manager: StateManager) -> None:
    manager.register_state_type("invoice")
    manager.register_state_type("cart", home_tier=StateCategory.HOT)
    manager.register_state("i1", "invoice", {})
    manager.register_state("c1", "cart", {})
    assert manager.count_states() == {"invoice": {"created": 1}}


def test_counting_is_one_query(manager: StateManager) -> None:
    _populate(manager)
    with _statements(manager.store.warm.engine) as statements:
        manager.count_states()
        manager.count_states(by="status", include_deleted=True)
    queries = [s for s in statements if not s.startswith("BEGIN")]  # SQLite's explicit BEGIN
    assert len(queries) == 2, queries
    assert all("GROUP BY" in s.upper() for s in queries)


@pytest.mark.parametrize(
    "by", [(), ("name",), ("type", "type"), ("type", "status", "type"), 5, None, {"type": 1}]
)
def test_counts_refuse_other_fields(embedded_manager: StateManager, by: Any) -> None:
    with pytest.raises(InvalidRequestError, match="count_states groups by 'type', 'status'"):
        embedded_manager.count_states(by=by)


def test_counts_refuse_a_non_bool_include_deleted(embedded_manager: StateManager) -> None:
    with pytest.raises(InvalidRequestError, match="include_deleted must be True or False"):
        embedded_manager.count_states(include_deleted="yes")  # type: ignore[arg-type]

"""The history queries a restore and a checkpoint make per chunk of states."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from flask_tiered_state.domain.history import define_history_table, newest_rows


def _rows(state_id: str, versions: range) -> list[dict[str, Any]]:
    now = datetime.now(timezone.utc)
    return [
        {"state_id": state_id, "version": v, "transition": "update", "to_status": "active",
         "new_record": {"state_id": state_id, "version": v}, "created_at": now}
        for v in versions
    ]  # fmt: skip


def _table(engine: sa.Engine) -> sa.Table:
    table = define_history_table(sa.MetaData(), "history_queries")
    table.create(engine)
    return table


def test_newest_rows_finds_each_states_newest_row(sql_engine: sa.Engine) -> None:
    engine = sql_engine
    table = _table(engine)
    rng = random.Random(7)
    newest = {f"s{n}": rng.randint(1, 6) for n in range(300)}
    rows = [r for state_id, top in newest.items() for r in _rows(state_id, range(1, top + 1))]
    rng.shuffle(rows)
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    wanted = [*rng.sample(sorted(newest), 120), "never-written"]
    with engine.connect() as conn:
        found = newest_rows(conn, table, wanted)
        versions = newest_rows(conn, table, wanted, records=False)
        assert newest_rows(conn, table, []) == []
    expected = {s: newest[s] for s in wanted if s in newest}
    assert {s: v for s, v, _ in found} == expected and len(found) == len(expected)
    assert all(record == {"state_id": s, "version": v} for s, v, record in found)
    assert dict(versions) == expected and len(versions) == len(expected)


@pytest.mark.postgres
def test_newest_rows_probe_the_index_when_statistics_are_stale(postgres_engine: Any) -> None:
    """A restore asks for 1,000 states at a time; its statement must not read the whole
    table. Analyzed while one state had all the rows, the planner took a GROUP BY over
    ``state_id = ANY(...)`` for a sequential scan of every row, per chunk (a restore of
    100,000 states spent most of its database time there)."""
    table = _table(postgres_engine)
    with postgres_engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {table.name} SET (autovacuum_enabled = false)")
        conn.execute(table.insert(), _rows("busy", range(1, 3001)))
        conn.exec_driver_sql(f"ANALYZE {table.name}")
        conn.execute(
            table.insert(), [r for n in range(20_000) for r in _rows(f"s{n}", range(1, 2))]
        )
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        statements.append((statement, parameters))

    wanted = [f"s{n}" for n in range(5_000, 6_000)]
    sa.event.listen(postgres_engine, "before_cursor_execute", capture)
    try:
        with postgres_engine.connect() as conn:
            found = newest_rows(conn, table, wanted)
    finally:
        sa.event.remove(postgres_engine, "before_cursor_execute", capture)
    assert sorted(s for s, _, _ in found) == sorted(wanted)
    [(statement, parameters)] = statements
    with postgres_engine.connect() as conn:
        plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
    assert "Seq Scan" not in plan, plan
    assert "Index" in plan, plan

"""SQLStateRepository.store_with_row: a compare-and-set write and the caller's rows (one
or several, in one or several tables) in ONE statement (PostgreSQL): all or none."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from flask_tiered_state.errors import InvalidRequestError
from flask_tiered_state.storage.sql import SQLStateRepository

pytestmark = pytest.mark.postgres


def doc(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def own_table(repo: SQLStateRepository) -> sa.Table:
    table = sa.Table(
        "own_rows",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(8), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("record", postgresql.JSONB, nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Index("uq_own_rows", "key", "version", unique=True),
    )
    table.create(repo.engine)
    return table


def extras_table(repo: SQLStateRepository) -> sa.Table:
    """A second table, as the outbox's deliveries are to the history: (key, n) unique."""
    table = sa.Table(
        "own_extras",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(8), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("due", sa.Float, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Index("uq_own_extras", "key", "n", unique=True),
    )
    table.create(repo.engine)
    return table


def extra(key: str, n: int | None, note: str | None = None) -> dict[str, Any]:
    return {"key": key, "n": n, "due": 1_700_000_000.25 + (n or 0), "note": note}


def extras_of(repo: SQLStateRepository, table: sa.Table) -> list[tuple[Any, ...]]:
    with repo.engine.connect() as conn:
        # by n: the statement's inserts may run (and take ids) in any order
        stmt = sa.select(table.c.key, table.c.n, table.c.due, table.c.note)
        return [tuple(r) for r in conn.execute(stmt.order_by(table.c.n))]


def row(key: str, version: int, record: Any = None) -> dict[str, Any]:
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    return {"key": key, "version": version, "record": doc(record), "at": at}


def rows_of(repo: SQLStateRepository, table: sa.Table) -> list[tuple[Any, ...]]:
    with repo.engine.connect() as conn:
        stmt = sa.select(table.c.key, table.c.version, table.c.record, table.c.at)
        return [tuple(r) for r in conn.execute(stmt.order_by(table.c.id))]


@pytest.fixture
def repo(postgres_engine: sa.Engine) -> SQLStateRepository:
    return SQLStateRepository(postgres_engine)


def test_writes_the_value_and_the_row_together(repo: SQLStateRepository) -> None:
    table = own_table(repo)
    repo.store("k:1", doc({"n": 1}))
    metadata = repo.store_with_row(
        "k:1", doc({"n": 2}), expected_version=1, rows=[(table, row("k1", 2, {"n": 2}))]
    )
    assert metadata is not None and metadata.version == 2
    got = repo.fetch("k:1")
    assert got is not None and got.value == doc({"n": 2}) and got.metadata.version == 2
    assert got.metadata.checksum == metadata.checksum
    assert rows_of(repo, table) == [("k1", 2, {"n": 2}, row("k1", 2)["at"])]


def test_a_lost_compare_and_set_writes_nothing(repo: SQLStateRepository) -> None:
    table = own_table(repo)
    repo.store("k:1", doc(1))
    for key, expected in (("k:1", 2), ("k:absent", 1)):
        assert (
            repo.store_with_row(
                key, doc(9), expected_version=expected, rows=[(table, row(key[:8], 9))]
            )
            is None
        )
    got = repo.fetch("k:1")
    assert got is not None and got.value == doc(1) and got.metadata.version == 1
    assert repo.fetch("k:absent") is None
    assert rows_of(repo, table) == []


def test_expired_value_is_not_written(postgres_engine: sa.Engine) -> None:
    now = [1_000_000.0]
    repo = SQLStateRepository(postgres_engine, clock=lambda: now[0])
    table = own_table(repo)
    repo.store("k:1", doc(1), ttl_seconds=10)
    now[0] += 11
    assert (
        repo.store_with_row("k:1", doc(2), expected_version=1, rows=[(table, row("k", 2))]) is None
    )
    assert rows_of(repo, table) == []


def test_a_refused_row_leaves_the_value_unchanged(repo: SQLStateRepository) -> None:
    table = own_table(repo)
    repo.store("k:1", doc(1))
    assert repo.store_with_row("k:1", doc(2), expected_version=1, rows=[(table, row("k", 2))])
    with pytest.raises(sa.exc.IntegrityError):  # the (key, version) of the row is taken
        repo.store_with_row("k:1", doc(3), expected_version=2, rows=[(table, row("k", 2))])
    # A value too long for the row's VARCHAR(8) is refused, never truncated.
    with pytest.raises(InvalidRequestError, match="too long"):
        repo.store_with_row("k:1", doc(3), expected_version=2, rows=[(table, row("k" * 9, 3))])
    got = repo.fetch("k:1")
    assert got is not None and got.value == doc(2) and got.metadata.version == 2
    assert [r[:2] for r in rows_of(repo, table)] == [("k", 2)]
    # The pooled connection is usable again.
    assert repo.store_with_row("k:1", doc(3), expected_version=2, rows=[(table, row("k", 3))])


def test_racing_writers_have_one_winner_and_one_row(repo: SQLStateRepository) -> None:
    table = own_table(repo)
    repo.store("k:1", doc(0))
    barrier = threading.Barrier(4)
    results: list[Any] = []

    def write(n: int) -> None:
        barrier.wait()
        results.append(
            repo.store_with_row("k:1", doc(n), expected_version=1, rows=[(table, row(f"w{n}", 2))])
        )

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(results) == 4 and len(winners) == 1 and winners[0].version == 2
    written = rows_of(repo, table)
    got = repo.fetch("k:1")
    assert len(written) == 1 and got is not None and got.value == doc(int(written[0][0][1:]))


def test_writes_several_rows_of_several_tables_with_the_value(repo: SQLStateRepository) -> None:
    table, extras = own_table(repo), extras_table(repo)
    repo.store("k:1", doc(1))
    written = [extra("k", 1, "first"), extra("k", 2), extra("k", 3, "third")]
    metadata = repo.store_with_row(
        "k:1",
        doc(2),
        expected_version=1,
        rows=[(table, row("k", 2, {"n": 2})), *((extras, e) for e in written)],
    )
    assert metadata is not None and metadata.version == 2
    got = repo.fetch("k:1")
    assert got is not None and got.value == doc(2) and got.metadata.version == 2
    assert rows_of(repo, table) == [("k", 2, {"n": 2}, row("k", 2)["at"])]
    assert extras_of(repo, extras) == [tuple(e.values()) for e in written]
    # Another shape (one extra row, then none) is another statement; each is right.
    assert repo.store_with_row(
        "k:1", doc(3), expected_version=2, rows=[(table, row("k", 3)), (extras, extra("k", 4))]
    )
    assert repo.store_with_row("k:1", doc(4), expected_version=3, rows=[(table, row("k", 4))])
    assert [r[1] for r in rows_of(repo, table)] == [2, 3, 4]
    assert [r[1] for r in extras_of(repo, extras)] == [1, 2, 3, 4]


def test_a_lost_compare_and_set_writes_none_of_the_rows(repo: SQLStateRepository) -> None:
    table, extras = own_table(repo), extras_table(repo)
    repo.store("k:1", doc(1))
    for key, expected in (("k:1", 2), ("k:absent", 1)):
        rows = [(table, row("k", 9)), (extras, extra("k", 1)), (extras, extra("k", 2))]
        assert repo.store_with_row(key, doc(9), expected_version=expected, rows=rows) is None
    got = repo.fetch("k:1")
    assert got is not None and got.value == doc(1) and got.metadata.version == 1
    assert rows_of(repo, table) == [] and extras_of(repo, extras) == []


@pytest.mark.parametrize(
    "refused",
    [
        pytest.param(extra("k", None), id="null-in-a-not-null-column"),
        pytest.param(extra("k", 1), id="duplicate-of-an-earlier-row-of-the-statement"),
        pytest.param(extra("k", 0), id="duplicate-of-a-committed-row"),
    ],
)
def test_one_refused_extra_row_writes_nothing(
    repo: SQLStateRepository, refused: dict[str, Any]
) -> None:
    table, extras = own_table(repo), extras_table(repo)
    repo.store("k:1", doc(1))
    with repo.engine.begin() as conn:
        conn.execute(extras.insert().values(extra("k", 0, "before")))
    rows = [(table, row("k", 2)), (extras, extra("k", 1)), (extras, refused)]
    with pytest.raises(sa.exc.IntegrityError):
        repo.store_with_row("k:1", doc(2), expected_version=1, rows=rows)
    got = repo.fetch("k:1")
    assert got is not None and got.value == doc(1) and got.metadata.version == 1
    assert rows_of(repo, table) == []
    assert extras_of(repo, extras) == [("k", 0, extra("k", 0)["due"], "before")]
    # The pooled connection is usable again, and the same change without the bad row commits.
    assert repo.store_with_row("k:1", doc(2), expected_version=1, rows=rows[:2])
    assert [r[:2] for r in rows_of(repo, table)] == [("k", 2)]
    assert [r[:2] for r in extras_of(repo, extras)] == [("k", 0), ("k", 1)]


def test_sqlite_declines(tmp_path: Path) -> None:
    repo = SQLStateRepository(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        table = sa.Table("own", sa.MetaData(), sa.Column("key", sa.String, primary_key=True))
        repo.store("k:1", doc(1))
        assert repo.store_with_row("k:1", doc(2), expected_version=1, rows=[(table, {})]) is None
        got = repo.fetch("k:1")
        assert got is not None and got.metadata.version == 1
    finally:
        repo.close()

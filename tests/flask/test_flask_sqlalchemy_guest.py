"""The extension on an app's Flask-SQLAlchemy ``db`` (``TieredState(app, db=db)``), on
PostgreSQL and SQLite: every statement it sends reaches the engine's listeners, so
``SQLALCHEMY_RECORD_QUERIES`` (and debug toolbars, tracing) see them, and the app's
pooled connections keep their driver settings.

What the driver really receives is counted below SQLAlchemy: the app's engine opens
its connections with a counting cursor (psycopg's ``cursor_factory``, sqlite3's
``factory``), so a statement sent past SQLAlchemy would show up there and not in the
listener. The one statement allowed to do so is PostgreSQL's ``COPY .. FROM STDIN`` of
batch writes, which SQLAlchemy has no API for.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.record_queries import get_recorded_queries

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import TieredState, current_state_manager
from tests.storage.test_sql_guest import assert_restored, connection_settings, listener_counts

from .conftest import AppFactory

POOL_SIZE = 3


@dataclass
class Sent:
    """What the driver was asked to run, per thread, while recording."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statements: list[tuple[int, str]] | None = None

    def add(self, query: Any) -> None:
        with self.lock:
            if self.statements is not None:
                self.statements.append((threading.get_ident(), str(query)))

    def start(self) -> None:
        with self.lock:
            self.statements = []

    def stop(self) -> list[tuple[int, str]]:
        with self.lock:
            taken, self.statements = self.statements or [], None
        return taken


SENT = Sent()


class CountingSQLiteCursor(sqlite3.Cursor):
    def execute(self, sql: str, *args: Any) -> Any:
        SENT.add(sql)
        return super().execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        SENT.add(sql)
        return super().executemany(sql, *args)

    def executescript(self, script: str) -> Any:
        SENT.add(script)
        return super().executescript(script)


class CountingSQLiteConnection(sqlite3.Connection):
    def cursor(self, factory: Any = CountingSQLiteCursor) -> Any:
        return super().cursor(factory)


def counting_psycopg_cursor() -> type[Any]:
    import psycopg

    class CountingCursor(psycopg.Cursor[Any]):
        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            SENT.add(query)
            return super().execute(query, *args, **kwargs)

        def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            SENT.add(query)
            return super().executemany(query, *args, **kwargs)

        def copy(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
            SENT.add(statement)
            return super().copy(statement, *args, **kwargs)

    return CountingCursor


@dataclass
class Guest:
    app: Flask
    db: SQLAlchemy
    manager: StateManager
    backend: str
    #: The listeners of the app's engine, its pool and dialect before the manager existed.
    listeners: dict[str, int]


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"])
def guest(request: pytest.FixtureRequest, make_app: AppFactory, tmp_path: Path) -> Iterator[Guest]:
    """An app whose ``db`` records its queries and counts what its driver runs; the
    extension uses that ``db``. Inside the app context."""
    connect_args: dict[str, Any]
    if request.param == "postgresql":
        request.getfixturevalue("postgres_engine")  # drops the test's tables afterwards
        uri = str(request.getfixturevalue("postgres_url"))
        connect_args = {"cursor_factory": counting_psycopg_cursor()}
    else:
        uri = f"sqlite:///{tmp_path / 'app.sqlite3'}"
        connect_args = {"factory": CountingSQLiteConnection}
    db = SQLAlchemy()
    app = make_app(
        extension=TieredState(db=db),
        SQLALCHEMY_DATABASE_URI=uri,
        SQLALCHEMY_RECORD_QUERIES=True,
        SQLALCHEMY_ENGINE_OPTIONS={
            "connect_args": connect_args,
            "pool_size": POOL_SIZE,
            "max_overflow": 0,
        },
    )
    db.init_app(app)
    with app.app_context():
        listeners = listener_counts(db.engine)
        manager = current_state_manager._get_current_object()  # type: ignore[attr-defined]
        assert manager.store.warm.engine is db.engine
        db.create_all()  # the app owns the schema
        yield Guest(app, db, manager, request.param, listeners)
        SENT.stop()
    with app.app_context():
        db.engine.dispose()


def pooled_settings(engine: sa.Engine) -> list[dict[str, Any]]:
    """The driver settings of every connection of the pool (all checked out at once)."""
    connections = [engine.connect() for _ in range(POOL_SIZE)]
    try:
        return [connection_settings(connection) for connection in connections]
    finally:
        for connection in connections:
            connection.close()


def run_the_library(manager: StateManager) -> None:
    """Registrations, updates, uncached reads, searches, counts, history and batches."""
    store = manager.store
    manager.register_state("u1", "user", {"data": {"plan": "free", "password": "x"}})
    manager.register_state("u2", "user", {"data": {"plan": "free"}})
    manager.update_state("u1", {"data": {"plan": "gold"}}, merge=True)
    manager.update_state("u1", None, "activate")
    store.cache.clear()  # reads reach SQL
    assert manager.get_state("u1") is not None and manager.get_state("nobody") is None
    assert [r["state_id"] for r in manager.search_states("user", {"data.plan": "gold"})] == ["u1"]
    manager.count_states()
    created = manager.batch_set_state(
        {f"b{i}": {"data": {"plan": "free", "n": i}} for i in range(5)}, state_type="user"
    )
    assert len(created) == 5
    manager.batch_update_state({"b0": {"data": {"n": 10}}, "b1": None}, "activate", merge=True)
    store.cache.clear()
    assert len(manager.batch_get_state(["u1", "u2", "b0", "b4", "nobody"])) == 4
    assert len(manager.get_state_history("u1")) == 3
    manager.delete_state("u2")
    store.cache.clear()
    assert manager.get_state("u2") is None
    # The store's own batches (COPY + merge on PostgreSQL), reads and deletes.
    assert len(store.batch_set({f"plain:{i}": {"n": i} for i in range(4)})) == 4
    store.cache.clear()
    assert store.batch_get(["plain:0", "plain:3"]) == {"plain:0": {"n": 0}, "plain:3": {"n": 3}}
    assert store.get("plain:1") == {"n": 1}
    assert store.batch_delete(["plain:0", "plain:1"]) == 2


def test_every_statement_reaches_the_apps_listeners_and_query_recording(guest: Guest) -> None:
    engine = guest.db.engine
    main = threading.get_ident()
    seen: list[tuple[int, str]] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append((threading.get_ident(), statement))

    sa.event.listen(engine, "before_cursor_execute", listener)
    recorded_before = len(get_recorded_queries())
    SENT.start()
    try:
        run_the_library(guest.manager)
    finally:
        sent = SENT.stop()
        sa.event.remove(engine, "before_cursor_execute", listener)

    unseen = Counter(statement for _, statement in sent) - Counter(s for _, s in seen)
    copies = [s for s in unseen.elements() if s.startswith("COPY ")]
    assert list(unseen.elements()) == copies, "sent to the driver past SQLAlchemy"
    assert bool(copies) is (guest.backend == "postgresql")  # the documented exception
    assert len(seen) > 20
    extra = Counter(s for _, s in seen) - Counter(statement for _, statement in sent)
    assert not extra  # the listener saw nothing the driver did not run
    recorded = [q.statement or "" for q in get_recorded_queries()[recorded_before:]]
    assert recorded == [s for thread, s in seen if thread == main]
    assert any(
        guest.manager.store.warm.table.name in s and s.startswith("SELECT") for s in recorded
    )


def test_the_apps_pooled_connections_keep_their_driver_settings(guest: Guest) -> None:
    engine = guest.db.engine
    before = pooled_settings(engine)
    assert all(b == before[0] for b in before)
    during: list[Any] = []
    postgresql = guest.backend == "postgresql"

    def look(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        driver = conn.connection.driver_connection
        # PostgreSQL: single statements run with SQLAlchemy's AUTOCOMMIT isolation,
        # reset when the connection returns to the pool (checked below).
        during.append(driver.prepare_threshold if postgresql else driver.isolation_level)

    sa.event.listen(engine, "before_cursor_execute", look)
    SENT.start()
    try:
        run_the_library(guest.manager)
    finally:
        sent = SENT.stop()
        sa.event.remove(engine, "before_cursor_execute", look)
    key = "prepare_threshold" if postgresql else "isolation_level"
    assert set(during) == {before[0][key]}
    # ... looked at for every statement the driver ran (COPY excepted, see above)
    assert len(during) == len([s for _, s in sent if not s.startswith("COPY ")]) > 20
    for after in pooled_settings(engine):
        assert_restored(engine, before[0], after)
    assert listener_counts(engine) == guest.listeners  # none added to the app's engine

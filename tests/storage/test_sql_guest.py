"""The WARM repository as a guest on SQLAlchemy engines: what listeners and logs see,
and what an application's engine is left with.

- Every statement runs through SQLAlchemy where anything observes it: a
  ``before_cursor_execute`` listener sees each one (on an engine the repository built,
  from the moment the listener is added; on an application's engine, always).
- An engine the repository builds hides bound values in errors and logs.
- An application's engine gets no listener, and its pooled connections keep their
  driver settings: SQLAlchemy's AUTOCOMMIT isolation (PostgreSQL) is reset when the
  connection returns to the pool; nothing else is changed.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_tiered_state.errors import InvalidRequestError
from flask_tiered_state.storage.base import DocumentQuery, WriteRequest
from flask_tiered_state.storage.sql import SQLStateRepository
from tests.storage.test_sql_repository import PG, _url, doc

SECRET = "hunter2-s3cr3t-pa55word"
#: Refused by both databases without the server repeating the value: PostgreSQL text
#: cannot hold NUL, and SQLite's CHECK (json_valid) refuses a raw control character.
BAD_VALUE = '{"password": "' + SECRET + '\x00"}'

#: The events of an engine, its pool and its dialect (what a guest must not add to).
ENGINE_EVENTS = (
    "before_cursor_execute", "after_cursor_execute", "before_execute", "after_execute",
    "begin", "commit", "rollback", "savepoint", "engine_connect", "engine_disposed",
    "set_connection_execution_options", "set_engine_execution_options",
)  # fmt: skip
POOL_EVENTS = (
    "connect", "first_connect", "checkout", "checkin", "reset", "invalidate",
    "soft_invalidate", "close", "detach", "close_detached",
)  # fmt: skip
DIALECT_EVENTS = ("do_connect", "do_execute", "do_executemany", "handle_error")


@pytest.fixture(params=[PG, "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(request, request.param, tmp_path)


@pytest.fixture
def own(url: str) -> Iterator[SQLStateRepository]:
    """A repository on an engine it builds from the URL."""
    repo = SQLStateRepository(url)
    yield repo
    repo.close()


@pytest.fixture
def app_engine(url: str) -> Iterator[sa.Engine]:
    """An application's engine: one pooled connection, so every call reuses it."""
    engine = sa.create_engine(url, pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


class Statements:
    """A ``before_cursor_execute`` listener recording each statement's text."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.seen.append(statement)

    def take(self) -> list[str]:
        seen, self.seen = self.seen, []
        return seen


def _exercise(repo: SQLStateRepository) -> list[tuple[str, Callable[[], object]]]:
    """Every kind of call the repository makes, by name."""
    return [
        ("store", lambda: repo.store("k", doc(1))),
        ("fetch", lambda: repo.fetch("k")),
        ("fetch_many", lambda: repo.fetch_many(["k", "j"])),
        ("store cas", lambda: repo.store("k", doc(2), expected_version=1)),
        ("keys", lambda: list(repo.keys("k*"))),
        ("stats", repo.stats),
        ("delete_many", lambda: repo.delete_many(["j"])),
        ("delete", lambda: repo.delete("k")),
        ("store_many", lambda: repo.store_many([WriteRequest(f"b:{i}", doc(i)) for i in range(3)])),
        ("search", lambda: repo.search_documents(
            DocumentQuery("b:"), newest_by="x", offset=0, limit=2)),
        ("unit_of_work", lambda: _unit_of_work(repo)),
        ("ping", repo.ping),
    ]  # fmt: skip


def _unit_of_work(repo: SQLStateRepository) -> None:
    with repo.unit_of_work() as work:
        work.store("u", doc(1))
        work.fetch("u")


def _single(repo: SQLStateRepository) -> dict[str, list[str]]:
    """The statement texts of the single-statement calls, as the listener must see them."""
    sql = repo._sql
    return {
        "store": [sql.upsert[False].sql],
        "fetch": [sql.fetch.sql],
        "fetch_many": [sql.fetch_many.sql],
        "store cas": [sql.update_expected[False].sql],
        "keys": [sql.keys_page.sql],
        "stats": [sql.stats.sql],
        "delete_many": [sql.delete_many.sql],
        "delete": [sql.delete.sql],
        "ping": [sql.ping.sql],
    }


def _check_every_call_is_seen(repo: SQLStateRepository, listener: Statements) -> None:
    single = _single(repo)
    for name, call in _exercise(repo):
        listener.take()
        call()
        seen = listener.take()
        if name in single:
            assert seen == single[name], name
        else:
            assert seen, f"{name}: no statement reached the listener"


# --------------------------------------------------------------------------- own engines


def test_an_own_engine_hides_bound_values_in_errors_and_logs(
    own: SQLStateRepository, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")  # SQL logging on
    failures: list[BaseException] = []
    with pytest.raises(InvalidRequestError) as single:
        own.store("k", BAD_VALUE)  # logged: the single statement runs through SQLAlchemy
    failures.append(single.value)
    with pytest.raises(InvalidRequestError) as in_work, own.unit_of_work() as work:
        work.store("k", BAD_VALUE)
    failures.append(in_work.value)
    with pytest.raises(InvalidRequestError) as batch:
        own.store_many([WriteRequest("k", BAD_VALUE)])
    failures.append(batch.value)
    own.store("ok", doc({"password": SECRET}))  # a statement that succeeds is logged too
    for failure in failures:
        text = "".join(traceback.format_exception(failure))
        assert "refused the write" in text
        assert SECRET not in text, text
        logging.getLogger("tests").error("failed", exc_info=failure)
    chained = [str(f.__cause__) for f in failures if isinstance(f.__cause__, sa.exc.StatementError)]
    assert chained and all("hide_parameters=True" in c for c in chained), chained
    assert "hide_parameters=True" in caplog.text
    assert SECRET not in caplog.text
    assert own.engine.hide_parameters is True


def test_listeners_of_an_own_engine_see_every_statement(own: SQLStateRepository) -> None:
    own.fetch("k")  # unobserved: the driver's cursor, as fast as before
    listener = Statements()
    sa.event.listen(own.engine, "before_cursor_execute", listener)  # after it was built
    _check_every_call_is_seen(own, listener)
    assert own._db.observed()
    sa.event.remove(own.engine, "before_cursor_execute", listener)
    assert not own._db.observed()


def test_a_listener_on_every_engine_and_sql_logging_see_an_own_engine(
    own: SQLStateRepository, caplog: pytest.LogCaptureFixture
) -> None:
    listener = Statements()
    sa.event.listen(sa.Engine, "before_cursor_execute", listener)
    try:
        own.fetch("k")
        own.store("k", doc(1))
        assert listener.take() == [own._sql.fetch.sql, own._sql.upsert[False].sql]
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", listener)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    own.fetch("k")
    own.delete("k")
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("sqlalchemy.engine")]
    assert own._sql.fetch.sql in logged and own._sql.delete.sql in logged


# --------------------------------------------------------------------------- an app's engine


def listener_counts(engine: sa.Engine) -> dict[str, int]:
    counts = {}
    for target, names in (
        (engine.dispatch, ENGINE_EVENTS),
        (engine.pool.dispatch, POOL_EVENTS),
        (engine.dialect.dispatch, DIALECT_EVENTS),
    ):
        for name in names:
            counts[name] = len(list(getattr(target, name)))
    return counts


def driver_settings(engine: sa.Engine) -> dict[str, Any]:
    """The settings of the driver connection of ``engine``'s one pooled connection."""
    with engine.connect() as connection:
        return connection_settings(connection)


def connection_settings(connection: sa.Connection) -> dict[str, Any]:
    """The settings of a pooled connection's driver connection."""
    driver: Any = connection.connection.driver_connection
    if connection.dialect.name == "postgresql":
        return {
            "autocommit": driver.autocommit,
            "isolation_level": driver.isolation_level,
            "prepare_threshold": driver.prepare_threshold,
            "read_only": driver.read_only,
            "effective isolation": connection.exec_driver_sql(
                "SHOW transaction_isolation"
            ).scalar_one(),
        }
    return {
        "isolation_level": driver.isolation_level,
        "in_transaction": driver.in_transaction,
        "read_uncommitted": connection.exec_driver_sql("PRAGMA read_uncommitted").scalar(),
    }


def autocommit(driver: Any) -> bool:
    """psycopg's autocommit flag, read afresh each time."""
    return bool(driver.autocommit)


def assert_restored(engine: sa.Engine, before: dict[str, Any], after: dict[str, Any]) -> None:
    """``after`` is ``before``; on PostgreSQL SQLAlchemy's reset of the AUTOCOMMIT
    isolation may spell the pool's isolation level explicitly where the fresh connection
    left it to the server (psycopg's ``None``): the same level, as the server confirms."""
    if engine.dialect.name == "postgresql" and before["isolation_level"] is None:
        import psycopg

        default = engine.dialect.default_isolation_level
        assert default is not None
        explicit = psycopg.IsolationLevel[default.replace(" ", "_")]
        assert after["isolation_level"] in (None, explicit)
        assert after["effective isolation"] == before["effective isolation"]
        before, after = dict(before), dict(after)
        before.pop("isolation_level")
        after.pop("isolation_level")
    assert after == before


def test_an_app_engine_gets_no_listener_and_keeps_its_driver_settings(
    app_engine: sa.Engine,
) -> None:
    before = driver_settings(app_engine)
    counts = listener_counts(app_engine)
    repo = SQLStateRepository(app_engine)
    during: list[dict[str, Any]] = []
    pg = app_engine.dialect.name == "postgresql"

    def look(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        driver = conn.connection.driver_connection
        if pg:  # autocommit may be on: SQLAlchemy's AUTOCOMMIT isolation, reset at checkin
            during.append({"prepare_threshold": driver.prepare_threshold})
        else:
            during.append({"isolation_level": driver.isolation_level})

    sa.event.listen(app_engine, "before_cursor_execute", look)
    listener = Statements()
    sa.event.listen(app_engine, "before_cursor_execute", listener)
    mine = listener_counts(app_engine)
    _check_every_call_is_seen(repo, listener)
    repo.close()
    assert listener_counts(app_engine) == mine
    sa.event.remove(app_engine, "before_cursor_execute", listener)
    sa.event.remove(app_engine, "before_cursor_execute", look)
    assert listener_counts(app_engine) == counts
    assert app_engine.hide_parameters is False  # the app's choice, not ours
    expected = {k: before[k] for k in during[0]}
    assert during and all(d == expected for d in during), during
    assert_restored(app_engine, before, driver_settings(app_engine))


@pytest.mark.postgres
def test_an_explicit_isolation_level_of_an_app_engine_is_restored_exactly(
    postgres_url: str, postgres_engine: sa.Engine
) -> None:
    engine = sa.create_engine(
        postgres_url, pool_size=1, max_overflow=0, isolation_level="REPEATABLE READ"
    )
    try:
        before = driver_settings(engine)
        repo = SQLStateRepository(engine)
        repo.store("k", doc(1))
        assert repo.fetch("k") is not None
        after = driver_settings(engine)
        assert after == before and after["isolation_level"].name == "REPEATABLE_READ"
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_sqlalchemy_resets_the_autocommit_isolation_at_checkin(
    postgres_url: str, postgres_engine: sa.Engine
) -> None:
    """The mechanism the single statements rely on, on a real engine: the driver is in
    autocommit while the connection is checked out with AUTOCOMMIT isolation, and back
    out of it when the same pooled connection is checked out again."""
    engine = sa.create_engine(postgres_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as connection:
            driver: Any = connection.connection.driver_connection
            assert autocommit(driver) is False
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            assert id(connection.connection.driver_connection) == id(driver)
            assert autocommit(driver) is True
        with engine.connect() as connection:
            assert id(connection.connection.driver_connection) == id(driver)
            assert autocommit(driver) is False
            assert connection.get_isolation_level() == engine.dialect.default_isolation_level
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_an_app_engine_in_autocommit_isolation_still_gets_transactions(
    postgres_url: str, postgres_engine: sa.Engine
) -> None:
    """An app may run its engine in AUTOCOMMIT isolation, where ``begin()`` sends no
    BEGIN. The repository's transactions (batches through the session temp table, a unit
    of work) and the history's probe still run in one transaction each, and the
    connection is handed back in autocommit."""
    from flask_tiered_state.domain.history import HistoryRepository, define_history_table

    engine = sa.create_engine(
        postgres_url, pool_size=1, max_overflow=0, isolation_level="AUTOCOMMIT"
    )
    try:
        before = driver_settings(engine)
        assert before["autocommit"] is True
        repo = SQLStateRepository(engine)
        written = repo.store_many([WriteRequest(f"b:{i}", doc(i)) for i in range(3)])
        assert [m.version for m in written.values()] == [1, 1, 1]
        with pytest.raises(RuntimeError), repo.unit_of_work() as work:
            work.store("b:0", doc("rolled back"))
            work.store("b:9", doc("rolled back"))
            raise RuntimeError
        got = repo.fetch_many(["b:0", "b:9"])
        assert list(got) == ["b:0"] and got["b:0"].value == doc(0)
        history = HistoryRepository(engine, define_history_table(repo.table.metadata))
        history.create()
        assert history.committed("s", 1, "event") is False
        assert history.count() == 0  # the probe row was rolled back
        assert driver_settings(engine) == before
    finally:
        engine.dispose()

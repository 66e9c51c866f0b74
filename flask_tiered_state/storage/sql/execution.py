"""Running the WARM tier's compiled statements: one-round-trip calls, batch writes,
and the translation of driver errors into the library's own.

Every statement an observer could see runs on a SQLAlchemy
:class:`~sqlalchemy.engine.Connection` (``exec_driver_sql``), so the engine's
``before_cursor_execute`` / ``after_cursor_execute`` listeners -- Flask-SQLAlchemy's
``SQLALCHEMY_RECORD_QUERIES``, debug toolbars, tracing -- and its SQL log see each one.
The one exception is the ``COPY .. FROM STDIN`` of a PostgreSQL batch write (below),
which SQLAlchemy has no API for: it runs on the driver's cursor of the same connection,
inside the same transaction; the statements around it (the temp table's creation, the
merge) are visible.

A single-statement call is one round trip, without ``BEGIN`` / ``ROLLBACK``. Through a
SQLAlchemy connection: on PostgreSQL it runs in ``isolation_level="AUTOCOMMIT"``, set
with :meth:`~sqlalchemy.engine.Connection.execution_options`, which SQLAlchemy resets
when the connection returns to the pool; on SQLite nothing is begun on an engine
built from a URL (its driver is in autocommit) and a write is committed. No driver
setting is changed by hand, so an application's engine is left as configured.

SQLAlchemy's execution (its connection, execution context and result) costs about as
much as the round trip itself on a fast network: 60-110 us per call measured, half
as much again as a ``fetch``. So on an engine the repository built itself, while
nothing observes it (:meth:`SQLExecutor.observed`: no statement or error listener on
the engine or on every engine, no SQL logging), a single statement runs on the
driver's cursor of a pooled connection, switched to the driver's autocommit for the
statement -- the pool is the repository's own. The check is made per call, so a
listener added at any time sees the next statement. An application's engine always
takes the SQLAlchemy path.

A read that meets a dead pooled connection is retried on a fresh one; a write is not
(it may have run), and raises :class:`~flask_tiered_state.errors.TierUnavailableError`
once.

Batch writes (``store_many``) run inside the caller's transaction. On PostgreSQL with
psycopg they COPY the rows into a session temp table and merge them with one
``INSERT .. SELECT .. ON CONFLICT`` (the fastest of the ways measured, see the
repository's notes); elsewhere a compiled upsert runs through ``executemany`` and
one SELECT reads the versions back. Neither depends on a bind-parameter limit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import sqlalchemy as sa

from ...errors import (
    DeadlineExceededError,
    InvalidRequestError,
    OutcomeUnknownError,
    TieredStateError,
    TierUnavailableError,
)
from ..deadlines import Watch, check_budget, current_deadline, watchdog
from .engine import SINGLE_STATEMENT_OPTIONS
from .schema import DriverSQL, Statements

__all__ = ["Execute", "SQLExecutor", "transactional"]

logger = logging.getLogger("flask_tiered_state.storage")

#: What a refused value's SQLSTATE says, in words that quote no value (the driver's text
#: can: it goes to the log only).
_REFUSALS = {
    "22001": "a value is too long for its column",
    "22003": "a number is out of range",
    "22021": "a text holds a character the database cannot store",
    "22P02": "a value is not valid input for its column",
    "22P05": "a text holds a character the database cannot store (NUL)",
}

#: SQLSTATEs of PostgreSQL's own timeouts: the statement did not run.
_TIMEOUTS = {
    "57014": "the statement ran past statement_timeout",
    "55P03": "a lock was not granted within lock_timeout",
}


def transactional(connection: sa.Connection) -> sa.Connection:
    """``connection``, made to run real transactions for as long as it is checked out.

    An application's engine may run its PostgreSQL connections in AUTOCOMMIT isolation
    (``create_engine(isolation_level="AUTOCOMMIT")``), where SQLAlchemy's ``begin()``
    sends no ``BEGIN`` and every statement commits alone. Such a connection gets the
    dialect's default isolation level through
    :meth:`~sqlalchemy.engine.Connection.execution_options`, which SQLAlchemy resets to
    the engine's AUTOCOMMIT when the connection returns to the pool.
    """
    if connection.dialect.name == "postgresql":
        driver: Any = connection.connection.driver_connection
        if getattr(driver, "autocommit", False):
            level = connection.dialect.default_isolation_level or "READ COMMITTED"
            connection.execution_options(isolation_level=level)
    return connection


class _Failed(Exception):
    """One attempt of a single statement failed: ``error``, whether the connection was
    lost, and whether the call's deadline shut its socket down."""

    def __init__(self, error: BaseException, *, fired: bool, lost: bool) -> None:
        super().__init__(error)
        self.error, self.fired, self.lost = error, fired, lost


def _lost(exc: BaseException) -> bool:
    """True when SQLAlchemy found the connection dead (and discarded it)."""
    return isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)


#: Runs one compiled statement with named values and returns its rows.
Execute = Callable[[DriverSQL, Mapping[str, Any]], list[Any]]
_READ_ATTEMPTS = 3


class SQLExecutor:
    """Runs :class:`~.schema.Statements` on an engine for one repository."""

    def __init__(
        self,
        engine: sa.Engine,
        statements: Statements,
        *,
        tier: str,
        use_copy: bool,
        timeout: float = 30.0,
        owns_engine: bool = False,
    ) -> None:
        self.engine = engine
        #: True for an engine built by the repository (never an application's).
        self.owns_engine = owns_engine
        #: Seconds one round trip may take when no shorter call budget runs.
        self.timeout = timeout
        self.sql = statements
        self.tier = tier
        self.backend = engine.dialect.name
        self._pg = self.backend == "postgresql"
        self._copy = use_copy and self._pg and engine.dialect.driver == "psycopg"
        dbapi = engine.dialect.loaded_dbapi
        self.driver_error: type[BaseException] = dbapi.Error
        self._integrity: type[BaseException] = dbapi.IntegrityError
        self._data_error: type[BaseException] = dbapi.DataError
        self._bad_value: tuple[type[BaseException], ...] = (dbapi.DataError, dbapi.IntegrityError)
        # psycopg's connect_timeout running out: the server accepted but never answered.
        self._connect_timeout: tuple[type[BaseException], ...] = tuple(
            t for t in (getattr(getattr(dbapi, "errors", None), "ConnectionTimeout", None),) if t
        )
        self._is_disconnect: Callable[..., bool] = engine.dialect.is_disconnect
        #: Execution options of a single-statement call's connection (see the module):
        #: none on an application's SQLite engine, whose own transaction handling runs.
        self._single: dict[str, Any] = {}
        if self._pg:
            self._single = {"isolation_level": "AUTOCOMMIT"}
        elif owns_engine:
            self._single = dict(SINGLE_STATEMENT_OPTIONS)

    # -- single statements ----------------------------------------------------

    def read(self, statement: DriverSQL, params: Mapping[str, Any]) -> list[Any]:
        return self._run(statement, params, _READ_ATTEMPTS, write=False)

    def write(
        self, statement: DriverSQL, params: Mapping[str, Any], *, raw_integrity: bool = False
    ) -> list[Any]:
        """Run a write; with ``raw_integrity``, a constraint violation is raised as
        :class:`sqlalchemy.exc.IntegrityError` (what a unit of work's statement raises),
        for callers that name the conflict themselves."""
        return self._run(statement, params, 1, write=True, raw_integrity=raw_integrity)

    def _run(
        self,
        statement: DriverSQL,
        params: Mapping[str, Any],
        attempts: int,
        *,
        write: bool,
        raw_integrity: bool = False,
    ) -> list[Any]:
        for attempt in range(1, attempts + 1):
            check_budget(self.tier, "run a statement")
            once = self._once if not self.owns_engine or self.observed() else self._once_unobserved
            try:
                return once(statement, params, write=write, raw_integrity=raw_integrity)
            except _Failed as failed:
                exc = failed.error
                if failed.lost and attempt < attempts and not failed.fired:
                    continue
                error = self.translate(exc, deadline=failed.fired)
                if write and failed.lost and isinstance(error, TierUnavailableError):
                    raise self.outcome_unknown(error) from exc
                raise error from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def observed(self) -> bool:
        """Whether anything watches the engine's statements: a statement or error
        listener (on the engine, or on :class:`sqlalchemy.engine.Engine` for all
        engines) or SQL logging (``echo``, the ``sqlalchemy.engine`` logger at INFO)."""
        dispatch = self.engine.dispatch
        return bool(
            dispatch.before_cursor_execute
            or dispatch.after_cursor_execute
            or dispatch.before_execute
            or dispatch.after_execute
            or self.engine.dialect.dispatch.handle_error
            or self.engine.logger.isEnabledFor(logging.INFO)
        )

    def _once(
        self, statement: DriverSQL, params: Mapping[str, Any], *, write: bool, raw_integrity: bool
    ) -> list[Any]:
        """One attempt through a SQLAlchemy connection (see the module)."""
        try:
            connection = self.engine.connect()
        except (sa.exc.SQLAlchemyError, self.driver_error) as exc:
            raise self.translate(exc) from exc
        watch: Watch | None = None
        driver: Any = None
        try:
            driver = connection.connection.driver_connection
            if self._single:
                connection.execution_options(**self._single)
            with self.watched(driver) as watch:
                result = connection.exec_driver_sql(statement.sql, statement.params(params))
                rows = result.fetchall() if statement.returns_rows else []
                if write and not self._pg:
                    connection.commit()
            return list(rows)
        except (sa.exc.SQLAlchemyError, self.driver_error) as exc:
            fired = watch is not None and watch.fired
            if raw_integrity and not fired and isinstance(exc, sa.exc.IntegrityError):
                raise
            lost = fired or _lost(exc) or self._driver_lost(exc, driver)
            if lost and not connection.invalidated:
                with suppress(sa.exc.SQLAlchemyError, self.driver_error):
                    connection.invalidate(exc)
            raise _Failed(exc, fired=fired, lost=lost) from exc
        finally:
            with suppress(sa.exc.SQLAlchemyError, self.driver_error):
                connection.close()

    def _once_unobserved(
        self, statement: DriverSQL, params: Mapping[str, Any], *, write: bool, raw_integrity: bool
    ) -> list[Any]:
        """One attempt on the driver's cursor of a pooled connection: the engine is this
        repository's own and nothing observes its statements (see the module)."""
        try:
            pooled = self.engine.raw_connection()
        except (sa.exc.SQLAlchemyError, self.driver_error) as exc:
            raise self.translate(exc) from exc
        cursor = None
        watch: Watch | None = None
        try:
            driver: Any = pooled.driver_connection
            toggle = self._pg and not driver.autocommit
            if toggle:
                driver.autocommit = True
            try:
                with self.watched(driver) as watch:
                    cursor = pooled.cursor()
                    cursor.execute(statement.sql, statement.params(params))
                    rows = list(cursor.fetchall()) if statement.returns_rows else []
                    if write and not self._pg:
                        pooled.commit()
                return rows
            finally:
                if cursor is not None:
                    with suppress(self.driver_error):
                        cursor.close()
                if toggle and not driver.closed:
                    driver.autocommit = False
        except self.driver_error as exc:
            fired = watch is not None and watch.fired
            if raw_integrity and not fired and isinstance(exc, self._integrity):
                raise sa.exc.IntegrityError(statement.sql, None, exc) from exc
            lost = fired or self._is_disconnect(exc, pooled.dbapi_connection, cursor)
            if lost:
                pooled.invalidate(exc)
            raise _Failed(exc, fired=fired, lost=lost) from exc
        finally:
            pooled.close()

    def _driver_lost(self, exc: BaseException, driver_connection: Any) -> bool:
        """A driver error raised outside SQLAlchemy's statement handling (setting the
        connection's options) that means the connection is dead."""
        if not isinstance(exc, self.driver_error):
            return False
        return driver_connection is None or bool(self._is_disconnect(exc, driver_connection, None))

    def deadline(self) -> float:
        """When the running round trip must end: the call's budget, or this tier's own
        timeout when that comes first (or no budget runs)."""
        own = time.monotonic() + self.timeout
        outer = current_deadline()
        return own if outer is None or own < outer else outer

    @contextmanager
    def watched(self, driver_connection: Any) -> Iterator[Watch | None]:
        """Watch a PostgreSQL connection's socket until :meth:`deadline` (SQLite, a file
        in this process, needs no watch)."""
        if not self._pg:
            yield None
            return
        with watchdog.watch(driver_connection.fileno(), self.deadline()) as watch:
            yield watch

    def outcome_unknown(self, error: TierUnavailableError) -> OutcomeUnknownError:
        """The error of a write whose connection was lost after it was sent."""
        return OutcomeUnknownError(
            self.tier,
            f"{error.message} The write was sent but its reply was lost, so it may have "
            "been applied.",
            details=error.details,
            failure=error,
        )

    # -- batches inside a transaction -----------------------------------------

    def store_rows(
        self,
        connection: sa.Connection,
        rows: list[dict[str, Any]],
        *,
        batch_size: int,
        category: str,
        ready: list[dict[Any, Any]],
    ) -> dict[str, int]:
        """Upsert prepared rows on ``connection`` (in its transaction); key -> version.

        ``ready`` collects pool-record info dicts to mark once the transaction commits.
        """
        versions: dict[str, int] = {}
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            modes = sorted({row["explicit"] for row in chunk})
            if self._copy:
                versions.update(self._copy_chunk(connection, chunk, modes, category, ready))
                continue
            for explicit in modes:
                sql = self.sql.upsert_many[explicit]
                params = [sql.params(row) for row in chunk if row["explicit"] is explicit]
                connection.exec_driver_sql(sql.sql, params)
            if modes == [True]:  # every version given (tier moves): nothing to read back
                versions.update((row["key"], row["version"]) for row in chunk)
                continue
            keys = self.sql.key_list([row["key"] for row in chunk])
            sql = self.sql.versions
            result = connection.exec_driver_sql(sql.sql, sql.params({"keys": keys}))
            versions.update((key, version) for key, version in result)
        return versions

    def _copy_chunk(
        self,
        connection: sa.Connection,
        chunk: list[dict[str, Any]],
        modes: list[bool],
        category: str,
        ready: list[dict[Any, Any]],
    ) -> dict[str, int]:
        pooled = connection.connection
        versions: dict[str, int] = {}
        if self.sql.load_table_ready not in pooled.info:
            # Rolled back with the transaction that creates it: marked once it commits.
            connection.exec_driver_sql(self.sql.create_load_table)
            ready.append(pooled.info)
        # COPY has no SQLAlchemy API: the driver's cursor of this connection, in this
        # transaction, is the one place the engine's statement listeners do not see.
        driver: Any = pooled.driver_connection
        with driver.cursor() as cursor, cursor.copy(self.sql.copy_load) as copy:
            for r in chunk:
                version = r["version"] if r["explicit"] else None
                copy.write_row(
                    (r["key"], r["value"], r["checksum"], r["size"], version,
                     r["ttl_seconds"], r["expires_at"])
                )  # fmt: skip
        params = {"category": category, "now": chunk[0]["now"]}
        for explicit in modes:
            merged = connection.exec_driver_sql(self.sql.merge_load[explicit], params)
            versions.update((key, version) for key, version in merged)
        return versions

    def mark_ready(self, ready: list[dict[Any, Any]]) -> None:
        """After commit: these connections' sessions have the load table."""
        for info in ready:
            info[self.sql.load_table_ready] = True

    # -- errors ----------------------------------------------------------------

    @contextmanager
    def transaction(
        self, engine: sa.Engine, *, translate_block: bool = True
    ) -> Iterator[sa.Connection]:
        """One transaction on a connection of ``engine`` (the repository's, or its write
        variant), its socket watched until the :meth:`deadline`; commit when the block
        ends, roll back if it raises.

        Driver errors of the block are raised as the library's own; with
        ``translate_block=False`` the block's exceptions propagate unchanged, except that
        a connection lost (or shut down at the deadline), and a value the database refuses
        (a ``DataError``: NUL in PostgreSQL text, a number out of range), are raised as the
        library's errors.
        A commit whose connection is lost raises
        :class:`~flask_tiered_state.errors.OutcomeUnknownError`: it may have committed.
        """
        check_budget(self.tier, "begin a transaction")
        with self.guard():
            connection = engine.connect()
        try:
            with self.guard():
                transaction = transactional(connection).begin()
            with self.watched(connection.connection.driver_connection) as watch:
                try:
                    yield connection
                except BaseException as exc:
                    with suppress(sa.exc.SQLAlchemyError, self.driver_error):
                        transaction.rollback()
                    fired = watch is not None and watch.fired
                    if isinstance(exc, (sa.exc.SQLAlchemyError, self.driver_error)) and (
                        translate_block or fired or _lost(exc) or self._refused_value(exc)
                    ):
                        raise self.translate(exc, deadline=fired) from exc
                    raise
                try:
                    transaction.commit()
                except (sa.exc.SQLAlchemyError, self.driver_error) as exc:
                    fired = watch is not None and watch.fired
                    error = self.translate(exc, deadline=fired)
                    if (fired or _lost(exc)) and isinstance(error, TierUnavailableError):
                        raise self.outcome_unknown(error) from exc
                    raise error from exc
        finally:
            with suppress(sa.exc.SQLAlchemyError, self.driver_error):
                connection.close()

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Re-raise SQLAlchemy and driver errors as the library's own."""
        try:
            yield
        except (sa.exc.SQLAlchemyError, self.driver_error) as exc:
            raise self.translate(exc) from exc

    def _refused_value(self, exc: BaseException) -> bool:
        """The database refused a value of the statement (not a constraint: callers of
        a unit of work name their conflicts themselves)."""
        cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        return isinstance(cause, self._data_error)

    def translate(self, exc: BaseException, *, deadline: bool = False) -> TieredStateError:
        """The library's error for a SQLAlchemy or driver error: DeadlineExceededError,
        InvalidRequestError (a refused value; the driver's text, which can quote the
        value, goes to the log only) or TierUnavailableError."""
        cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        text = " ".join(str(cause).split()) or type(cause).__name__
        details = {"backend": self.backend, "error": type(cause).__name__}
        state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
        late = None
        if deadline:
            late = "did not answer within the call's time budget; the connection was closed"
        elif isinstance(cause, self._connect_timeout):
            late = f"accepted a connection but did not answer it in time ({text})"
        elif state in _TIMEOUTS:
            late = f"gave up: {_TIMEOUTS[state]} ({text})"
        if late is not None:
            return DeadlineExceededError(
                self.tier,
                f"The {self.tier} tier ({self.backend}) {late}. Retry later.",
                details=details,
            )
        if isinstance(cause, self._bad_value):
            # %r escapes the control characters a refused value may bring into the text.
            logger.warning("The %s database refused a value: %r", self.backend, text)
            why = _REFUSALS.get(
                getattr(cause, "sqlstate", None) or "", "it cannot hold a value of it"
            )
            return InvalidRequestError(
                f"The {self.backend} database refused the write or query: {why} (the "
                "database's reason is in the server log). Values must be JSON text of valid "
                "Unicode; PostgreSQL also refuses NUL characters (U+0000) in text.",
                details=details,
            )
        return TierUnavailableError(
            self.tier, f"The {self.tier} tier ({self.backend}) failed: {text}", details=details
        )

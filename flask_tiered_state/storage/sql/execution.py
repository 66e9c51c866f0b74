"""Running the WARM tier's compiled statements: one-round-trip calls, batch writes,
and the translation of driver errors into the library's own.

A single-statement call runs on a pooled connection in driver autocommit: one round
trip, where SQLAlchemy's ``connect()`` + ``execute()`` costs BEGIN, the statement and
ROLLBACK. A read that meets a dead pooled connection is retried on a fresh one; a
write is not (it may have run), and raises
:class:`~flask_tiered_state.errors.TierUnavailableError` once.

Batch writes (``store_many``) run inside the caller's transaction. On PostgreSQL with
psycopg they COPY the rows into a session temp table and merge them with one
``INSERT .. SELECT .. ON CONFLICT`` (the fastest of the ways measured, see the
repository's notes); elsewhere a compiled upsert runs through ``executemany`` and
one SELECT reads the versions back. Neither depends on a bind-parameter limit.
"""

from __future__ import annotations

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
from .schema import DriverSQL, Statements

__all__ = ["Execute", "SQLExecutor"]

#: SQLSTATEs of PostgreSQL's own timeouts: the statement did not run.
_TIMEOUTS = {
    "57014": "the statement ran past statement_timeout",
    "55P03": "a lock was not granted within lock_timeout",
}


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
    ) -> None:
        self.engine = engine
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
        self._bad_value: tuple[type[BaseException], ...] = (dbapi.DataError, dbapi.IntegrityError)
        # psycopg's connect_timeout running out: the server accepted but never answered.
        self._connect_timeout: tuple[type[BaseException], ...] = tuple(
            t for t in (getattr(getattr(dbapi, "errors", None), "ConnectionTimeout", None),) if t
        )
        self._is_disconnect: Callable[..., bool] = engine.dialect.is_disconnect

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
                    if attempt < attempts and not fired:
                        continue
                error = self.translate(exc, deadline=fired)
                if write and lost and isinstance(error, TierUnavailableError):
                    raise self.outcome_unknown(error) from exc
                raise error from exc
            finally:
                pooled.close()
        raise AssertionError("unreachable")  # pragma: no cover

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
        driver: Any = pooled.driver_connection
        with driver.cursor() as cursor:
            if self.sql.load_table_ready not in pooled.info:
                # Rolled back with the transaction that creates it: marked once it commits.
                cursor.execute(self.sql.create_load_table)
                ready.append(pooled.info)
            with cursor.copy(self.sql.copy_load) as copy:
                for r in chunk:
                    version = r["version"] if r["explicit"] else None
                    copy.write_row(
                        (r["key"], r["value"], r["checksum"], r["size"], version,
                         r["ttl_seconds"], r["expires_at"])
                    )  # fmt: skip
            params = {"category": category, "now": chunk[0]["now"]}
            for explicit in modes:
                cursor.execute(self.sql.merge_load[explicit], params)
                versions.update(cursor.fetchall())
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
        a connection lost (or shut down at the deadline) is raised as the library's error.
        A commit whose connection is lost raises
        :class:`~flask_tiered_state.errors.OutcomeUnknownError`: it may have committed.
        """
        check_budget(self.tier, "begin a transaction")
        with self.guard():
            connection = engine.connect()
        try:
            with self.guard():
                transaction = connection.begin()
            with self.watched(connection.connection.driver_connection) as watch:
                try:
                    yield connection
                except BaseException as exc:
                    with suppress(sa.exc.SQLAlchemyError, self.driver_error):
                        transaction.rollback()
                    fired = watch is not None and watch.fired
                    if isinstance(exc, (sa.exc.SQLAlchemyError, self.driver_error)) and (
                        translate_block or fired or _lost(exc)
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

    def translate(self, exc: BaseException, *, deadline: bool = False) -> TieredStateError:
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
            return InvalidRequestError(
                f"The {self.backend} database refused the write: {text}. Values must be JSON "
                "text (PostgreSQL also refuses NUL characters in text).",
                details=details,
            )
        return TierUnavailableError(
            self.tier, f"The {self.tier} tier ({self.backend}) failed: {text}", details=details
        )

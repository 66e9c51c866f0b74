"""The WARM tier: SQLAlchemy 2 Core on PostgreSQL (psycopg 3) and SQLite.

How it stays fast: every statement is compiled once per repository
(:mod:`.schema`) and run as driver SQL, which psycopg prepares after a few uses
on each connection; a single-statement call (``fetch``, ``store``, ``delete``, a
``keys`` page) is one round trip, without BEGIN / ROLLBACK; ``store_many`` is one
transaction of COPY + merge (PostgreSQL) or ``executemany`` (SQLite) per chunk
(:mod:`.execution`, which also says how the engine's listeners see every statement,
and what an application's engine is left with). Measured against the raw drivers in
one run: ``fetch`` about as fast as a SELECT on a pinned SQLAlchemy connection and
about half the cost of SQLAlchemy's connect + execute per read; a 1,000-row
``store_many`` within a few percent of psycopg's own COPY + merge, the fastest raw
path (``insert().values(list)`` is about 5x slower).

Reads do not write: ``last_accessed`` is set on every write, and callers that track
accesses (the tier manager) can record them in bulk with :meth:`touch_many`.
Expired rows (``expires_at`` past) read as absent everywhere, and are overwritten by
the next write or removed by :meth:`purge_expired`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import sqlalchemy as sa

from ...errors import (
    ConcurrencyError,
    ConfigurationError,
    InvalidRequestError,
    TieredStateError,
)
from ..base import (
    BackendContext,
    DocumentQuery,
    StaleCopy,
    StateCategory,
    StateMetadata,
    StateRepository,
    StoredValue,
    TierStats,
    WriteRequest,
    check_options,
)
from ..checks import check_expected_version, int_option, seconds_option
from ..keys import glob_to_regex, glob_to_sql_like, validate_key, validate_keys, validate_pattern
from .engine import SUPPORTED, WRITE_OPTIONS, build_engine
from .execution import Execute, SQLExecutor
from .journal import DropJournal, define_journal_table
from .rows import prepare_row, prepare_rows, row_metadata, verified
from .schema import DriverSQL, Statements, build_table, validate_table_name, with_row_insert
from .search import DocumentSearcher
from .snapshot import SQLSnapshot, open_snapshot

__all__ = ["SQLStateRepository", "SQLUnitOfWork"]


class SQLStateRepository:
    """The WARM tier on a SQLAlchemy engine (PostgreSQL or SQLite).

    :param engine_or_url: an :class:`sqlalchemy.Engine` (e.g. Flask-SQLAlchemy's
        ``db.engine``, used as configured and never disposed here) or a database URL;
        ``postgresql://`` URLs use psycopg 3 (see :mod:`.engine` for what an engine
        built from a URL gets).
    :param table_name: the table's name; its index names derive from it.
    :param category: the tier it serves.
    :param metadata: a :class:`sqlalchemy.MetaData` to attach the table to (e.g.
        ``db.metadata``), so the application's migrations see it.
    :param create_tables: create the table and its indexes if missing.
    :param connect_timeout: seconds, for engines built from a URL.
    :param pool_pre_ping: use SQLAlchemy's pre-ping instead of the cheaper checkout check
        (one more round trip per call; see :mod:`.engine`). Engines built from a URL only.
    :param batch_size: rows per chunk of batch calls and per ``keys`` page.
    :param use_copy: on PostgreSQL with psycopg, write batches with COPY through a
        session temp table; set False behind a transaction-pooling proxy (PgBouncer in
        transaction mode), where session state does not survive the transaction.
    :param clock: wall-clock seconds since the epoch, injectable for TTL tests.
    :param statement_timeout: seconds, PostgreSQL's ``statement_timeout`` for an engine
        built from a URL (None: the server's); a statement running longer is cancelled
        with :class:`~flask_tiered_state.errors.DeadlineExceededError`.
    :param lock_timeout: seconds, PostgreSQL's ``lock_timeout`` likewise: how long a write
        waits for a row another transaction holds.
    :param timeout: the longest a round trip may wait for PostgreSQL when no shorter
        call budget runs (see :mod:`.deadlines`): the socket is then shut down.
    """

    def __init__(
        self,
        engine_or_url: sa.Engine | sa.URL | str,
        *,
        table_name: str = "tiered_state_entries",
        category: StateCategory = StateCategory.WARM,
        metadata: sa.MetaData | None = None,
        create_tables: bool = True,
        connect_timeout: float = 5.0,
        pool_pre_ping: bool = False,
        batch_size: int = 5000,
        use_copy: bool = True,
        clock: Callable[[], float] = time.time,
        statement_timeout: float | None = 5.0,
        lock_timeout: float | None = 2.0,
        timeout: float = 30.0,
    ) -> None:
        validate_table_name(table_name)
        if not isinstance(category, StateCategory):
            raise ConfigurationError(
                f"category must be a StateCategory (HOT, WARM or COLD), not {category!r}."
            )
        int_option("batch_size", batch_size)
        if isinstance(engine_or_url, sa.Engine):
            self.engine, self._owns_engine = engine_or_url, False
        elif isinstance(engine_or_url, (str, sa.URL)):
            self.engine = build_engine(
                engine_or_url,
                connect_timeout=connect_timeout,
                pool_pre_ping=pool_pre_ping,
                statement_timeout=statement_timeout,
                lock_timeout=lock_timeout,
            )
            self._owns_engine = True
        else:
            raise ConfigurationError(
                "SQLStateRepository needs a SQLAlchemy Engine or a database URL, not "
                f"{type(engine_or_url).__name__}."
            )
        #: The dialect's name: "postgresql" or "sqlite".
        self.backend: str = self.engine.dialect.name
        if self.backend not in SUPPORTED:
            raise ConfigurationError(
                f"The engine is for {self.backend}; the WARM tier supports "
                f"{' and '.join(SUPPORTED)}."
            )
        self.category = category
        self.batch_size = batch_size
        self._clock = clock
        self._tier = str(category)
        self._category_value = category.value
        self._pg = self.backend == "postgresql"
        #: The :class:`sqlalchemy.Table` holding the values.
        self.table = build_table(table_name, metadata or sa.MetaData(), self.backend)
        self._sql = Statements(self.table, self.engine.dialect)
        #: The drops other tiers still owe (see :mod:`.journal`), in this database.
        self.journal = DropJournal(
            self.engine, define_journal_table(self.table.metadata, self.table.name)
        )
        self._db = SQLExecutor(
            self.engine, self._sql, tier=self._tier, use_copy=use_copy,
            timeout=seconds_option("timeout", timeout, optional=False) or 30.0,
            owns_engine=self._owns_engine,
        )  # fmt: skip
        self._writer = self.engine.execution_options(**WRITE_OPTIONS)
        self._row_inserts: dict[tuple[tuple[str, tuple[str, ...]], ...], DriverSQL] = {}
        self._searcher = DocumentSearcher(
            self.engine, self.table, self.document_expression(), self.live_condition
        )
        if create_tables:
            try:
                self.create_tables()
            except BaseException:
                self.close()
                raise

    # -- schema and SQL access -----------------------------------------------

    def create_tables(self) -> None:
        """Create the table and its indexes where missing (safe to call repeatedly)."""
        for attempt in (1, 2):
            try:
                self.table.create(self.engine, checkfirst=True)
                for index in self.table.indexes:
                    index.create(self.engine, checkfirst=True)
                self.journal.create()
                return
            except (sa.exc.SQLAlchemyError, self._db.driver_error) as exc:
                # Another process may have created it between our check and CREATE.
                raced = isinstance(exc, (sa.exc.ProgrammingError, sa.exc.IntegrityError)) or (
                    not self._pg and isinstance(exc, sa.exc.OperationalError)
                )
                if attempt == 2 or not raced:
                    raise self._db.translate(exc) from exc

    def document_expression(self) -> sa.ColumnElement[Any]:
        """The stored document as a JSON-typed expression, for searches inside documents:
        ``repo.document_expression()["profile"]["tier"].as_string() == "gold"``.

        PostgreSQL: the JSONB ``document`` column (GIN-indexed for ``.contains()``);
        SQLite: the JSON text itself.
        """
        if self._pg:
            return self.table.c.document
        return sa.type_coerce(self.table.c.value, sa.JSON)

    def live_condition(self, now: float | None = None) -> sa.ColumnElement[bool]:
        """A WHERE clause keeping rows that have not expired (for searches of your own)."""
        moment = self._clock() if now is None else now
        expires_at = self.table.c.expires_at
        return sa.or_(expires_at.is_(None), expires_at > moment)

    def search_documents(
        self,
        query: DocumentQuery,
        *,
        newest_by: str,
        offset: int,
        limit: int,
        count_limit: int | None = None,
    ) -> tuple[list[str], int]:
        """``(values, total)`` of a :class:`~..base.DocumentQuery` (see
        :class:`~..base.DocumentSearch`): one page, newest by ``newest_by`` first."""
        checks: list[tuple[str, object, int]] = [("offset", offset, 0), ("limit", limit, 1)]
        if count_limit is not None:
            checks.append(("count_limit", count_limit, 0))
        for name, value, minimum in checks:
            if type(value) is not int or value < minimum:
                raise InvalidRequestError(
                    f"{name} must be a whole number of at least {minimum}, not {value!r}."
                )
        return self._searcher.search(
            query, newest_by=newest_by, offset=offset, limit=limit, count_limit=count_limit
        )

    def count_documents(
        self, query: DocumentQuery, group_by: Sequence[str] = ()
    ) -> list[tuple[Any, ...]]:
        """How many documents match ``query``, grouped by top-level fields: one query."""
        return self._searcher.count(query, group_by)

    @contextmanager
    def unit_of_work(self) -> Iterator[SQLUnitOfWork]:
        """One transaction: commit when the block ends, roll back if it raises.

        The block's own exceptions propagate unchanged (a lost connection excepted); a
        failure to begin or commit raises
        :class:`~flask_tiered_state.errors.TierUnavailableError`, and a commit whose
        reply was lost :class:`~flask_tiered_state.errors.OutcomeUnknownError`.
        """
        with self._db.transaction(self._writer, translate_block=False) as connection:
            work = SQLUnitOfWork(self, connection)
            yield work
        work._committed()

    def snapshot(self, *, chunk_timeout: float = 60.0) -> AbstractContextManager[SQLSnapshot]:
        """A consistent read-only view of the table for the block: every read of the
        :class:`~.snapshot.SQLSnapshot` sees the same instant (``REPEATABLE READ`` on
        PostgreSQL, one read transaction on SQLite), while writers go on. For
        checkpoints (:mod:`flask_tiered_state.ops.capture`)."""
        return open_snapshot(self, chunk_timeout=chunk_timeout)

    # -- reads -----------------------------------------------------------------

    def fetch(self, key: str) -> StoredValue | None:
        validate_key(key)
        rows = self._db.read(self._sql.fetch, {"key": key, "now": self._clock()})
        return verified(key, rows[0], self._tier, self.backend) if rows else None

    def fetch_many(self, keys: Sequence[str]) -> dict[str, StoredValue]:
        wanted = list(dict.fromkeys(validate_keys(keys)))
        found: dict[str, StoredValue] = {}
        now = self._clock()
        for start in range(0, len(wanted), self.batch_size):
            chunk = self._sql.key_list(wanted[start : start + self.batch_size])
            for row in self._db.read(self._sql.fetch_many, {"keys": chunk, "now": now}):
                found[row[0]] = verified(row[0], row[1:], self._tier, self.backend)
        return found

    def keys(self, pattern: str = "*") -> Iterator[str]:
        """Matching keys in key order, read page by page (``batch_size`` per page)."""
        validate_pattern(pattern)
        return self._iter_keys(pattern)

    def scan_keys(self, pattern: str = "*") -> Iterator[str]:
        """:meth:`keys`, which already reads a page at a time."""
        return self.keys(pattern)

    def _iter_keys(self, pattern: str) -> Iterator[str]:
        regex = glob_to_regex(pattern)
        params = {
            "pattern": glob_to_sql_like(pattern) if self._pg else pattern,
            "after": "",
            "limit": self.batch_size,
        }
        while True:
            rows = self._db.read(self._sql.keys_page, {**params, "now": self._clock()})
            for (key,) in rows:
                if regex.fullmatch(key):
                    yield key
            if len(rows) < self.batch_size:
                return
            params["after"] = rows[-1][0]

    def stats(self) -> TierStats:
        """Exact live key count and bytes in one pass over the table (``count(*)`` and
        ``sum(size)``): milliseconds up to about a million rows. Past that, read
        ``pg_class.reltuples`` for an estimate instead of calling this often."""
        live, size, total = self._db.read(self._sql.stats, {"now": self._clock()})[0]
        return TierStats(
            backend=self.backend,
            category=self.category,
            key_count=int(live),
            bytes=int(size),
            extra={"table": self.table.name, "expired_rows": int(total) - int(live)},
        )

    def ping(self) -> bool:
        try:
            self._db.read(self._sql.ping, {})
        except TieredStateError:
            return False
        return True

    # -- writes ----------------------------------------------------------------

    def store(
        self,
        key: str,
        value: str,
        *,
        version: int | None = None,
        ttl_seconds: int | None = None,
        expected_version: int | None = None,
    ) -> StateMetadata:
        row = prepare_row(key, value, version, ttl_seconds, self._clock(), self._category_value)
        return self._store_with(self._db.write, row, expected_version)

    def store_many(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        """Store every item in one transaction (all or nothing). A key given twice is
        written once, with its last item."""
        rows = prepare_rows(items, self._clock(), self._category_value)
        if not rows:
            return {}
        ready: list[dict[Any, Any]] = []
        with self._db.transaction(self._writer) as connection:
            versions = self._store_rows(connection, rows, ready)
        self._db.mark_ready(ready)
        return {r["key"]: row_metadata(r, versions[r["key"]], self.category) for r in rows}

    def delete(self, key: str) -> bool:
        validate_key(key)
        return self._delete_with(self._db.write, key)

    def delete_many(self, keys: Sequence[str]) -> int:
        """Delete ``keys`` (chunks beyond ``batch_size`` in one transaction); the number
        that were live."""
        unique = sorted(set(validate_keys(keys)))
        deleted, now = 0, self._clock()
        if not unique:
            return 0
        sql = self._sql.delete_many
        if len(unique) <= self.batch_size:  # one statement is atomic: one round trip
            gone = self._db.write(sql, {"keys": self._sql.key_list(unique)})
            return sum(1 for (expires_at,) in gone if expires_at is None or expires_at > now)
        with self._db.transaction(self._writer) as connection:
            for start in range(0, len(unique), self.batch_size):
                chunk = self._sql.key_list(unique[start : start + self.batch_size])
                rows = connection.exec_driver_sql(sql.sql, sql.params({"keys": chunk}))
                deleted += sum(
                    1 for (expires_at,) in rows if expires_at is None or expires_at > now
                )
        return deleted

    def store_copies(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        """Store the copies whose key is absent, expired or at an older version, in one
        transaction (an upsert with a condition, then one read of the chunk's versions
        to tell which were written)."""
        for item in items:
            if item.version is None:
                raise InvalidRequestError(
                    f"store_copies needs the version of every copy; {item.key!r} has none.",
                    details={"key": item.key},
                )
        rows = prepare_rows(items, self._clock(), self._category_value)
        if not rows:
            return {}
        stored: dict[str, StateMetadata] = {}
        upsert, check = self._sql.upsert_copy, self._sql.copy_versions
        with self._db.transaction(self._writer) as connection:
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                connection.exec_driver_sql(upsert.sql, [upsert.params(r) for r in chunk])
                keys = self._sql.key_list([r["key"] for r in chunk])
                now = {(k, v, c) for k, v, c in connection.exec_driver_sql(
                    check.sql, check.params({"keys": keys, "now": chunk[0]["now"]})
                )}  # fmt: skip
                for r in chunk:
                    if (r["key"], r["version"], r["checksum"]) in now:
                        stored[r["key"]] = row_metadata(r, r["version"], self.category)
        return stored

    def delete_unchanged(self, copies: Sequence[StoredValue]) -> list[str]:
        """Delete the rows still holding exactly these copies; one statement per chunk."""
        items = [(c.key, c.metadata.version, c.metadata.checksum, 0.0) for c in copies]
        return [key for (key,) in self._conditional_delete(self._sql.delete_unchanged, items)]

    def delete_stale(self, fences: Mapping[str, StaleCopy]) -> int:
        """Delete the rows their fences call stale; one statement per chunk. Counts the
        live rows deleted."""
        now = self._clock()
        gone = self._conditional_delete(self._sql.delete_stale, _fence_items(fences))
        return sum(1 for (expires_at,) in gone if expires_at is None or expires_at > now)

    def _conditional_delete(
        self,
        statement: DriverSQL,
        items: Sequence[tuple[str, int, str | None, float]],
        execute: Execute | None = None,
    ) -> list[Any]:
        validate_keys([item[0] for item in items])
        run = self._db.write if execute is None else execute
        rows: list[Any] = []
        for start in range(0, len(items), self.batch_size):
            params = self._sql.fence_params(items[start : start + self.batch_size])
            rows += run(statement, params)
        return rows

    def purge_expired(self) -> int:
        """Delete expired rows; the number removed."""
        sql = self._sql.purge_expired
        with self._db.transaction(self._writer) as connection:
            return connection.exec_driver_sql(sql.sql, sql.params({"now": self._clock()})).rowcount

    def touch_many(self, keys: Sequence[str], *, at: float | None = None) -> int:
        """Record accesses: set ``last_accessed`` of live ``keys`` in one statement per chunk."""
        unique = sorted(set(validate_keys(keys)))
        moment = self._clock() if at is None else at
        touched, sql = 0, self._sql.touch
        with self._db.transaction(self._writer) as connection:
            for start in range(0, len(unique), self.batch_size):
                chunk = self._sql.key_list(unique[start : start + self.batch_size])
                params = sql.params({"keys": chunk, "now": moment})
                touched += connection.exec_driver_sql(sql.sql, params).rowcount
        return touched

    def close(self) -> None:
        """Dispose of the engine if this repository built it (a given engine stays open)."""
        if self._owns_engine:
            self.engine.dispose()

    def store_with_row(
        self,
        key: str,
        value: str,
        *,
        expected_version: int,
        rows: Sequence[tuple[sa.Table, Mapping[str, Any]]],
    ) -> StateMetadata | None:
        """Compare-and-set ``key`` from ``expected_version`` (at least 1) and insert each
        ``(table, row)`` of ``rows`` (the caller's tables, in this database) in ONE
        statement and one round trip: all commit or none does.

        PostgreSQL with psycopg only; elsewhere, and when the key is not live at
        ``expected_version`` (nothing is written then), returns None: use
        :meth:`unit_of_work`, which says why. A constraint violation of any row raises
        :class:`sqlalchemy.exc.IntegrityError`, as in a unit of work, and writes nothing.
        """
        if not self._pg or self.engine.dialect.driver != "psycopg":
            return None
        if check_expected_version(expected_version) < 1:
            return None
        shape = tuple((table, tuple(row)) for table, row in rows)
        cache_key = tuple((table.fullname, columns) for table, columns in shape)
        statement = self._row_inserts.get(cache_key)
        if statement is None:
            update = self._sql.update_expected[False]
            statement = with_row_insert(update, shape, self.engine.dialect)
            self._row_inserts[cache_key] = statement
        data = prepare_row(key, value, None, None, self._clock(), self._category_value)
        params = {**data, "expected": expected_version}
        for index, (_table, row) in enumerate(rows):
            params.update({f"row{index}_{name}": v for name, v in row.items()})
        written = self._db.write(statement, params, raw_integrity=True)
        return row_metadata(data, written[0][0], self.category) if written else None

    def prepared_metadata(self, key: str, value: str, version: int) -> StateMetadata:
        """The metadata a write of ``value`` as ``version`` stores now (for a caller that
        learns a write committed without having its reply)."""
        row = prepare_row(key, value, None, None, self._clock(), self._category_value)
        return row_metadata(row, version, self.category)

    # -- shared by the repository and its units of work -----------------------

    def _store_with(
        self, execute: Execute, row: dict[str, Any], expected: int | None
    ) -> StateMetadata:
        explicit = row["explicit"]
        if expected is None:
            rows = execute(self._sql.upsert[explicit], row)
        elif check_expected_version(expected) == 0:
            rows = execute(self._sql.insert_absent, row)
        else:
            rows = execute(self._sql.update_expected[explicit], {**row, "expected": expected})
        if not rows:
            current = execute(self._sql.current_version, row)
            raise ConcurrencyError(row["key"], expected, current[0][0] if current else 0)
        return row_metadata(row, rows[0][0], self.category)

    def _delete_with(self, execute: Execute, key: str) -> bool:
        rows = execute(self._sql.delete, {"key": key})
        return bool(rows) and (rows[0][0] is None or rows[0][0] > self._clock())

    def _store_rows(
        self, connection: sa.Connection, rows: list[dict[str, Any]], ready: list[dict[Any, Any]]
    ) -> dict[str, int]:
        return self._db.store_rows(
            connection,
            rows,
            batch_size=self.batch_size,
            category=self.category.value,
            ready=ready,
        )


class SQLUnitOfWork:
    """Writes inside one transaction of :meth:`SQLStateRepository.unit_of_work`.

    :attr:`connection` is the transaction's :class:`sqlalchemy.Connection`: rows the
    caller writes on it (e.g. history) commit or roll back with the stored values.
    """

    def __init__(self, repository: SQLStateRepository, connection: sa.Connection) -> None:
        self.repository = repository
        self.connection = connection
        self._ready: list[dict[Any, Any]] = []

    def _execute(self, statement: DriverSQL, params: Mapping[str, Any]) -> list[Any]:
        result = self.connection.exec_driver_sql(statement.sql, statement.params(params))
        return list(result.all()) if result.returns_rows else []

    def fetch(self, key: str) -> StoredValue | None:
        """The value as this transaction sees it (its own writes included)."""
        validate_key(key)
        repo = self.repository
        with repo._db.guard():
            rows = self._execute(repo._sql.fetch, {"key": key, "now": repo._clock()})
        return verified(key, rows[0], repo._tier, repo.backend) if rows else None

    def store(
        self,
        key: str,
        value: str,
        *,
        version: int | None = None,
        ttl_seconds: int | None = None,
        expected_version: int | None = None,
    ) -> StateMetadata:
        repo = self.repository
        row = prepare_row(key, value, version, ttl_seconds, repo._clock(), repo._category_value)
        with repo._db.guard():
            return repo._store_with(self._execute, row, expected_version)

    def store_many(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        repo = self.repository
        rows = prepare_rows(items, repo._clock(), repo._category_value)
        if not rows:
            return {}
        with repo._db.guard():
            versions = repo._store_rows(self.connection, rows, self._ready)
        return {r["key"]: row_metadata(r, versions[r["key"]], repo.category) for r in rows}

    @property
    def batches_compare_and_set(self) -> bool:
        """True where :meth:`compare_and_set_many` writes a batch in one statement."""
        return self.repository._pg

    def compare_and_set_many(
        self, items: Sequence[tuple[WriteRequest, int]]
    ) -> dict[str, StateMetadata] | None:
        """Compare-and-set writes of many keys, each ``(request, expected_version)``
        (0: the key must be absent), in one statement per kind on PostgreSQL: the
        metadata of the keys written. A key not in the result was left as it was (its
        row was at another version): the caller writes it with :meth:`store`, which says
        why. None where the database has no batch form (SQLite: one statement a key
        costs no round trip there)."""
        repo = self.repository
        if not repo._pg:
            return None
        now = repo._clock()
        rows = {
            r.key: (prepare_row(r.key, r.value, r.version, r.ttl_seconds, now,
                                repo._category_value), check_expected_version(e))
            for r, e in items
        }  # fmt: skip
        written: dict[str, StateMetadata] = {}
        sql = repo._sql
        for statement, chosen in (
            (sql.update_expected_batch, [k for k in sorted(rows) if rows[k][1] > 0]),
            (sql.insert_absent_batch, [k for k in sorted(rows) if rows[k][1] == 0]),
        ):
            if not chosen:
                continue
            batch = [
                {"key": k, "value": r["value"], "checksum": r["checksum"], "size": r["size"],
                 "version": r["version"] if r["explicit"] else None, "expected": expected,
                 "ttl_seconds": r["ttl_seconds"], "expires_at": r["expires_at"]}
                for k in chosen
                for r, expected in (rows[k],)
            ]  # fmt: skip
            params = {"rows": json.dumps(batch), "category": repo._category_value, "now": now}
            with repo._db.guard():
                result = self.connection.exec_driver_sql(statement, params)
                for key, version in result:
                    written[key] = row_metadata(rows[key][0], version, repo.category)
        return written

    def delete(self, key: str) -> bool:
        validate_key(key)
        with self.repository._db.guard():
            return self.repository._delete_with(self._execute, key)

    def delete_stale(self, fences: Mapping[str, StaleCopy]) -> int:
        """:meth:`SQLStateRepository.delete_stale` inside this transaction."""
        repo = self.repository
        with repo._db.guard():
            gone = repo._conditional_delete(
                repo._sql.delete_stale, _fence_items(fences), self._execute
            )
        now = repo._clock()
        return sum(1 for (expires_at,) in gone if expires_at is None or expires_at > now)

    def _committed(self) -> None:
        self.repository._db.mark_ready(self._ready)


def _fence_items(fences: Mapping[str, StaleCopy]) -> list[tuple[str, int, str | None, float]]:
    return [(k, f.version, f.checksum, f.written_at) for k, f in fences.items()]


def parse_url(url: str, options: Mapping[str, Any], context: BackendContext) -> dict[str, Any]:
    """The arguments of :class:`SQLStateRepository` for ``url`` and ``options``."""
    try:
        sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise ConfigurationError(
            f"The database URL {url!r} is not a SQLAlchemy URL; use e.g. "
            "postgresql://user@host/db or sqlite:////path/to/state.db."
        ) from None
    chosen = check_options(options, SQLStateRepository.__init__, fixed=("category",))
    chosen.setdefault("metadata", context.sql_metadata)
    chosen.setdefault("create_tables", context.create_tables)
    return {"engine_or_url": url, "category": context.category, **chosen}


def from_url(url: str, options: Mapping[str, Any], context: BackendContext) -> StateRepository:
    """The ``postgresql://`` (psycopg 3) and ``sqlite://`` backend (see
    :mod:`~flask_tiered_state.storage.registry`): options are the keyword arguments of
    :class:`SQLStateRepository`; ``metadata`` and ``create_tables`` default to the
    store's."""
    return SQLStateRepository(**parse_url(url, options, context))

"""Engines the WARM tier builds from a URL, and their dead-connection check.

An engine built here gets connect timeouts (``connect_timeout`` for libpq, the busy
``timeout`` for SQLite), PostgreSQL's ``statement_timeout`` and ``lock_timeout`` when
given, TCP keepalives and ``tcp_user_timeout`` on PostgreSQL (a dead peer is noticed on
idle and on unacknowledged writes), ``hide_parameters=True`` (an error or a log line of
a failing statement never shows its bound values: they are the states' data), and a
check of every pooled connection at checkout. A SQLite engine gets WAL journaling and
explicit transactions: SQLAlchemy's ``begin`` emits ``BEGIN`` (``BEGIN IMMEDIATE`` for
the repository's write transactions, nothing for its single statements, which run in
the driver's autocommit), where the sqlite3 module would begin late, at the first write.
A SQLite database file that does not exist yet is created here, readable and writable by
its owner only (0600, whatever the umask); SQLite gives its ``-wal`` and ``-shm`` files
the database file's permissions.

Everything here is installed on the engine built here, whose pool nobody else uses. An
engine the application passes in (Flask-SQLAlchemy's ``db.engine``) gets none of it: no
listener, no driver setting, and its own ``hide_parameters`` choice.

The checkout check instead of ``pool_pre_ping``: pre-ping sends a ping on every
checkout, one more round trip for every one-statement call. Measured (interleaved
rounds, PostgreSQL on loopback, a busy 2-core machine, two runs): the repository's
``fetch`` 230 us with pre-ping against 172 us with the check (1.31x; 1.50x in the other
run), ``TieredStore.get`` of a WARM value 367 against 281 us (1.30x; 1.31x). The check
is as safe for what pre-ping catches: a connection the server closed (restart,
``pg_terminate_backend``, idle timeout of a proxy that closes sockets) has its socket
readable while idle, with EOF or the server's FATAL message pending; only then is a
real ping sent, and a failing connection is replaced before anyone uses it. A peer
that vanished without closing the socket answers neither (pre-ping would wait for it
outside the call's budget); the keepalives catch it, and a statement sent on it ends
at the call's deadline (the socket watchdog). ``pool_pre_ping=True`` restores
SQLAlchemy's own behaviour.
"""

from __future__ import annotations

import math
import os
import select
from typing import Any

import sqlalchemy as sa

from ...errors import ConfigurationError
from ..deadlines import check_budget, remaining

__all__ = [
    "SINGLE_STATEMENT_OPTIONS",
    "SUPPORTED",
    "WRITE_OPTIONS",
    "build_engine",
    "install_liveness_check",
]

SUPPORTED = ("postgresql", "sqlite")
#: Execution options of the repository's write transactions (see ``_sqlite_begin``).
WRITE_OPTIONS = {"tiered_state_sqlite_begin": "IMMEDIATE"}
#: Execution options of the repository's single statements on SQLite: no ``BEGIN``
#: (the driver's autocommit runs them; see ``_sqlite_begin``). Only the listener of an
#: engine built here reads the option; on an application's engine it does nothing.
SINGLE_STATEMENT_OPTIONS = {"tiered_state_sqlite_begin": "NONE"}


def _describe(url: str | sa.URL) -> str:
    if isinstance(url, sa.URL):
        return url.render_as_string(hide_password=True)
    scheme, sep, _ = url.partition("://")
    return f"{scheme}{sep}..." if sep else repr(url[:20])


def build_engine(
    url: str | sa.URL,
    *,
    connect_timeout: float,
    pool_pre_ping: bool = False,
    statement_timeout: float | None = None,
    lock_timeout: float | None = None,
) -> sa.Engine:
    """An engine for ``url``; ``postgresql://`` and ``postgres://`` use psycopg 3.

    :param statement_timeout: seconds, PostgreSQL's ``statement_timeout`` on every
        connection (None: the server's).
    :param lock_timeout: seconds, PostgreSQL's ``lock_timeout`` likewise.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(
            f"The database URL {_describe(url)} is not a SQLAlchemy URL; expected e.g. "
            "postgresql+psycopg://user@host/db or sqlite:////path/to/file.db."
        ) from exc
    if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float)):
        raise ConfigurationError(f"connect_timeout must be seconds, not {connect_timeout!r}.")
    if connect_timeout <= 0:
        raise ConfigurationError(f"connect_timeout must be positive, not {connect_timeout!r}.")
    backend = parsed.get_backend_name()
    connect_args: dict[str, Any]
    if backend in ("postgresql", "postgres"):
        _, plus, driver = parsed.drivername.partition("+")
        parsed = parsed.set(drivername=f"postgresql+{driver if plus else 'psycopg'}")
        connect_args = {"connect_timeout": max(1, math.ceil(connect_timeout))}
        options = [
            f"-c {name}={round(seconds * 1000)}"
            for name, seconds in (("statement_timeout", statement_timeout),
                                  ("lock_timeout", lock_timeout))
            if seconds is not None
        ]  # fmt: skip
        if options:
            connect_args["options"] = " ".join(options)
        if parsed.get_driver_name() in ("psycopg", "psycopg2"):
            connect_args.update(
                keepalives=1,
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=3,
                tcp_user_timeout=60_000,
            )
    elif backend == "sqlite":
        connect_args = {"timeout": connect_timeout}
        _create_private_file(parsed)
    else:
        raise ConfigurationError(
            f"The database URL {parsed.render_as_string(hide_password=True)!r} is for "
            f"{backend}; the WARM tier supports {' and '.join(SUPPORTED)}."
        )
    try:
        engine = sa.create_engine(
            parsed,
            connect_args=connect_args,
            pool_pre_ping=pool_pre_ping,
            hide_parameters=True,
        )
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        extra = ' (pip install "flask-tiered-state[postgres]")' if backend != "sqlite" else ""
        raise ConfigurationError(
            f"The driver for {parsed.drivername} is not installed{extra}: {exc}"
        ) from exc
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    if not pool_pre_ping:
        install_liveness_check(engine)
    if "connect_timeout" in connect_args:
        sa.event.listen(engine, "do_connect", _connect_within_budget)
    return engine


def _create_private_file(url: sa.URL) -> None:
    """Create the SQLite file of ``url`` empty with mode 0600 unless it exists: SQLite
    would create it 0644 (world-readable), and gives the same mode to its WAL files."""
    database = url.database
    if (
        not database
        or database == ":memory:"
        or url.query.get("uri")
        or database.startswith("file:")
    ):
        return  # in memory, or a URI filename: SQLite opens it as the URI says
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # an existing file keeps the mode its owner gave it
    except OSError:
        return  # no such directory, no permission: SQLite reports it at connect
    os.close(fd)


def _connect_within_budget(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
    # A new connection is opened inside a call with a time budget: wait for the server no
    # longer than the budget leaves (libpq waits at least 2 seconds, whatever is asked).
    left = remaining()
    if left is not None:
        check_budget("warm", "connect to the database")
        configured = cparams.get("connect_timeout", 2)
        cparams["connect_timeout"] = max(2, min(int(configured), math.ceil(left)))


def _sqlite_connect(dbapi_connection: Any, record: Any) -> None:
    # The sqlite3 module's own transaction handling starts transactions late (at the
    # first write) and deferred; SQLAlchemy's transactions take over instead (below).
    dbapi_connection.isolation_level = None
    # WAL lets readers run beside the writer; a no-op for :memory: databases.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def _sqlite_begin(connection: sa.Connection) -> None:
    # The repository's write transactions begin IMMEDIATE: they take the write lock at
    # BEGIN, waiting up to the busy timeout, so one that reads and then writes never
    # fails on a lock upgrade. Other transactions (searches) stay DEFERRED and never
    # hold up writers. Single statements (SINGLE_STATEMENT_OPTIONS) begin nothing: the
    # connection is in the driver's autocommit (_sqlite_connect), one statement is atomic.
    mode = connection.get_execution_options().get("tiered_state_sqlite_begin", "DEFERRED")
    if mode != "NONE":
        connection.exec_driver_sql(f"BEGIN {'IMMEDIATE' if mode == 'IMMEDIATE' else 'DEFERRED'}")


def install_liveness_check(engine: sa.Engine) -> None:
    """Replace dead pooled connections at checkout without a round trip (see module).

    A pool event listener: only for an engine whose pool is the library's own (one
    :func:`build_engine` made), never an application's."""
    dialect = engine.dialect

    def check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if getattr(dbapi_connection, "closed", False):
            raise sa.exc.DisconnectionError("The pooled connection is closed.")
        if not _has_pending_input(dbapi_connection):
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise sa.exc.DisconnectionError(f"The pooled connection is dead: {exc}") from exc

    sa.event.listen(engine, "checkout", check)


def _has_pending_input(dbapi_connection: Any) -> bool:
    try:
        fd = dbapi_connection.fileno()
    except Exception:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)  # pragma: no cover - Windows
    return bool(readable)

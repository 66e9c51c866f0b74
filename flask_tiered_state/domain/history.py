"""The append-only history of state mutations, a table in the WARM database.

One row per successful mutation (invariant 4): ``state_id, version, transition,
from_status, to_status, old_record, new_record, actor, reason, correlation_id,
created_at``, and ``seal`` (an HMAC seal chaining the row to the state's previous one,
with audit keys configured: see :mod:`.audit`; not part of the rows the queries return).
The row is inserted on the connection of the store transaction that
writes the record, so both commit or neither does. ``(state_id, version)`` is
unique, which also keeps a state id from being registered twice. Indexes serve the
three queries: by state in version order, recent changes, changes by transition; the
latest rows across all states (:meth:`HistoryRepository.latest`) are a backward scan of
the primary key.

The table is defined on a caller's :class:`sqlalchemy.MetaData` (the store's, which
is Flask-SQLAlchemy's ``db.metadata`` when the app passes ``db``), so an app's
migrations see it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..errors import TierUnavailableError
from ..storage.deadlines import watched_connection
from ..storage.sql.execution import transactional

__all__ = [
    "ACTIVITY_COLUMNS",
    "DEFAULT_HISTORY_TABLE",
    "HistoryRepository",
    "define_history_table",
    "newest_rows",
]

DEFAULT_HISTORY_TABLE = "tiered_state_history"

#: The columns of :meth:`HistoryRepository.latest`: every column but the records.
ACTIVITY_COLUMNS = (
    "state_id",
    "version",
    "transition",
    "from_status",
    "to_status",
    "actor",
    "reason",
    "correlation_id",
    "created_at",
)

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def define_history_table(metadata: sa.MetaData, name: str = DEFAULT_HISTORY_TABLE) -> sa.Table:
    """The history table on ``metadata`` (the existing one if already defined there)."""
    existing = metadata.tables.get(name)
    if existing is not None:
        return existing
    return sa.Table(
        name,
        metadata,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("state_id", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("transition", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(32), nullable=True),
        sa.Column("to_status", sa.String(32), nullable=False),
        sa.Column("old_record", _JSON, nullable=True),
        sa.Column("new_record", _JSON, nullable=False),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("correlation_id", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(32), nullable=True),
        # The HMAC seal of the row (see .audit); NULL: written without audit keys.
        sa.Column("seal", sa.Text, nullable=True),
        sa.Index(f"uq_{name}_state_version", "state_id", "version", unique=True),
        sa.Index(f"ix_{name}_state_created", "state_id", "created_at"),
        sa.Index(f"ix_{name}_state_transition", "state_id", "transition"),
        sa.Index(f"ix_{name}_event", "event_id"),
    )


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class HistoryRepository:
    """Inserts and queries history rows.

    :param engine: the WARM database's engine.
    :param table: from :func:`define_history_table`.
    """

    def __init__(self, engine: sa.Engine, table: sa.Table) -> None:
        self.engine = engine
        self.table = table
        dialect = engine.dialect
        columns = [c.name for c in table.c if c.name != "id"]
        statement = (
            table.insert()
            .inline()
            .values({n: sa.bindparam(n, type_=table.c[n].type) for n in columns})
        )
        compiled = statement.compile(dialect=dialect, column_keys=columns)
        # Inserts run as driver SQL compiled once: the mutation path skips SQLAlchemy's
        # per-call compile-cache lookup and parameter processing.
        self._insert_sql = compiled.string
        self._positional = tuple(compiled.positiontup or ()) if dialect.positional else None
        impl = table.c.created_at.type.dialect_impl(dialect)
        self._time = impl.bind_processor(dialect)

    def create(self) -> None:
        """Create the table and its indexes where missing."""
        self.table.create(self.engine, checkfirst=True)

    @staticmethod
    def row(
        *,
        transition: str,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        actor: str | None,
        reason: str | None,
        correlation_id: str | None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """The insert parameters of one mutation (records as JSON text)."""
        return {
            "event_id": event_id,
            "state_id": new["state_id"],
            "version": new["version"],
            "transition": transition,
            "from_status": None if old is None else old["status"],
            "to_status": new["status"],
            "old_record": None if old is None else _dumps(old),
            "new_record": _dumps(new),
            "actor": actor,
            "reason": reason,
            "correlation_id": correlation_id,
            "created_at": datetime.fromisoformat(new["updated_at"]),
            "seal": None,
        }

    def insert_values(self, row: dict[str, Any]) -> dict[str, Any]:
        """A row from :meth:`row` as the driver takes it, for statements of the storage
        layer that insert it (:func:`~flask_tiered_state.storage.transaction.write_with_row`)."""
        if self._time is None:
            return row
        return {**row, "created_at": self._time(row["created_at"])}

    def insert(self, connection: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Insert rows from :meth:`row` on ``connection`` (inside the caller's transaction)."""
        if not rows:
            return
        process, order = self._time, self._positional
        params: list[Any] = []
        for row in rows:
            if process is not None:
                row = {**row, "created_at": process(row["created_at"])}
            params.append(row if order is None else tuple(row[n] for n in order))
        connection.exec_driver_sql(self._insert_sql, params[0] if len(params) == 1 else params)

    # -- queries ---------------------------------------------------------------

    def _select(self, where: Any, *order: Any, limit: int | None = None) -> list[dict[str, Any]]:
        stmt = sa.select(self.table).where(where).order_by(*order)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            return [self._to_dict(row) for row in conn.execute(stmt).mappings()]

    def for_state(self, state_id: str) -> list[dict[str, Any]]:
        """Every row of ``state_id``, oldest version first."""
        t = self.table
        return self._select(t.c.state_id == state_id, t.c.version.asc())

    def page(
        self,
        state_id: str,
        transition: str | None,
        *,
        offset: int,
        limit: int,
        newest_first: bool = False,
    ) -> tuple[list[dict[str, Any]], int]:
        """``limit`` rows of ``state_id`` (of one ``transition``) from ``offset``, oldest
        version first (``newest_first``: newest first), and how many there are in all."""
        t = self.table
        where = t.c.state_id == state_id
        if transition is not None:
            where = sa.and_(where, t.c.transition == transition)
        order = t.c.version.desc() if newest_first else t.c.version.asc()
        stmt = sa.select(t).where(where).order_by(order).limit(limit).offset(offset)
        count = sa.select(sa.func.count()).select_from(t).where(where)
        with self.engine.connect() as conn:
            rows = [self._to_dict(row) for row in conn.execute(stmt).mappings()]
            total = len(rows) + offset if 0 < len(rows) < limit else None
            if total is None:
                total = int(conn.execute(count).scalar_one())
        return rows, total

    def recent(self, state_id: str, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` rows of ``state_id``, newest first."""
        t = self.table
        return self._select(t.c.state_id == state_id, t.c.version.desc(), limit=limit)

    def by_transition(self, state_id: str, transition: str) -> list[dict[str, Any]]:
        """The rows of ``state_id`` with ``transition``, oldest first."""
        t = self.table
        return self._select(
            sa.and_(t.c.state_id == state_id, t.c.transition == transition), t.c.version.asc()
        )

    def latest_query(self, limit: int) -> sa.Select[Any]:
        """The query of :meth:`latest`: insertion order by the primary key, read
        backwards through its index."""
        t = self.table
        return sa.select(*(t.c[n] for n in ACTIVITY_COLUMNS)).order_by(t.c.id.desc()).limit(limit)

    def latest(self, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` rows across all states, newest first, with the
        :data:`ACTIVITY_COLUMNS` only."""
        with self.engine.connect() as conn:
            return [
                {**row, "created_at": _iso(row["created_at"])}
                for row in conn.execute(self.latest_query(limit)).mappings()
            ]

    def records_at(self, state_id: str, versions: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The records (``new_record``) of ``state_id`` at ``versions``."""
        t = self.table
        stmt = sa.select(t.c.version, t.c.new_record).where(
            t.c.state_id == state_id, t.c.version.in_(list(versions))
        )
        with self.engine.connect() as conn:
            return {int(v): dict(rec) for v, rec in conn.execute(stmt)}

    def existing_ids(self, state_ids: Sequence[str]) -> set[str]:
        """The ids among ``state_ids`` that were ever registered (they have a version 1)."""
        t = self.table
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(state_ids), 1000):
                chunk = list(state_ids[start : start + 1000])
                stmt = sa.select(t.c.state_id).where(t.c.state_id.in_(chunk), t.c.version == 1)
                found.update(conn.execute(stmt).scalars())
        return found

    def taken(self, pairs: Sequence[tuple[str, int]]) -> set[tuple[str, int]]:
        """The ``(state_id, version)`` pairs among ``pairs`` that have a row."""
        t = self.table
        wanted = set(pairs)
        found: set[tuple[str, int]] = set()
        ids = sorted({state_id for state_id, _ in wanted})
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 1000):
                stmt = sa.select(t.c.state_id, t.c.version).where(
                    t.c.state_id.in_(ids[start : start + 1000]),
                    t.c.version.in_(sorted({v for _, v in wanted})),
                )
                found.update((s, int(v)) for s, v in conn.execute(stmt) if (s, int(v)) in wanted)
        return found

    def versions(self, state_id: str) -> list[int]:
        """The recorded versions of ``state_id``, ascending."""
        t = self.table
        stmt = sa.select(t.c.version).where(t.c.state_id == state_id).order_by(t.c.version)
        with self.engine.connect() as conn:
            return [int(v) for v in conn.execute(stmt).scalars()]

    def committed(self, state_id: str, version: int, event_id: str) -> bool:
        """Whether the write with ``event_id`` committed its row ``(state_id, version)``:
        how a write whose commit reply was lost finds out what happened.

        A transaction still writing that row may not have ended yet (the server had not
        seen the broken connection); on PostgreSQL the check waits for it: an insert of
        the same ``(state_id, version)`` blocks on the unique index until it commits or
        rolls back (the probe row itself is always rolled back).

        :raises TierUnavailableError: the database does not answer (still unknown).
        """
        t = self.table
        try:
            with (
                self.engine.connect() as connection,
                watched_connection(connection),
                transactional(connection).begin() as transaction,
            ):
                if connection.dialect.name == "postgresql":
                    probe = (
                        postgresql.insert(t)
                        .values(state_id=state_id, version=version, transition="probe",
                                to_status="probe", new_record={}, created_at=sa.func.now())
                        .on_conflict_do_nothing(index_elements=[t.c.state_id, t.c.version])
                        .returning(t.c.id)
                    )  # fmt: skip
                    if connection.execute(probe).first() is not None:
                        transaction.rollback()
                        return False
                found = connection.execute(
                    sa.select(t.c.event_id).where(t.c.state_id == state_id, t.c.version == version)
                ).scalar_one_or_none()
                transaction.rollback()
        except sa.exc.SQLAlchemyError as exc:
            raise TierUnavailableError(
                "warm",
                f"Could not find out whether the change of {state_id!r} to version {version} "
                f"committed: {' '.join(str(exc).split())[:300]}",
            ) from exc
        return found == event_id

    def count(self, state_id: str | None = None) -> int:
        """The number of rows (of one state, or of all)."""
        stmt = sa.select(sa.func.count()).select_from(self.table)
        if state_id is not None:
            stmt = stmt.where(self.table.c.state_id == state_id)
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    @staticmethod
    def _to_dict(row: sa.RowMapping) -> dict[str, Any]:
        return {
            "id": row["id"],
            "state_id": row["state_id"],
            "version": row["version"],
            "transition": row["transition"],
            "from_status": row["from_status"],
            "to_status": row["to_status"],
            "old_record": row["old_record"],
            "new_record": row["new_record"],
            "actor": row["actor"],
            "reason": row["reason"],
            "correlation_id": row["correlation_id"],
            "event_id": row["event_id"],
            "created_at": _iso(row["created_at"]),
        }


def _iso(created: datetime) -> str:
    """A stored time as the records spell times (ISO-8601, UTC, microseconds)."""
    if created.tzinfo is None:  # SQLite keeps no offset; every stored time is UTC
        created = created.replace(tzinfo=timezone.utc)
    return created.astimezone(timezone.utc).isoformat(timespec="microseconds")


def newest_rows(
    connection: sa.Connection, table: sa.Table, state_ids: Sequence[str], *, records: bool = True
) -> list[tuple[Any, ...]]:
    """Each of ``state_ids``' newest history row: ``(state_id, version, new_record)``
    (``(state_id, version)`` without ``records``); states without a row are left out.

    On PostgreSQL each state is one backward probe of the ``(state_id, version)`` index
    (``LATERAL ... ORDER BY version DESC LIMIT 1``), whatever the table's statistics
    say: a ``GROUP BY`` over ``state_id = ANY(...)`` was planned as a sequential scan of
    the whole table once the statistics were stale, which made a restore of n states
    O(n · rows).
    """
    t = table
    ids = list(state_ids)
    if not ids:
        return []
    if connection.dialect.name == "postgresql":
        wanted = (
            sa.func.unnest(sa.bindparam("ids", ids, type_=postgresql.ARRAY(sa.Text)))
            .table_valued("state_id")
            .render_derived(name="wanted")
        )
        columns = [t.c.version, t.c.new_record] if records else [t.c.version]
        newest = (
            sa.select(*columns)
            .where(t.c.state_id == wanted.c.state_id)
            .order_by(t.c.version.desc())
            .limit(1)
            .lateral("newest")
        )
        statement = sa.select(wanted.c.state_id, *newest.c).select_from(
            wanted.join(newest, sa.true())
        )
        return [tuple(row) for row in connection.execute(statement)]
    latest = (
        sa.select(t.c.state_id, sa.func.max(t.c.version).label("version"))
        .where(t.c.state_id.in_(ids))
        .group_by(t.c.state_id)
    )
    if not records:
        return [tuple(row) for row in connection.execute(latest)]
    newest_versions = latest.subquery()
    statement = sa.select(t.c.state_id, t.c.version, t.c.new_record).join(
        newest_versions,
        sa.and_(
            t.c.state_id == newest_versions.c.state_id, t.c.version == newest_versions.c.version
        ),
    )
    return [tuple(row) for row in connection.execute(statement)]

"""The durable record of stale copies a process could not drop, in the WARM database.

A write that makes a copy in a shared tier stale (the Redis HOT copy of a WARM record,
the COLD copy of a HOT home) drops it before it returns. When that tier does not answer
the writer -- Redis is down or partitioned from this process only -- the drop is kept in
the process (readers of this process skip the copy) *and* written here before the write
returns. Every store on the same WARM database replays the journal (on start, when its
HOT tier recovers, and every ``interval`` seconds while its HOT tier is shared): it
deletes the stale copies with the recorded fences and announces the keys, then forgets
the rows. So a process that dies with drops it meant to do leaves nothing behind that
other processes read as current for longer than the replay interval.

Table ``{entries table}_drops``::

    key          VARCHAR(255)   the key whose copy is stale          } primary key
    tier         VARCHAR(8)     hot / cold                           }
    version      BIGINT         the fence: copies below it are stale
    checksum     VARCHAR(64)    } with a checksum: any copy but exactly this one, stored
    written_at   DOUBLE         } before written_at, is stale (a last-writer-wins write)
    recorded_at  DOUBLE         seconds since the epoch
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ...errors import TierUnavailableError
from ..base import StaleCopy, StateCategory

__all__ = ["DropJournal", "define_journal_table"]


def define_journal_table(metadata: sa.MetaData, entries_table: str) -> sa.Table:
    """The journal's table beside ``entries_table`` (the existing one if defined)."""
    name = f"{entries_table}_drops"
    existing = metadata.tables.get(name)
    if existing is not None:
        return existing
    return sa.Table(
        name,
        metadata,
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("tier", sa.String(8), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("checksum", sa.String(64), nullable=True),
        sa.Column("written_at", sa.Double, nullable=False),
        sa.Column("recorded_at", sa.Double, nullable=False),
        comment="flask_tiered_state: stale copies still to be dropped",
    )


class DropJournal:
    """Records, lists and forgets pending drops in the WARM database.

    :param engine: the WARM database's engine.
    :param table: from :func:`define_journal_table`.
    """

    def __init__(self, engine: sa.Engine, table: sa.Table) -> None:
        self.engine = engine
        self.table = table
        insert: Any = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        statement = insert(table)
        excluded = statement.excluded
        self._record = statement.on_conflict_do_update(
            index_elements=[table.c.key, table.c.tier],
            set_={
                "version": excluded.version,
                "checksum": excluded.checksum,
                "written_at": excluded.written_at,
                "recorded_at": excluded.recorded_at,
            },
            where=excluded.recorded_at >= table.c.recorded_at,
        )

    def create(self) -> None:
        self.table.create(self.engine, checkfirst=True)

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except sa.exc.SQLAlchemyError as exc:
            text = " ".join(str(exc).split())[:300]
            raise TierUnavailableError(
                "warm", f"The journal of pending drops could not {what}: {text}"
            ) from exc

    def record(self, tier: StateCategory, fences: Mapping[str, StaleCopy]) -> None:
        """Remember drops of ``tier`` (a key's later record replaces its earlier one)."""
        if not fences:
            return
        now = time.time()
        rows = [
            {"key": k, "tier": tier.value, "version": f.version, "checksum": f.checksum,
             "written_at": f.written_at, "recorded_at": now}
            for k, f in sorted(fences.items())
        ]  # fmt: skip
        with self._guard("record drops"), self.engine.begin() as connection:
            connection.execute(self._record, rows)

    def pending(self, limit: int = 1000) -> dict[StateCategory, dict[str, StaleCopy]]:
        """Up to ``limit`` recorded drops, by tier, oldest first."""
        t = self.table
        query = (
            sa.select(t.c.key, t.c.tier, t.c.version, t.c.checksum, t.c.written_at)
            .order_by(t.c.recorded_at)
            .limit(limit)
        )
        found: dict[StateCategory, dict[str, StaleCopy]] = {}
        with self._guard("be read"), self.engine.connect() as connection:
            for key, tier, version, checksum, written_at in connection.execute(query):
                fence = StaleCopy(int(version), checksum, float(written_at))
                found.setdefault(StateCategory(tier), {})[key] = fence
        return found

    def forget(self, tier: StateCategory, fences: Mapping[str, StaleCopy]) -> None:
        """Forget drops done; a row recorded again since (another fence) stays."""
        if not fences:
            return
        t = self.table
        statement = sa.delete(t).where(
            t.c.key == sa.bindparam("k"),
            t.c.tier == tier.value,
            t.c.version == sa.bindparam("v"),
            t.c.written_at == sa.bindparam("w"),
        )
        rows = [{"k": k, "v": f.version, "w": f.written_at} for k, f in fences.items()]
        with self._guard("forget drops"), self.engine.begin() as connection:
            connection.execute(statement, rows)

    def count(self) -> int:
        with self._guard("be counted"), self.engine.connect() as connection:
            return int(
                connection.execute(sa.select(sa.func.count()).select_from(self.table)).scalar_one()
            )

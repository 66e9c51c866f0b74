"""Durable timers: transitions scheduled for later, applied by the dispatcher.

``schedule_transition(state_id, transition, at=... | after=...)`` stores a row
``(timer_id, state_id, transition, due_at, reason, if_version, status)``. A dispatcher
claims due rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so N dispatchers share them)
and applies each through the normal lifecycle -- guards, validators, history with the
actor ``scheduler`` -- with the idempotency key ``timer:<timer_id>``: the key is
stored in the transition's own transaction, so a dispatcher that dies after applying a
timer and before marking it leaves nothing to apply twice; the next one finds the
stored result and only marks the timer. A timer is applied at most once, never before
``due_at``.

Outcomes: ``applied``; ``skipped`` when ``if_version`` no longer matches the state's
version (it changed since the timer was set) or the state is gone; ``failed`` when the
lifecycle refuses the transition then; ``cancelled``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..errors import InvalidRequestError

__all__ = [
    "DEFAULT_TIMER_TABLE",
    "TIMER_STATUSES",
    "DueTimer",
    "Timers",
    "define_timer_table",
]

DEFAULT_TIMER_TABLE = "tiered_state_timers"
TIMER_STATUSES = ("scheduled", "applied", "skipped", "failed", "cancelled")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def define_timer_table(metadata: sa.MetaData, name: str = DEFAULT_TIMER_TABLE) -> sa.Table:
    """The timers table on ``metadata`` (the existing one if already defined)."""
    existing = metadata.tables.get(name)
    if existing is not None:
        return existing
    return sa.Table(
        name,
        metadata,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("timer_id", sa.String(32), nullable=False),
        sa.Column("state_id", sa.String(200), nullable=False),
        sa.Column("transition", sa.String(32), nullable=False),
        sa.Column("due_at", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("if_version", sa.Integer, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("outcome", sa.Text, nullable=True),
        sa.Index(f"uq_{name}_timer_id", "timer_id", unique=True),
        sa.Index(f"ix_{name}_due", "status", "due_at"),
        sa.Index(f"ix_{name}_state", "state_id"),
    )


@dataclass(frozen=True, slots=True)
class DueTimer:
    """A timer a dispatcher holds."""

    id: int
    timer_id: str
    state_id: str
    transition: str
    due_at: float
    reason: str | None
    if_version: int | None


class Timers:
    """The timers in the WARM database."""

    def __init__(self, engine: sa.Engine, table: sa.Table) -> None:
        self.engine = engine
        self.table = table
        self.postgresql = engine.dialect.name == "postgresql"

    def create(self) -> None:
        self.table.create(self.engine, checkfirst=True)

    def schedule(
        self,
        state_id: str,
        transition: str,
        due_at: float,
        *,
        reason: str | None,
        if_version: int | None,
    ) -> dict[str, Any]:
        row = {
            "timer_id": uuid.uuid4().hex, "state_id": state_id, "transition": transition,
            "due_at": due_at, "reason": reason, "if_version": if_version,
            "status": "scheduled", "created_at": time.time(), "finished_at": None,
            "outcome": None,
        }  # fmt: skip
        with self.engine.begin() as connection:
            connection.execute(self.table.insert(), row)
        return _public(row)

    def cancel(
        self, *, timer_id: str | None = None, state_id: str | None = None,
        transition: str | None = None,
    ) -> int:  # fmt: skip
        """Cancel scheduled timers by id, or of a state (and transition); how many."""
        t = self.table
        where = [t.c.status == "scheduled"]
        if timer_id is not None:
            where.append(t.c.timer_id == timer_id)
        if state_id is not None:
            where.append(t.c.state_id == state_id)
        if transition is not None:
            where.append(t.c.transition == transition)
        if len(where) == 1:
            raise InvalidRequestError("cancel_scheduled needs a timer_id or a state_id.")
        stmt = (
            t.update()
            .where(*where)
            .values(status="cancelled", finished_at=time.time(), outcome="cancelled")
        )
        with self.engine.begin() as connection:
            return int(connection.execute(stmt).rowcount)

    def listing(
        self, *, state_id: str | None = None, status: str | None = "scheduled", limit: int = 100
    ) -> list[dict[str, Any]]:
        """Timers, soonest due first (of one state, of one status; None: every status)."""
        t = self.table
        stmt = sa.select(t)
        if state_id is not None:
            stmt = stmt.where(t.c.state_id == state_id)
        if status is not None:
            if status not in TIMER_STATUSES:
                raise InvalidRequestError(
                    f"Unknown timer status {status!r}; use one of {', '.join(TIMER_STATUSES)}.",
                    details={"status": repr(status), "allowed": list(TIMER_STATUSES)},
                )
            stmt = stmt.where(t.c.status == status)
        stmt = stmt.order_by(t.c.due_at, t.c.id).limit(limit)
        with self.engine.connect() as connection:
            return [_public(dict(row)) for row in connection.execute(stmt).mappings()]

    def claim(self, connection: sa.Connection, limit: int, now: float) -> list[DueTimer]:
        """Lock and return up to ``limit`` due timers, soonest first, in the caller's
        transaction (rows other dispatchers hold are skipped on PostgreSQL)."""
        t = self.table
        stmt = (
            sa.select(t.c.id, t.c.timer_id, t.c.state_id, t.c.transition, t.c.due_at,
                      t.c.reason, t.c.if_version)
            .where(t.c.status == "scheduled", t.c.due_at <= now)
            .order_by(t.c.due_at, t.c.id)
            .limit(limit)
        )  # fmt: skip
        if self.postgresql:
            stmt = stmt.with_for_update(skip_locked=True)
        return [DueTimer(**dict(row)) for row in connection.execute(stmt).mappings()]

    def finish(
        self, connection: sa.Connection, timer: DueTimer, status: str, outcome: str, now: float
    ) -> None:
        t = self.table
        connection.execute(
            t.update()
            .where(t.c.id == timer.id)
            .values(status=status, outcome=outcome[:2000], finished_at=now)
        )

    def prune(self, older_than: float) -> int:
        """Delete finished timers finished before ``older_than``; how many."""
        t = self.table
        stmt = t.delete().where(t.c.status != "scheduled", t.c.finished_at < older_than)
        with self.engine.begin() as connection:
            return int(connection.execute(stmt).rowcount)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "id"}

"""The transactional outbox: what asynchronous callbacks still have to receive.

The history row of a mutation *is* its event (``event_id``, state id, version,
transition, old and new record, actor, reason, correlation id, commit time), written in
the mutation's transaction (invariant 4). For every asynchronous callback registered
for the event's name, the same transaction inserts a *delivery* row:
``(event_id, callback, state_id, version, status, attempts, next_attempt_at, ...)``.
So a committed change has its deliveries, and a change that did not commit has none,
whatever happens to the process after the commit.

A dispatcher (:mod:`.dispatcher`) claims pending deliveries whose time has come and
that have no earlier pending delivery of the same state for the same callback (so each
callback sees a state's events in commit order), runs the callback, and marks the row
``delivered``, or schedules a retry (exponential backoff with jitter), or after the
callback's ``max_attempts`` marks it ``dead``. On PostgreSQL the claim is ``SELECT ..
FOR UPDATE OF deliveries SKIP LOCKED`` inside the transaction that records the outcome,
so any number of dispatchers share the work and a row is claimed by one of them per
attempt; a dispatcher that dies releases its rows with its connection.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..errors import InvalidRequestError
from .callbacks import AsyncCallback, CallbackRegistry, event_name
from .model import StateTransition

__all__ = [
    "DEFAULT_DELIVERY_TABLE",
    "DELIVERY_STATUSES",
    "ClaimedDelivery",
    "Outbox",
    "define_delivery_table",
]

DEFAULT_DELIVERY_TABLE = "tiered_state_deliveries"
#: ``pending`` (waiting for its first or next attempt), ``delivered``, ``dead``.
DELIVERY_STATUSES = ("pending", "delivered", "dead")
#: The longest wait between two attempts, whatever the backoff.
MAX_BACKOFF_SECONDS = 3600.0
#: The partial indexes' condition.
PENDING = sa.text("status = 'pending'")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def define_delivery_table(metadata: sa.MetaData, name: str = DEFAULT_DELIVERY_TABLE) -> sa.Table:
    """The deliveries table on ``metadata`` (the existing one if already defined)."""
    existing = metadata.tables.get(name)
    if existing is not None:
        return existing
    return sa.Table(
        name,
        metadata,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("event", sa.String(120), nullable=False),
        sa.Column("callback", sa.String(300), nullable=False),
        sa.Column("state_id", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.Float, nullable=True),
        sa.Index(f"uq_{name}_event_callback", "event_id", "callback", unique=True),
        sa.Index(f"ix_{name}_due", "status", "next_attempt_at"),
        # the pending rows in delivery order, the claim's scan: small whatever the
        # table holds, and read in order without a sort
        sa.Index(
            f"ix_{name}_pending", "state_id", "callback", "version",
            postgresql_where=PENDING, sqlite_where=PENDING,
        ),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """One delivery a dispatcher holds, with its event."""

    id: int
    event_id: str
    event: str
    callback: str
    state_id: str
    version: int
    attempts: int
    transition: StateTransition
    old_state: dict[str, Any] | None
    new_state: dict[str, Any]
    actor: str | None
    reason: str | None
    correlation_id: str | None
    committed_at: str


def _record(value: Any) -> Any:
    """A JSON column's value as a dict (SQLite may hand back the text)."""
    return json.loads(value) if isinstance(value, str) else value


class Outbox:
    """Writes delivery rows in mutations' transactions and runs the dispatcher's queries.

    :param engine: the WARM database's engine.
    :param table: from :func:`define_delivery_table`.
    :param history: the history table (the events).
    :param callbacks: the registry whose asynchronous callbacks get deliveries.
    """

    def __init__(
        self,
        engine: sa.Engine,
        table: sa.Table,
        history: sa.Table,
        callbacks: CallbackRegistry,
    ) -> None:
        self.engine = engine
        self.table = table
        self.history = history
        self.callbacks = callbacks
        self.postgresql = engine.dialect.name == "postgresql"

    def create(self) -> None:
        self.table.create(self.engine, checkfirst=True)

    # -- in a mutation's transaction --------------------------------------------

    def rows_for(
        self, events: Iterable[tuple[str, str, dict[str, Any], StateTransition]]
    ) -> list[dict[str, Any]]:
        """The delivery rows of ``(event_id, state_type, new_record, transition)``: one
        per asynchronous callback registered for the event's name (none without)."""
        rows: list[dict[str, Any]] = []
        now = time.time()
        for event_id, state_type, new, transition in events:
            name = event_name(state_type, transition)
            for callback in self.callbacks.asynchronous(name):
                rows.append(
                    {
                        "event_id": event_id,
                        "event": name,
                        "callback": callback.key,
                        "state_id": new["state_id"],
                        "version": new["version"],
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "last_error": None,
                        "created_at": now,
                        "delivered_at": None,
                    }
                )
        return rows

    def insert(self, connection: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Insert ``rows`` on the mutation's connection (its transaction)."""
        if rows:
            connection.execute(self.table.insert(), list(rows))

    # -- the dispatcher's side ---------------------------------------------------

    def claim(self, connection: sa.Connection, limit: int, now: float) -> list[ClaimedDelivery]:
        """Lock and return up to ``limit`` due deliveries, oldest first, at most one per
        state and callback (the earliest pending one), inside the caller's transaction.
        On PostgreSQL rows other dispatchers hold are skipped."""
        d, h = self.table, self.history
        # The head of each (state, callback) line: its earliest pending delivery. One
        # ordered scan of the pending rows (their partial index), linear in the backlog
        # whatever the planner's statistics say; a correlated "no earlier pending row"
        # guard was quadratic on a backlog under statistics taken when it was empty.
        position = sa.func.row_number().over(
            partition_by=(d.c.state_id, d.c.callback), order_by=d.c.version
        )
        lines = sa.select(d.c.id, position.label("position")).where(d.c.status == "pending")
        heads = lines.subquery("lines")
        head_ids = sa.select(heads.c.id).where(heads.c.position == 1)
        stmt = (
            sa.select(
                d.c.id, d.c.event_id, d.c.event, d.c.callback, d.c.state_id, d.c.version,
                d.c.attempts, h.c.transition, h.c.old_record, h.c.new_record, h.c.actor,
                h.c.reason, h.c.correlation_id, h.c.created_at,
            )
            .join_from(d, h, h.c.event_id == d.c.event_id)
            .where(d.c.status == "pending", d.c.next_attempt_at <= now, d.c.id.in_(head_ids))
            .order_by(d.c.id)
            .limit(limit)
        )  # fmt: skip
        if self.postgresql:
            stmt = stmt.with_for_update(of=d, skip_locked=True)
        claimed = []
        for row in connection.execute(stmt).mappings():
            created = row["created_at"]
            claimed.append(
                ClaimedDelivery(
                    id=int(row["id"]),
                    event_id=row["event_id"],
                    event=row["event"],
                    callback=row["callback"],
                    state_id=row["state_id"],
                    version=int(row["version"]),
                    attempts=int(row["attempts"]),
                    transition=StateTransition(row["transition"]),
                    old_state=_record(row["old_record"]),
                    new_state=_record(row["new_record"]),
                    actor=row["actor"],
                    reason=row["reason"],
                    correlation_id=row["correlation_id"],
                    committed_at=created if isinstance(created, str) else created.isoformat(),
                )
            )
        return claimed

    def delivered(self, connection: sa.Connection, ids: Sequence[int], now: float) -> None:
        if ids:
            d = self.table
            connection.execute(
                d.update()
                .where(d.c.id.in_(list(ids)))
                .values(status="delivered", attempts=d.c.attempts + 1, delivered_at=now,
                        last_error=None)
            )  # fmt: skip

    def failed(
        self,
        connection: sa.Connection,
        delivery: ClaimedDelivery,
        error: str,
        callback: AsyncCallback | None,
        now: float,
    ) -> bool:
        """Record a failed attempt: a retry after the callback's backoff, or ``dead``
        after its ``max_attempts``. True when the delivery is now dead."""
        attempts = delivery.attempts + 1
        max_attempts = callback.max_attempts if callback is not None else 5
        backoff = callback.backoff if callback is not None else 1.0
        dead = attempts >= max_attempts
        delay = min(backoff * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
        d = self.table
        connection.execute(
            d.update()
            .where(d.c.id == delivery.id)
            .values(
                status="dead" if dead else "pending",
                attempts=attempts,
                last_error=error[:2000],
                next_attempt_at=now + delay * random.uniform(0.5, 1.5),
            )
        )
        return dead

    # -- operations ---------------------------------------------------------------

    def listing(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        """Deliveries, newest first: ``status`` one of :data:`DELIVERY_STATUSES`, or
        ``"failed"`` (pending after a failed attempt); None: every status."""
        d, h = self.table, self.history
        stmt = sa.select(
            d.c.id, d.c.event_id, d.c.event, d.c.callback, d.c.state_id, d.c.version,
            d.c.status, d.c.attempts, d.c.next_attempt_at, d.c.last_error, d.c.created_at,
            d.c.delivered_at, h.c.transition, h.c.correlation_id,
        ).join_from(d, h, h.c.event_id == d.c.event_id, isouter=True)  # fmt: skip
        if status == "failed":
            stmt = stmt.where(d.c.status == "pending", d.c.attempts > 0)
        elif status is not None:
            stmt = stmt.where(d.c.status == check_status(status))
        stmt = stmt.order_by(d.c.id.desc()).limit(limit)
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(stmt).mappings()]

    def counts(self) -> dict[str, int]:
        """How many deliveries are pending, failed (pending after a failure), dead and
        delivered (those kept)."""
        d = self.table
        failed = sa.func.sum(sa.case((sa.and_(d.c.status == "pending", d.c.attempts > 0), 1),
                                     else_=0))  # fmt: skip
        stmt = sa.select(d.c.status, sa.func.count(), failed).group_by(d.c.status)
        found = dict.fromkeys(("pending", "failed", "dead", "delivered"), 0)
        with self.engine.connect() as connection:
            for status, count, failures in connection.execute(stmt):
                found[status] = int(count)
                if status == "pending":
                    found["failed"] = int(failures or 0)
        return found

    def retry(self, ids: Sequence[int] | None = None, *, all_dead: bool = False) -> int:
        """Make dead (or waiting) deliveries due now, with their attempts counted from
        zero again; the number changed."""
        if ids is None and not all_dead:
            raise InvalidRequestError("retry needs delivery ids or all_dead=True.")
        d = self.table
        stmt = d.update().values(status="pending", attempts=0, next_attempt_at=time.time())
        if all_dead:
            stmt = stmt.where(d.c.status == "dead")
        else:
            stmt = stmt.where(d.c.id.in_(list(ids or ())), d.c.status != "delivered")
        with self.engine.begin() as connection:
            return int(connection.execute(stmt).rowcount)

    def prune(self, older_than: float) -> int:
        """Delete delivered rows delivered before ``older_than`` (epoch seconds)."""
        d = self.table
        stmt = d.delete().where(d.c.status == "delivered", d.c.delivered_at < older_than)
        with self.engine.begin() as connection:
            return int(connection.execute(stmt).rowcount)

    def oldest_pending_age(self, now: float) -> float:
        """Seconds since the oldest pending delivery was written (0 with none)."""
        d = self.table
        stmt = sa.select(sa.func.min(d.c.created_at)).where(d.c.status == "pending")
        with self.engine.connect() as connection:
            oldest = connection.execute(stmt).scalar_one_or_none()
        return 0.0 if oldest is None else max(0.0, now - float(oldest))


def check_status(status: object) -> str:
    """``status`` if it is a delivery status or ``failed``, else InvalidRequestError."""
    allowed = (*DELIVERY_STATUSES, "failed")
    if status not in allowed:
        raise InvalidRequestError(
            f"Unknown event status {status!r}; use one of {', '.join(allowed)}.",
            details={"status": repr(status), "allowed": list(allowed)},
        )
    return str(status)

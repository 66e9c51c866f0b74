"""flask_tiered_state: the outbox's deliveries, idempotency keys and durable timers.

Revision ID: ts0003
Revises: ts0002
Create Date: 2026-12-06

The history rows are the events; ``tiered_state_deliveries`` holds what asynchronous
callbacks still have to receive (``domain/outbox.py``), ``tiered_state_idempotency`` the
idempotency keys (``domain/idempotency.py``), ``tiered_state_timers`` the scheduled
transitions (``domain/timers.py``). The history gets an index on ``event_id``, by which
deliveries find their event.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "ts0003"
down_revision: str | None = "ts0002"
branch_labels: tuple[str, ...] | None = None
depends_on: str | None = None

HISTORY = "tiered_state_history"
DELIVERIES = "tiered_state_deliveries"
IDEMPOTENCY = "tiered_state_idempotency"
TIMERS = "tiered_state_timers"
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Tables created by the code at first use may already have them (see
    # ``migrations.upgrade``, which adopts such tables).
    inspector = sa.inspect(op.get_bind())
    if f"ix_{HISTORY}_event" not in {i["name"] for i in inspector.get_indexes(HISTORY)}:
        op.create_index(f"ix_{HISTORY}_event", HISTORY, ["event_id"])
    if not inspector.has_table(DELIVERIES):
        op.create_table(
            DELIVERIES,
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
        )
        op.create_index(f"uq_{DELIVERIES}_event_callback", DELIVERIES, ["event_id", "callback"],
                        unique=True)  # fmt: skip
        op.create_index(f"ix_{DELIVERIES}_due", DELIVERIES, ["status", "next_attempt_at"])
        op.create_index(
            f"ix_{DELIVERIES}_pending", DELIVERIES, ["state_id", "callback", "version"],
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        )  # fmt: skip
    if not inspector.has_table(IDEMPOTENCY):
        op.create_table(
            IDEMPOTENCY,
            sa.Column("key", sa.String(255), primary_key=True),
            sa.Column("operation", sa.String(40), nullable=False),
            sa.Column("fingerprint", sa.String(64), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("token", sa.String(32), nullable=False),
            sa.Column("result", sa.Text, nullable=True),
            sa.Column("locked_until", sa.Float, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("expires_at", sa.Float, nullable=False),
        )
        op.create_index(f"ix_{IDEMPOTENCY}_expires", IDEMPOTENCY, ["expires_at"])
    if not inspector.has_table(TIMERS):
        op.create_table(
            TIMERS,
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
        )
        op.create_index(f"uq_{TIMERS}_timer_id", TIMERS, ["timer_id"], unique=True)
        op.create_index(f"ix_{TIMERS}_due", TIMERS, ["status", "due_at"])
        op.create_index(f"ix_{TIMERS}_state", TIMERS, ["state_id"])


def downgrade() -> None:
    op.drop_table(TIMERS)
    op.drop_table(IDEMPOTENCY)
    op.drop_table(DELIVERIES)
    op.drop_index(f"ix_{HISTORY}_event", table_name=HISTORY)

"""flask_tiered_state: history rows carry their write's event id; the pending drops journal.

Revision ID: ts0002
Revises: ts0001
Create Date: 2026-12-06

``event_id`` identifies the write that inserted a history row: a write whose commit
reply was lost looks for its own row to find out whether it committed. The journal
(``tiered_state_entries_drops``) keeps the stale copies a process could not drop, so
that they are dropped even if that process dies (``storage/sql/journal.py``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "ts0002"
down_revision: str | None = "ts0001"
branch_labels: tuple[str, ...] | None = None
depends_on: str | None = None

HISTORY = "tiered_state_history"
DROPS = "tiered_state_entries_drops"


def upgrade() -> None:
    # Tables created by the code at first use may already have them (see
    # ``migrations.upgrade``, which adopts such tables).
    inspector = sa.inspect(op.get_bind())
    if "event_id" not in {c["name"] for c in inspector.get_columns(HISTORY)}:
        op.add_column(HISTORY, sa.Column("event_id", sa.String(32), nullable=True))
    if inspector.has_table(DROPS):
        return
    op.create_table(
        DROPS,
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("tier", sa.String(8), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("checksum", sa.String(64), nullable=True),
        sa.Column("written_at", sa.Double, nullable=False),
        sa.Column("recorded_at", sa.Double, nullable=False),
        comment="flask_tiered_state: stale copies still to be dropped",
    )


def downgrade() -> None:
    op.drop_table(DROPS)
    with op.batch_alter_table(HISTORY) as batch:
        batch.drop_column("event_id")

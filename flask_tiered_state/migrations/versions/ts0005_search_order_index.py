"""flask_tiered_state: the WARM table's index in search order (PostgreSQL).

Revision ID: ts0005
Revises: ts0004
Create Date: 2026-12-07

``ix_tiered_state_entries_newest`` on ``((document ->> 'updated_at') DESC, key)``: a
search's first page walks it newest first and stops at the page's end, instead of
sorting every match. Building it blocks writes to the table while it runs (tens of
seconds per million states), here or, when a process starts before this revision is
applied, at that process's start. Not ``CONCURRENTLY``: that cannot run inside the
migration's transaction, which an app's own ``env.py`` may hold. On a large table that
must keep taking writes, build it by hand first (``migrations.upgrade`` then finds it)::

    CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_tiered_state_entries_newest
        ON tiered_state_entries (((document ->> 'updated_at')) DESC, key);
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "ts0005"
down_revision: str | None = "ts0004"
branch_labels: tuple[str, ...] | None = None
depends_on: str | None = None

ENTRIES = "tiered_state_entries"
INDEX = f"ix_{ENTRIES}_newest"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index(
        INDEX, ENTRIES, [sa.text("(document ->> 'updated_at') DESC"), "key"], if_not_exists=True
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index(INDEX, ENTRIES, if_exists=True)

"""flask_tiered_state: per-state data keys (field encryption) and history seals (audit).

Revision ID: ts0004
Revises: ts0003
Create Date: 2026-12-06

``tiered_state_data_keys`` holds each state's data key wrapped by a master key
(``domain/data_keys.py``); the history gets ``seal``, the HMAC seal of each row
(``domain/audit.py``), NULL for rows written before (``flask state audit seal``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "ts0004"
down_revision: str | None = "ts0003"
branch_labels: tuple[str, ...] | None = None
depends_on: str | None = None

HISTORY = "tiered_state_history"
DATA_KEYS = "tiered_state_data_keys"


def upgrade() -> None:
    # Tables created by the code at first use may already have them (see
    # ``migrations.upgrade``, which adopts such tables).
    inspector = sa.inspect(op.get_bind())
    if "seal" not in {c["name"] for c in inspector.get_columns(HISTORY)}:
        op.add_column(HISTORY, sa.Column("seal", sa.Text, nullable=True))
    if not inspector.has_table(DATA_KEYS):
        op.create_table(
            DATA_KEYS,
            sa.Column("state_id", sa.String(200), primary_key=True),
            sa.Column("wrapped_key", sa.Text, nullable=True),
            sa.Column("master_key_id", sa.String(16), nullable=True),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("erased_at", sa.Float, nullable=True),
        )


def downgrade() -> None:
    op.drop_table(DATA_KEYS)
    with op.batch_alter_table(HISTORY) as batch:
        batch.drop_column("seal")

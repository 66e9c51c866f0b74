"""flask_tiered_state: the WARM tier's entries table and the history table.

Revision ID: ts0001
Revises:
Create Date: 2024-11-22

A frozen copy of the definitions in ``storage/sql/schema.py`` and
``domain/history.py`` at this revision; ``tests/flask/test_migrations.py`` fails when
the code's tables and the migrated schema differ, so a change to either needs a new
revision here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "ts0001"
down_revision: str | None = None
branch_labels = ("tiered_state",)
depends_on: str | None = None

ENTRIES = "tiered_state_entries"
HISTORY = "tiered_state_history"

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_DOCUMENT_SQL = "CASE WHEN strpos(value, '\\u0000') = 0 THEN value::jsonb END"


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    extra: list[sa.schema.SchemaItem] = []
    if pg:
        extra.append(
            sa.Column("document", postgresql.JSONB, sa.Computed(_DOCUMENT_SQL, persisted=True))
        )
    else:
        extra.append(sa.CheckConstraint("json_valid(value)", name=f"ck_{ENTRIES}_json"))
    op.create_table(
        ENTRIES,
        sa.Column("key", sa.String(255, collation="C" if pg else None), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("stored_at", sa.Double, nullable=False),
        sa.Column("last_accessed", sa.Double, nullable=False),
        sa.Column("ttl_seconds", sa.Integer, nullable=True),
        sa.Column("expires_at", sa.Double, nullable=True),
        *extra,
        comment="flask_tiered_state WARM tier: JSON values under keys",
    )
    if pg:
        op.create_index(
            f"ix_{ENTRIES}_document",
            ENTRIES,
            ["document"],
            postgresql_using="gin",
            postgresql_ops={"document": "jsonb_path_ops"},
        )
    has_expiry = sa.text("expires_at IS NOT NULL")
    op.create_index(
        f"ix_{ENTRIES}_expires_at",
        ENTRIES,
        ["expires_at"],
        postgresql_where=has_expiry,
        sqlite_where=has_expiry,
    )

    op.create_table(
        HISTORY,
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
    )
    op.create_index(f"uq_{HISTORY}_state_version", HISTORY, ["state_id", "version"], unique=True)
    op.create_index(f"ix_{HISTORY}_state_created", HISTORY, ["state_id", "created_at"])
    op.create_index(f"ix_{HISTORY}_state_transition", HISTORY, ["state_id", "transition"])


def downgrade() -> None:
    op.drop_table(HISTORY)
    op.drop_table(ENTRIES)

"""The SQL backend of the WARM tier (PostgreSQL through psycopg 3, SQLite): repository,
schema, statements, engines, and the journal of pending drops."""

from __future__ import annotations

from .repository import SQLStateRepository, SQLUnitOfWork

__all__ = ["SQLStateRepository", "SQLUnitOfWork"]

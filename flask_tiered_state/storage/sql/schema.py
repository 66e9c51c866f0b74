"""The WARM tier's table, and its statements compiled once per repository.

The table (default name ``tiered_state_entries``)::

    key            VARCHAR(255) PRIMARY KEY   -- COLLATE "C" on PostgreSQL: bytewise, so
                                              -- ORDER BY and LIKE 'prefix%' use the index
    value          TEXT        the exact JSON text; the sha256 checksum covers these bytes
    document       JSONB       PostgreSQL only: GENERATED ALWAYS AS (value::jsonb) STORED,
                               GIN index (jsonb_path_ops)
    checksum       VARCHAR(64) sha256 hex of value's UTF-8 bytes
    size           BIGINT      bytes of value
    version        BIGINT
    category       VARCHAR(16) hot / warm / cold
    stored_at      DOUBLE      seconds since the epoch (UTC), as StateMetadata.stored_at
    last_accessed  DOUBLE      same clock; maintained on writes (see SQLStateRepository)
    ttl_seconds    INTEGER     NULL: no expiry
    expires_at     DOUBLE      NULL: no expiry; expired rows read as absent

Timestamps are float epoch seconds rather than ``timestamptz``: they are what
:class:`~flask_tiered_state.storage.base.StateMetadata` carries, compare the same
way on both dialects and need no conversion on the read path.

Why a stored generated column for the document: ``value`` must stay byte-exact for
the checksum, and jsonb normalises (key order, whitespace, duplicate keys), so the
text cannot be replaced by jsonb. A generated column costs the jsonb copy on disk
and one parse per write, and the database keeps it in step with ``value``; in
exchange searches read binary jsonb without re-parsing text per row and the GIN
index serves containment (``@>``) queries. The alternatives, an expression index on
``value::jsonb`` or casting at query time, save the storage but re-serialise the
text on every row a search touches. jsonb cannot hold the escape ``\\u0000``
(U+0000); a value containing it gets a NULL document, stays storable and readable,
and is invisible to document searches on PostgreSQL. On SQLite the JSON1 functions
work on the text itself and a CHECK (``json_valid(value)``) keeps both dialects
refusing the same non-JSON values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.compiler import SQLCompiler

from ...errors import ConfigurationError

__all__ = [
    "COLUMNS",
    "NEWEST_SQL",
    "DriverSQL",
    "Statements",
    "build_table",
    "compile_sql",
    "validate_table_name",
    "with_row_insert",
]

#: Columns every dialect's table has (PostgreSQL adds ``document``).
COLUMNS = (
    "key",
    "value",
    "checksum",
    "size",
    "version",
    "category",
    "stored_at",
    "last_accessed",
    "ttl_seconds",
    "expires_at",
)
_TABLE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")
_DOCUMENT_SQL = "CASE WHEN strpos(value, '\\u0000') = 0 THEN value::jsonb END"
#: The first column of the search order's index (PostgreSQL): what a search sorts by.
NEWEST_SQL = "(document ->> 'updated_at') DESC"


def validate_table_name(name: object) -> str:
    if isinstance(name, str) and _TABLE_NAME_RE.fullmatch(name):
        return name
    raise ConfigurationError(
        f"table_name {name!r} is not allowed; use 1 to 48 characters from letters, digits "
        "and _, not starting with a digit (index names derive from it)."
    )


def build_table(name: str, metadata: sa.MetaData, dialect_name: str) -> sa.Table:
    """The table for ``dialect_name``, or the one of that name already in ``metadata``."""
    existing = metadata.tables.get(name)
    if existing is not None:
        missing = [c for c in COLUMNS if c not in existing.c]
        if missing:
            raise ConfigurationError(
                f"The MetaData already holds a table {name!r} without the columns "
                f"{', '.join(missing)}; pass another table_name."
            )
        return existing
    pg = dialect_name == "postgresql"
    table = sa.Table(
        name,
        metadata,
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
        comment="flask_tiered_state WARM tier: JSON values under keys",
    )
    if pg:
        table.append_column(
            sa.Column("document", postgresql.JSONB, sa.Computed(_DOCUMENT_SQL, persisted=True))
        )
        sa.Index(
            f"ix_{name}_document",
            table.c.document,
            postgresql_using="gin",
            postgresql_ops={"document": "jsonb_path_ops"},
        )
        # A search's first page in its own order (newest first, then key): walked from the
        # start, it stops at the page's end instead of sorting every match.
        sa.Index(f"ix_{name}_newest", sa.text(NEWEST_SQL), table.c.key)
    else:
        table.append_constraint(sa.CheckConstraint("json_valid(value)", name=f"ck_{name}_json"))
    has_expiry = table.c.expires_at.is_not(None)
    sa.Index(
        f"ix_{name}_expires_at",
        table.c.expires_at,
        postgresql_where=has_expiry,
        sqlite_where=has_expiry,
    )
    return table


@dataclass(frozen=True, slots=True)
class DriverSQL:
    """A statement compiled to the driver's SQL text, run without SQLAlchemy's compiler."""

    sql: str
    #: Parameter names, in placeholder order for positional paramstyles.
    names: tuple[str, ...]
    positional: bool
    #: True for SELECTs and statements with RETURNING.
    returns_rows: bool
    #: Values of binds SQLAlchemy made for literals in the statement.
    defaults: Mapping[str, Any]

    def params(self, values: Mapping[str, Any]) -> Any:
        """The driver's parameters (a tuple or a dict) taken from ``values`` by name."""
        merged = {**self.defaults, **values} if self.defaults else values
        if self.positional:
            return tuple([merged[name] for name in self.names])
        return {name: merged[name] for name in self.names}


def compile_sql(statement: sa.ClauseElement, dialect: sa.Dialect) -> DriverSQL:
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    rendered = compiled.bind_names  # BindParameter -> its name in the SQL text
    defaults = {name: bind.value for bind, name in rendered.items() if not bind.required}
    rows = isinstance(statement, sa.SelectBase) or bool(compiled.effective_returning)
    if dialect.positional:
        names = tuple(compiled.positiontup or ())
    else:
        names = tuple(dict.fromkeys(rendered.values()))
    return DriverSQL(compiled.string, names, dialect.positional, rows, defaults)


def _bind(name: str, type_: Any = sa.String) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=type_, required=True)


class Statements:
    """Every statement the repository runs, compiled once for one table and dialect.

    Key lists travel as one parameter (a PostgreSQL array, a JSON array for SQLite's
    ``json_each``), so no statement ever approaches a bind-parameter limit and one
    compiled text serves every batch size.
    """

    def __init__(self, table: sa.Table, dialect: sa.Dialect) -> None:
        self.table = table
        self.postgresql = dialect.name == "postgresql"
        c = table.c
        now = _bind("now", sa.Double)
        live = sa.or_(c.expires_at.is_(None), c.expires_at > now)
        if self.postgresql:
            in_keys = c.key == sa.any_(_bind("keys", postgresql.ARRAY(sa.String)))
            match = c.key.like(_bind("pattern"), escape="\\")
            insert: Any = postgresql.insert
        else:
            in_keys = c.key.in_(
                sa.select(sa.literal_column("value")).select_from(sa.func.json_each(_bind("keys")))
            )
            match = c.key.op("GLOB")(_bind("pattern"))  # GLOB: case-sensitive, unlike LIKE
            insert = sqlite.insert
        read_columns = [c.value, c.checksum, c.size, c.version, c.category, c.stored_at]
        read_columns.append(c.ttl_seconds)

        def run(statement: sa.ClauseElement) -> DriverSQL:
            return compile_sql(statement, dialect)

        self.fetch = run(sa.select(*read_columns).where(c.key == _bind("key"), live))
        self.fetch_many = run(sa.select(c.key, *read_columns).where(in_keys, live))
        self.current_version = run(sa.select(c.version).where(c.key == _bind("key"), live))
        self.versions = run(sa.select(c.key, c.version).where(in_keys))
        row = {name: _bind(name, c[name].type) for name in COLUMNS}
        values = insert(table).values(row)
        excluded = values.excluded
        expired = sa.and_(c.expires_at.is_not(None), c.expires_at <= excluded.stored_at)
        next_version = sa.case(
            (expired, sa.literal_column("1")), else_=c.version + sa.literal_column("1")
        )
        changes = {n: excluded[n] for n in COLUMNS if n not in ("key", "version")}
        upserts = {
            explicit: values.on_conflict_do_update(
                index_elements=[c.key],
                set_={**changes, "version": excluded.version if explicit else next_version},
            )
            for explicit in (False, True)
        }
        #: [explicit version?] -> INSERT .. ON CONFLICT DO UPDATE .. RETURNING version
        self.upsert = {e: run(s.returning(c.version)) for e, s in upserts.items()}
        #: The same without RETURNING, for executemany.
        self.upsert_many = {e: run(s) for e, s in upserts.items()}
        # expected_version=0: insert, or take over an expired row; a live row -> no row back.
        self.insert_absent = run(
            values.on_conflict_do_update(
                index_elements=[c.key],
                set_={**changes, "version": excluded.version},
                where=expired,
            ).returning(c.version)
        )
        update_values = {n: row[n] for n in COLUMNS if n not in ("key", "version")}
        self.update_expected = {
            explicit: run(
                sa.update(table)
                .where(c.key == row["key"], c.version == _bind("expected", sa.BigInteger), live)
                .values(
                    **update_values,
                    version=row["version"] if explicit else c.version + sa.literal_column("1"),
                )
                .returning(c.version)
            )
            for explicit in (False, True)
        }
        self.delete = run(sa.delete(table).where(c.key == _bind("key")).returning(c.expires_at))
        self.delete_many = run(sa.delete(table).where(in_keys).returning(c.expires_at))
        self.purge_expired = run(sa.delete(table).where(c.expires_at <= now))
        self.touch = run(sa.update(table).where(in_keys, live).values(last_accessed=now))
        self.keys_page = run(
            sa.select(c.key)
            .where(match, c.key > _bind("after"), live)
            .order_by(c.key)
            .limit(_bind("limit", sa.Integer))
        )
        count_live = sa.func.count(sa.case((live, sa.literal_column("1"))))
        bytes_live = sa.func.coalesce(sa.func.sum(sa.case((live, c.size))), 0)
        self.stats = run(sa.select(count_live, bytes_live, sa.func.count()).select_from(table))
        self.ping = run(sa.select(sa.literal_column("1")))
        #: A copy's upsert: written only where the key is absent, expired or older.
        self.upsert_copy = run(
            values.on_conflict_do_update(
                index_elements=[c.key],
                set_={**changes, "version": excluded.version},
                where=sa.or_(c.version < excluded.version, expired),
            )
        )
        self.copy_versions = run(sa.select(c.key, c.version, c.checksum).where(in_keys, live))
        self._conditional_deletes(table, dialect)

        if self.postgresql:
            self._bulk_load(table, dialect)

    def _conditional_deletes(self, table: sa.Table, dialect: sa.Dialect) -> None:
        """The compare-and-delete statements: the keys of a batch with a version and
        checksum each, joined to the table through its primary key (one statement per
        chunk; rows of other keys are never looked at)."""
        target = dialect.identifier_preparer.format_table(table)
        unchanged = "t.version = d.version AND t.checksum = d.checksum"
        stale = (
            "((d.checksum IS NULL AND t.version < d.version) OR (d.checksum IS NOT NULL AND "
            "t.stored_at < d.written_at AND (t.version <> d.version OR t.checksum <> d.checksum)))"
        )
        if self.postgresql:
            source = (
                "unnest(%(keys)s::text[], %(versions)s::bigint[], %(checksums)s::text[], "
                "%(written_ats)s::float8[]) AS d(key, version, checksum, written_at)"
            )

            def delete(condition: str, returning: str) -> DriverSQL:
                sql = (
                    f"DELETE FROM {target} AS t USING {source} "
                    f'WHERE t.key = d.key COLLATE "C" AND {condition} RETURNING {returning}'
                )
                names = ("keys", "versions", "checksums", "written_ats")
                return DriverSQL(sql, names, False, True, {})

        else:
            source = (
                "(SELECT json_extract(value, '$[0]') AS key, json_extract(value, '$[1]') "
                "AS version, json_extract(value, '$[2]') AS checksum, json_extract(value, "
                "'$[3]') AS written_at FROM json_each(?)) AS d"
            )

            def delete(condition: str, returning: str) -> DriverSQL:
                sql = (
                    f"DELETE FROM {target} WHERE rowid IN (SELECT t.rowid FROM {source} "
                    f"JOIN {target} AS t ON t.key = d.key WHERE {condition}) "
                    f"RETURNING {returning.removeprefix('t.')}"
                )
                return DriverSQL(sql, ("items",), True, True, {})

        #: Deletes the rows still at exactly (version, checksum); returns their keys.
        self.delete_unchanged = delete(unchanged, "t.key")
        #: Deletes the rows a StaleCopy fence calls stale; returns their expiry.
        self.delete_stale = delete(stale, "t.expires_at")

    def fence_params(self, items: Sequence[tuple[str, int, str | None, float]]) -> dict[str, Any]:
        """``(key, version, checksum, written_at)`` of each key (a :class:`StaleCopy`, or
        a copy with its checksum) as the conditional deletes' parameters."""
        if self.postgresql:
            return {
                "keys": [k for k, _, _, _ in items],
                "versions": [v for _, v, _, _ in items],
                "checksums": [c for _, _, c, _ in items],
                "written_ats": [w for _, _, _, w in items],
            }
        return {"items": json.dumps([list(item) for item in items])}

    def _bulk_load(self, table: sa.Table, dialect: sa.Dialect) -> None:
        """PostgreSQL + psycopg: COPY into a session temp table, then one merge per
        version mode (the measured fastest batch write; see SQLStateRepository)."""
        target = dialect.identifier_preparer.format_table(table)
        load = dialect.identifier_preparer.quote(f"_tsl_{table.name}")
        #: Key in a pooled connection's ``info`` once its session has the load table.
        self.load_table_ready = f"flask_tiered_state.load_table:{load}"
        self.create_load_table = (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {load} (key text, value text, checksum text, "
            "size bigint, version bigint, ttl_seconds integer, expires_at double precision) "
            "ON COMMIT DELETE ROWS"
        )
        self.copy_load = (
            f"COPY {load} (key, value, checksum, size, version, ttl_seconds, expires_at) FROM STDIN"
        )
        changes = ", ".join(f"{n} = EXCLUDED.{n}" for n in COLUMNS if n not in ("key", "version"))
        auto = (
            "CASE WHEN t.expires_at IS NOT NULL AND t.expires_at <= EXCLUDED.stored_at "
            "THEN 1 ELSE t.version + 1 END"
        )
        # The DELETE .. RETURNING feeds the merge and empties the load table in the same
        # statement, so a second batch in one transaction never sees the first one's rows.
        self.merge_load = {
            explicit: (
                f"WITH src AS (DELETE FROM {load} WHERE version IS {'NOT ' if explicit else ''}"
                f"NULL RETURNING *) INSERT INTO {target} AS t ({', '.join(COLUMNS)}) "
                "SELECT key, value, checksum, size, coalesce(version, 1), %(category)s, "
                "%(now)s, %(now)s, ttl_seconds, expires_at FROM src "
                f"ON CONFLICT (key) DO UPDATE SET {changes}, "
                f"version = {'EXCLUDED.version' if explicit else auto} RETURNING t.key, t.version"
            )
            for explicit in (False, True)
        }

        # Compare-and-set of a batch (a transaction writing many states): one statement per
        # kind, the rows as arrays. What ``update_expected`` and ``insert_absent`` do for
        # one key; a key whose row did not match is not returned (the caller then takes
        # the one-key path for it, which names the conflict or follows a tier move).
        # (A JSON document, not arrays: psycopg escapes each element of a text array with
        # a regular expression, which cost more than the statement for JSON values.)
        rows = (
            "json_to_recordset(%(rows)s::json) AS d(key text, value text, checksum text, "
            "size bigint, version bigint, expected bigint, ttl_seconds integer, "
            "expires_at float8)"
        )
        self.update_expected_batch = (
            f"UPDATE {target} AS t SET value = d.value, checksum = d.checksum, size = d.size, "
            "version = coalesce(d.version, t.version + 1), category = %(category)s, "
            "stored_at = %(now)s, last_accessed = %(now)s, ttl_seconds = d.ttl_seconds, "
            f"expires_at = d.expires_at FROM {rows} "
            'WHERE t.key = d.key COLLATE "C" AND t.version = d.expected '
            "AND (t.expires_at IS NULL OR t.expires_at > %(now)s) RETURNING t.key, t.version"
        )
        self.insert_absent_batch = (
            f"INSERT INTO {target} AS t ({', '.join(COLUMNS)}) "
            "SELECT d.key, d.value, d.checksum, d.size, coalesce(d.version, 1), %(category)s, "
            f"%(now)s, %(now)s, d.ttl_seconds, d.expires_at FROM {rows} ORDER BY d.key "
            f"ON CONFLICT (key) DO UPDATE SET {changes}, version = EXCLUDED.version "
            "WHERE t.expires_at IS NOT NULL AND t.expires_at <= EXCLUDED.stored_at "
            "RETURNING t.key, t.version"
        )

    def key_list(self, keys: Sequence[str]) -> Any:
        """``keys`` as the value of the ``keys`` parameter."""
        return list(keys) if self.postgresql else json.dumps(list(keys))


def with_row_insert(
    update: DriverSQL, rows: Sequence[tuple[sa.Table, Sequence[str]]], dialect: sa.Dialect
) -> DriverSQL:
    """PostgreSQL: ``update`` (a compare-and-set UPDATE .. RETURNING version) and, for
    each ``(table, columns)`` of ``rows``, an INSERT of one row that runs only if the
    UPDATE matched, as ONE statement (data-modifying CTEs): all happen or none does.
    The values of row ``i`` are the parameters ``row<i>_<column>``; the statement
    returns the new version, or no row.
    """
    quote = dialect.identifier_preparer.quote
    inserts = []
    names = list(update.names)
    for index, (table, columns) in enumerate(rows):
        casts = []
        for name in columns:
            type_ = table.c[name].type
            # Unsized casts: an explicit cast to VARCHAR(n) would truncate silently, where
            # the assignment to the column raises on a value too long, as a plain INSERT does.
            type_sql = "VARCHAR" if isinstance(type_, sa.String) else type_.compile(dialect=dialect)
            casts.append(f"%(row{index}_{name})s::{type_sql}")
            names.append(f"row{index}_{name}")
        inserts.append(
            f", r{index} AS (INSERT INTO {dialect.identifier_preparer.format_table(table)} "
            f"({', '.join(quote(n) for n in columns)}) SELECT {', '.join(casts)} FROM u)"
        )
    sql = f"WITH u AS ({update.sql}){''.join(inserts)} SELECT version FROM u"
    return DriverSQL(sql, tuple(names), False, True, update.defaults)

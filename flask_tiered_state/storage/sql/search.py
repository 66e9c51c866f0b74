"""Searching the WARM table's JSON documents where they are (:class:`~..base.DocumentSearch`).

- PostgreSQL: every equality of a query becomes one containment test,
  ``document @> '{"type": "user", "data": {"status": "active"}}'``, which the GIN
  ``jsonb_path_ops`` index of the table serves.
- SQLite: ``json_type`` / ``json_extract`` per equality, so ``1`` never equals
  ``true`` or ``"1"``, as on PostgreSQL.

Field names and the key prefix reach the SQL text as literals, not bound parameters:
a prepared statement's generic plan could not match a bound name with the index
expression, nor see that the key range spans every document.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ...errors import InvalidRequestError
from ..base import DocumentQuery
from .execution import transactional

__all__ = ["DocumentSearcher"]

_FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_:.\-]{0,200}")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_\-]{1,100}")


def _literal(text: str) -> Any:
    """A checked string (no quote in it) as a literal of the SQL text."""
    assert "'" not in text and "\\" not in text, text
    return sa.literal_column(f"'{text}'", sa.String)


def _check_field(name: object) -> str:
    if not isinstance(name, str) or not _FIELD_RE.fullmatch(name):
        raise InvalidRequestError(
            f"Invalid document field {name!r}: a top-level field is a name of letters, "
            "digits and _ (not starting with a digit).",
            details={"field": repr(name)},
        )
    return name


class DocumentSearcher:
    """Runs :class:`~..base.DocumentQuery` searches on one table of a SQL repository.

    :param engine: the repository's engine.
    :param table: its table (``key``, ``value``, ``document`` on PostgreSQL).
    :param document: the stored document as a JSON expression.
    :param live: a WHERE clause keeping values that have not expired, built per query.
    """

    def __init__(
        self,
        engine: sa.Engine,
        table: sa.Table,
        document: Any,
        live: Callable[[], sa.ColumnElement[bool]],
    ) -> None:
        self.engine = engine
        self.table = table
        self.postgresql = engine.dialect.name == "postgresql"
        self.document = document
        self.live = live

    def search(
        self,
        query: DocumentQuery,
        *,
        newest_by: str,
        offset: int,
        limit: int,
        count_limit: int | None = None,
    ) -> tuple[list[str], int]:
        conditions = self._conditions(query)
        c = self.table.c
        # One statement, one snapshot: the page's keys (newest first: the (newest_by
        # DESC, key) index on PostgreSQL walks them in order and stops at the page's end),
        # the count beside them, and the page's values read back by key. The count stops
        # after count_limit + 1 matches, so that a first page costs the same over a
        # thousand states or a million; counting every match was most of its time.
        newest = self._field(newest_by).label("newest")
        page = (
            sa.select(c.key, newest)
            .where(*conditions)
            .order_by(newest.desc(), c.key.asc())
            .limit(limit)
            .offset(offset)
            .cte("page")
        )
        matching: sa.Select[Any] = sa.select(sa.literal_column("1").label("one")).where(*conditions)
        if count_limit is not None:
            matching = matching.limit(count_limit + 1)
        counted = sa.select(sa.func.count().label("total")).select_from(
            matching.subquery("matching")
        )
        counted_cte = counted.cte("counted")
        found = self.table.alias("found")
        rows_stmt = (
            sa.select(found.c.value, counted_cte.c.total)
            .select_from(
                counted_cte.outerjoin(page.join(found, found.c.key == page.c.key), sa.true())
            )
            .order_by(page.c.newest.desc(), page.c.key.asc())
        )
        with self._connect() as conn:
            rows = list(conn.execute(rows_stmt).all())
        total = int(rows[0][1])
        return [value for value, _ in rows if value is not None], total

    def count(self, query: DocumentQuery, group_by: Sequence[str]) -> list[tuple[Any, ...]]:
        columns = [self._field(name) for name in group_by]
        conditions = self._conditions(query)
        if not columns:
            stmt = sa.select(sa.func.count()).select_from(self.table).where(*conditions)
            with self._connect() as conn:
                return [(int(conn.execute(stmt).scalar_one()),)]
        # By position: PostgreSQL would take the two ``document ->> $n`` of the select
        # list and of GROUP BY for different expressions.
        positions: list[Any] = [sa.literal_column(str(n)) for n in range(1, len(columns) + 1)]
        stmt = sa.select(*columns, sa.func.count()).where(*conditions).group_by(*positions)
        with self._connect() as conn:
            return [(*row[:-1], int(row[-1])) for row in conn.execute(stmt)]

    # -- building the WHERE clause ----------------------------------------------------

    def _field(self, name: str) -> Any:
        """A top-level text field of the document, its name a literal of the SQL text."""
        _check_field(name)
        if self.postgresql:
            return sa.type_coerce(self.document.op("->>")(_literal(name)), sa.Text)
        return sa.func.json_extract(self.document, _literal(f"$.{name}"))

    def _conditions(self, query: DocumentQuery) -> list[Any]:
        if not isinstance(query, DocumentQuery):
            raise InvalidRequestError(f"A search takes a DocumentQuery, not {query!r}.")
        for segments, _ in query.equal:
            if not segments or not all(
                isinstance(s, str) and _SEGMENT_RE.fullmatch(s) for s in segments
            ):
                raise InvalidRequestError(
                    f"Invalid document path {segments!r}: object keys of letters, digits, "
                    "_ and - (1 to 100 characters each).",
                    details={"path": repr(segments)},
                )
        conditions: list[Any] = [*self._key_range(query.key_prefix), self.live()]
        conditions += [self._field(name) != text for name, text in query.not_equal]
        conditions += [self._field(name).in_(list(texts)) for name, texts in query.one_of]
        if not query.equal:
            return conditions
        if self.postgresql:
            contained = _containment(query.equal)
            if contained is None:
                return [sa.false()]
            conditions.append(sa.type_coerce(self.document, postgresql.JSONB).contains(contained))
            return conditions
        for segments, value in query.equal:
            path = "$" + "".join(f'."{s}"' for s in segments)
            kind = sa.func.json_type(self.document, path)
            extracted = sa.func.json_extract(self.document, path)
            if value is None:
                conditions.append(kind == "null")
            elif isinstance(value, bool):
                conditions.append(kind == ("true" if value else "false"))
            elif isinstance(value, str):
                conditions.append(sa.and_(kind == "text", extracted == value))
            else:
                conditions.append(sa.and_(kind.in_(("integer", "real")), extracted == value))
        return conditions

    def _key_range(self, prefix: str) -> list[Any]:
        if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
            raise InvalidRequestError(
                f"Invalid key prefix {prefix!r}: letters, digits and _ : . - (at most 200)."
            )
        if not prefix:
            return []
        # The first string after every string that starts with the prefix.
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        c = self.table.c
        return [c.key >= _literal(prefix), c.key < _literal(end)]

    def _connect(self) -> sa.Connection:
        """A connection whose queries are planned for their values every time.

        psycopg prepares a statement on its sixth run on a connection, and PostgreSQL may
        then switch to a generic plan, blind to the filter's selectivity (a scan of every
        state by key instead of the GIN index). A search runs in a transaction that ends
        in ``ROLLBACK`` when the connection is closed, and psycopg forgets what it
        counted and prepared on every rollback: a search is never prepared, with no
        driver setting changed. An engine whose connections run in AUTOCOMMIT isolation
        has no transaction to roll back; the search gets one (see :func:`.transactional`).
        """
        connection = self.engine.connect()
        try:
            return transactional(connection)
        except BaseException:
            connection.close()
            raise


def _containment(equal: Sequence[tuple[tuple[str, ...], Any]]) -> dict[str, Any] | None:
    """The JSON object every matching document contains, or None when no document can
    match (``a`` = 1 and ``a.b`` = 2, or ``a`` = 1 and ``a`` = 2)."""
    contained: dict[str, Any] = {}
    for segments, value in equal:
        node = contained
        for segment in segments[:-1]:
            child = node.setdefault(segment, {})
            if not isinstance(child, dict):
                return None
            node = child
        if segments[-1] in node:
            old = node[segments[-1]]
            if type(old) is not type(value) or old != value:  # 1 is not True
                return None
        node[segments[-1]] = value
    return contained

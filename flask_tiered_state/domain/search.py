"""Searching records in the WARM database, without loading them into Python.

``filters`` map dotted paths to JSON scalars (strings, numbers, booleans, None);
every filter is an equality and all must hold. Paths start at a record root:
``state_id``, ``name``, ``type``, ``status``, ``version``, ``created_at`` and
``updated_at`` stand alone; ``data.<key>[.<key>...]`` and
``metadata.<key>[.<key>...]`` reach into the JSON objects. Keys are letters, digits,
``_`` and ``-``.

- PostgreSQL: all filters (and the type) become one containment test,
  ``document @> '{"type": "user", "data": {"status": "active"}}'``, which the GIN
  ``jsonb_path_ops`` index of the store's table serves.
- SQLite: ``json_type`` / ``json_extract`` per filter, so ``1`` never equals
  ``true`` or ``"1"``, as on PostgreSQL.

Results are the records under ``state:*`` that are not deleted, ordered by
``updated_at`` descending, then ``state_id``. :meth:`StateSearch.counts` groups the
same records by type and status in one ``GROUP BY`` query. Search covers what the WARM tier
holds: every state whose type's home tier is WARM, except states archived to COLD
with ``demote_to_cold``. HOT-home types (sessions) are read by id only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..errors import InvalidRequestError
from ..json_codec import loads
from .model import KEY_PREFIX
from .paging import Page

__all__ = ["COUNT_FIELDS", "LEAF_ROOTS", "OBJECT_ROOTS", "StateSearch", "parse_filters"]

LEAF_ROOTS = ("state_id", "name", "type", "status", "version", "created_at", "updated_at")
OBJECT_ROOTS = ("data", "metadata")
#: The record fields :meth:`StateSearch.counts` groups by.
COUNT_FIELDS = ("type", "status")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_\-]{1,100}")
_SCALARS = (str, int, float, bool, type(None))
# ';' follows ':' in every collation we meet (C on PostgreSQL, binary on SQLite).
_KEY_END = KEY_PREFIX[:-1] + chr(ord(KEY_PREFIX[-1]) + 1)


def _literal(text: str) -> Any:
    """A fixed string of ours (no quote in it) as a literal of the SQL text."""
    assert "'" not in text and "\\" not in text, text
    return sa.literal_column(f"'{text}'", sa.String)


def _bad_path(path: object, why: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid filter path {path!r}: {why}. Allowed: {', '.join(LEAF_ROOTS)}, or "
        f"{' / '.join(r + '.<key>' for r in OBJECT_ROOTS)} with dotted keys of letters, "
        "digits, _ and -.",
        details={"path": repr(path), "roots": [*LEAF_ROOTS, *OBJECT_ROOTS]},
    )


def parse_filters(filters: Mapping[str, Any] | None) -> list[tuple[tuple[str, ...], Any]]:
    """``[(path segments, value)]``, or InvalidRequestError naming the bad path or value."""
    if filters is None:
        return []
    if not isinstance(filters, Mapping):
        raise InvalidRequestError(
            f"filters must be a mapping of dotted path to value, not {type(filters).__name__}."
        )
    parsed: list[tuple[tuple[str, ...], Any]] = []
    for path, value in filters.items():
        if not isinstance(path, str):
            raise _bad_path(path, "paths are strings")
        segments = tuple(path.split("."))
        root = segments[0]
        if root in LEAF_ROOTS:
            if len(segments) > 1:
                raise _bad_path(path, f"{root} has no fields")
        elif root in OBJECT_ROOTS:
            if len(segments) == 1:
                raise _bad_path(path, f"name a key inside {root}, e.g. {root}.status")
            for segment in segments[1:]:
                if not _SEGMENT_RE.fullmatch(segment):
                    raise _bad_path(path, f"key {segment!r} is not allowed")
        else:
            raise _bad_path(path, f"unknown root {root!r}")
        if not isinstance(value, _SCALARS) or (
            isinstance(value, float) and value != value  # NaN
        ):
            raise InvalidRequestError(
                f"Invalid value {value!r} for filter {path!r}; filter values are strings, "
                "numbers, booleans or None (equality).",
                details={"path": path, "value": repr(value)},
            )
        parsed.append((segments, value))
    return parsed


class StateSearch:
    """Runs searches on a SQLStateRepository's table.

    :param repository: the store's WARM SQLStateRepository.
    """

    def __init__(self, repository: Any) -> None:
        self.repository = repository
        self.engine: sa.Engine = repository.engine
        self.table: sa.Table = repository.table
        self.postgresql = repository.backend == "postgresql"
        self.document: Any = repository.document_expression()
        c = self.table.c
        # Literals, like the field names: constant bounds let even a generic plan see
        # that the range spans every state and prefer the document's index.
        self._states = [c.key >= _literal(KEY_PREFIX), c.key < _literal(_KEY_END)]
        self._not_deleted = self._field("status") != "deleted"
        self._base = [*self._states, self._not_deleted]

    def _field(self, name: str) -> Any:
        """A top-level text field of the record, as SQL, its name a literal of the SQL
        text: a bound name would leave a prepared statement's generic plan unable to
        match it with an index expression. Only the fixed field names come here."""
        assert name in LEAF_ROOTS, name
        if self.postgresql:
            return sa.type_coerce(self.document.op("->>")(_literal(name)), sa.Text)
        return sa.func.json_extract(self.document, _literal(f"$.{name}"))

    def _live(self) -> Any:
        live = getattr(self.repository, "live_condition", None)
        if live is not None:
            return live()
        c = self.table.c
        return sa.or_(c.expires_at.is_(None), c.expires_at > time.time())

    def _conditions(self, state_type: str | None, filters: Mapping[str, Any] | None) -> list[Any]:
        parsed = parse_filters(filters)
        if state_type is not None:
            parsed.insert(0, (("type",), state_type))
        conditions = [*self._base, self._live()]
        if not parsed:
            return conditions
        if self.postgresql:
            contained: dict[str, Any] = {}
            for segments, value in parsed:
                node = contained
                for segment in segments[:-1]:
                    child = node.setdefault(segment, {})
                    if not isinstance(child, dict):  # "data.a" = 1 and "data.a.b" = 2
                        return [sa.false()]
                    node = child
                if segments[-1] in node and node[segments[-1]] != value:
                    return [sa.false()]
                node[segments[-1]] = value
            doc = sa.type_coerce(self.document, postgresql.JSONB)
            conditions.append(doc.contains(contained))
            return conditions
        for segments, value in parsed:
            path = "$" + "".join(f'."{s}"' for s in segments)
            kind = sa.func.json_type(self.document, path)
            if value is None:
                conditions.append(kind == "null")
            elif isinstance(value, bool):
                conditions.append(kind == ("true" if value else "false"))
            elif isinstance(value, str):
                conditions.append(sa.and_(kind == "text", self._extract(path) == value))
            else:
                conditions.append(
                    sa.and_(kind.in_(("integer", "real")), self._extract(path) == value)
                )
        return conditions

    def _extract(self, path: str) -> Any:
        return sa.func.json_extract(self.document, path)

    def search(
        self,
        state_type: str | None,
        filters: Mapping[str, Any] | None,
        *,
        page: int,
        per_page: int,
    ) -> Page[dict[str, Any]]:
        """One page of matching records and the total count."""
        conditions = self._conditions(state_type, filters)
        c = self.table.c
        # One pass over the matches: the total rides along as a window over narrow rows
        # (key and sort key), the page is cut from them, and only its rows' values are
        # read back by key. A COUNT beside the page query would read every match twice;
        # a window next to the values would carry each match's value through it.
        updated = self._field("updated_at").label("updated")
        matches = (
            sa.select(c.key, updated, sa.func.count().over().label("total"))
            .where(*conditions)
            .order_by(updated.desc(), c.key.asc())
            .limit(per_page)
            .offset((page - 1) * per_page)
            .subquery("page")
        )
        rows_stmt = (
            sa.select(c.value, matches.c.total)
            .join_from(matches, self.table, c.key == matches.c.key)
            .order_by(matches.c.updated.desc(), matches.c.key.asc())
        )
        with self.engine.connect() as conn:
            rows = self._unprepared(conn, rows_stmt)
            if rows:
                total = int(rows[0][1])
            else:  # past the last page: nothing to carry the total
                count_stmt = sa.select(sa.func.count()).select_from(self.table).where(*conditions)
                total = int(conn.execute(count_stmt).scalar_one())
        return Page([loads(value) for value, _ in rows], total, page, per_page)

    def _unprepared(self, conn: sa.Connection, stmt: sa.Select[Any]) -> list[Any]:
        """Run ``stmt``, planned for its values every time. psycopg prepares a statement
        on its sixth run on a connection, and PostgreSQL may then switch to a generic
        plan, blind to the filter's selectivity (a scan of every state by key instead of
        the GIN index); planning costs a fraction of a millisecond."""
        driver: Any = conn.connection.driver_connection
        threshold = getattr(driver, "prepare_threshold", None) if self.postgresql else None
        if threshold is None:
            return list(conn.execute(stmt).all())
        driver.prepare_threshold = None
        try:
            return list(conn.execute(stmt).all())
        finally:
            driver.prepare_threshold = threshold

    def counts(
        self, fields: Sequence[str], types: Sequence[str], *, include_deleted: bool
    ) -> list[tuple[Any, ...]]:
        """``[(value of each field..., count)]`` of the live records of ``types``, grouped
        by ``fields`` (from :data:`COUNT_FIELDS`): one query."""
        columns = [self._field(name) for name in fields]
        conditions = [*self._states, self._live(), self._field("type").in_(list(types))]
        if not include_deleted:
            conditions.append(self._not_deleted)
        # By position: PostgreSQL would take the two ``document ->> $n`` of the select
        # list and of GROUP BY for different expressions.
        positions: list[Any] = [sa.literal_column(str(n)) for n in range(1, len(columns) + 1)]
        stmt = sa.select(*columns, sa.func.count()).where(*conditions).group_by(*positions)
        with self.engine.connect() as conn:
            return [(*row[:-1], int(row[-1])) for row in conn.execute(stmt)]

    def count(self) -> int:
        """The number of records in the WARM tier that are not deleted."""
        stmt = sa.select(sa.func.count()).select_from(self.table).where(*self._base, self._live())
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

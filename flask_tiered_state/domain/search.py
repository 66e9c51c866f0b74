"""Searching records in the WARM tier, without loading them into Python.

``filters`` map dotted paths to JSON scalars (strings, numbers, booleans, None);
every filter is an equality and all must hold. Paths start at a record root:
``state_id``, ``name``, ``type``, ``status``, ``version``, ``created_at`` and
``updated_at`` stand alone; ``data.<key>[.<key>...]`` and
``metadata.<key>[.<key>...]`` reach into the JSON objects. Keys are letters, digits,
``_`` and ``-``.

A search is a :class:`~flask_tiered_state.storage.base.DocumentQuery` the WARM
repository runs where the records are (its
:class:`~flask_tiered_state.storage.base.DocumentSearch` capability; the SQL
repository's is in :mod:`flask_tiered_state.storage.sql.search`): one containment
test served by a GIN index on PostgreSQL, ``json_type`` / ``json_extract`` on SQLite.
Equality includes the JSON type: ``1`` never equals ``true`` or ``"1"``.

Filter values must be comparable on every backend: a string without NUL characters
(U+0000) or lone surrogates, an integer from -2**63 to 2**63 - 1, a finite float, a
boolean or None; anything else is refused with
:class:`~flask_tiered_state.errors.InvalidRequestError` before a query runs.

Results are the records under ``state:*`` that are not deleted, ordered by
``updated_at`` descending, then ``state_id``. :meth:`StateSearch.counts` groups the
same records by type and status in one ``GROUP BY`` query. Search covers what the WARM tier
holds: every state whose type's home tier is WARM, except states archived to COLD
with ``demote_to_cold``. HOT-home types (sessions) are read by id only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigurationError, InvalidRequestError
from ..json_codec import loads
from ..storage.base import DocumentQuery, DocumentSearch
from .model import KEY_PREFIX
from .paging import Page

__all__ = [
    "COUNT_FIELDS",
    "LEAF_ROOTS",
    "OBJECT_ROOTS",
    "SEARCH_COUNT_LIMIT",
    "StateSearch",
    "parse_filters",
]

LEAF_ROOTS = ("state_id", "name", "type", "status", "version", "created_at", "updated_at")
OBJECT_ROOTS = ("data", "metadata")
#: The record fields :meth:`StateSearch.counts` groups by.
COUNT_FIELDS = ("type", "status")
#: How many matches a search counts for its page's ``total`` (at least the results up to
#: the page's end): past it, ``total`` is this bound and ``total_exact`` False. Counting
#: every match made a first page over 1,000,000 states 200 times slower than over 1,000;
#: counting to 10,000 instead of 1,000 costs a first page over 100,000 states 60 ms, not 11.
SEARCH_COUNT_LIMIT = 1_000
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_\-]{1,100}")
_SCALARS = (str, int, float, bool, type(None))
#: The integers every backend compares (SQLite's are signed 64-bit).
MIN_FILTER_INT, MAX_FILTER_INT = -(2**63), 2**63 - 1
#: Search never returns deleted states.
_NOT_DELETED = (("status", "deleted"),)


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
        if not isinstance(value, _SCALARS):
            raise InvalidRequestError(
                f"Invalid value {_shown(value)} for filter {path!r}; filter values are "
                "strings, numbers, booleans or None (equality).",
                details={"path": path, "value": _shown(value)},
            )
        _check_value(path, value)
        parsed.append((segments, value))
    return parsed


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_value(path: str, value: object) -> None:
    """Refuse a scalar some backend cannot compare: NaN, an infinity, an integer beyond
    64 bits, a string with NUL or a lone surrogate."""
    why = None
    if isinstance(value, float) and not math.isfinite(value):
        why = "numbers must be finite (not NaN or an infinity)"
    elif isinstance(value, int) and not isinstance(value, bool):
        if not MIN_FILTER_INT <= value <= MAX_FILTER_INT:
            why = "integers must be from -2**63 to 2**63 - 1"
    elif isinstance(value, str):
        if "\x00" in value:
            why = "strings cannot contain NUL characters (U+0000)"
        else:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                why = "strings cannot contain lone surrogates"
    if why is not None:
        raise InvalidRequestError(
            f"Invalid value {_shown(value)} for filter {path!r}: {why}.",
            details={"path": path, "value": _shown(value)},
        )


class StateSearch:
    """Searches and counts the records a WARM repository holds, through its
    :class:`~flask_tiered_state.storage.base.DocumentSearch` capability.

    :param repository: the store's WARM repository.
    """

    def __init__(self, repository: object) -> None:
        if not isinstance(repository, DocumentSearch):
            raise ConfigurationError(
                f"The WARM repository {repository!r} cannot search its documents (it has "
                "no search_documents/count_documents); searches need one that can."
            )
        self.repository: DocumentSearch = repository

    def search(
        self,
        state_type: str | None,
        filters: Mapping[str, Any] | None,
        *,
        page: int,
        per_page: int,
    ) -> Page[dict[str, Any]]:
        """One page of matching records, newest first, and the total count."""
        parsed = parse_filters(filters)
        if state_type is not None:
            parsed.insert(0, (("type",), state_type))
        query = DocumentQuery(KEY_PREFIX, equal=tuple(parsed), not_equal=_NOT_DELETED)
        offset = (page - 1) * per_page
        # Counted at least up to the page's end, so that a page past the limit has a total.
        bound = max(SEARCH_COUNT_LIMIT, offset + per_page)
        values, counted = self.repository.search_documents(
            query, newest_by="updated_at", offset=offset, limit=per_page, count_limit=bound
        )
        return Page(
            [loads(value) for value in values], min(counted, bound), page, per_page,
            total_exact=counted <= bound,
        )  # fmt: skip

    def counts(
        self, fields: Sequence[str], types: Sequence[str], *, include_deleted: bool
    ) -> list[tuple[Any, ...]]:
        """``[(value of each field..., count)]`` of the records of ``types``, grouped by
        ``fields`` (from :data:`COUNT_FIELDS`): one query."""
        query = DocumentQuery(
            KEY_PREFIX,
            not_equal=() if include_deleted else _NOT_DELETED,
            one_of=(("type", tuple(types)),),
        )
        return self.repository.count_documents(query, list(fields))

    def count_type(self, state_type: str) -> int:
        """The number of records of ``state_type`` in the WARM tier that are not deleted
        (one containment query, served by the GIN index on PostgreSQL)."""
        query = DocumentQuery(KEY_PREFIX, equal=((("type",), state_type),), not_equal=_NOT_DELETED)
        return int(self.repository.count_documents(query, [])[0][0])

    def count(self) -> int:
        """The number of records in the WARM tier that are not deleted."""
        rows = self.repository.count_documents(
            DocumentQuery(KEY_PREFIX, not_equal=_NOT_DELETED), []
        )
        return int(rows[0][0])

"""marshmallow schemas of the REST blueprint: the request bodies and query strings the
views load, and the responses they answer with.

Bodies that break a schema answer 422 (``validation_error`` with the messages by
field); query strings that break one answer 400 (``invalid_request``). Unknown body
fields are refused, so a typo never passes silently. The response schemas describe
what the views return for the OpenAPI document (:mod:`.openapi`), where the tests
check every response against them.
"""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, fields, pre_load, validate

from ..domain.arguments import (
    MAX_METADATA_BYTES,
    MAX_METADATA_KEYS,
    MAX_NAME_LENGTH,
    MAX_REASON_LENGTH,
    MAX_VERSION,
    UPDATE_TRANSITIONS,
)
from ..domain.model import MAX_STATE_ID_LENGTH, StateStatus, StateTransition
from ..domain.paging import DEFAULT_PER_PAGE, MAX_PAGE, MAX_PER_PAGE

__all__ = [
    "STATE_ID_PATTERN",
    "STATE_ID_SCHEMA",
    "ChangeSchema",
    "DiffQuerySchema",
    "DiffSchema",
    "ErrorSchema",
    "HealthSchema",
    "HistoryQuerySchema",
    "HistorySchema",
    "ListQuerySchema",
    "PageSchema",
    "RecordSchema",
    "RegisterStateSchema",
    "RollbackSchema",
    "TransitionSchema",
]

TRANSITION_NAMES = tuple(t.value.upper() for t in UPDATE_TRANSITIONS)
MAX_HISTORY_LIMIT = 1000
#: The state id rule (STATE_ID_RULE) as a JSON Schema pattern.
STATE_ID_PATTERN = rf"^[A-Za-z0-9_\-.:@]{{1,{MAX_STATE_ID_LENGTH}}}$"
#: The state id rule as JSON Schema (the manager checks it: 400 invalid_request).
STATE_ID_SCHEMA: dict[str, Any] = {
    "pattern": STATE_ID_PATTERN,
    "minLength": 1,
    "maxLength": MAX_STATE_ID_LENGTH,
}
STATUSES = tuple(s.value for s in StateStatus)


def _version(**options: Any) -> fields.Integer:
    """A version number: 1 to MAX_VERSION (what the history's INTEGER column holds)."""
    return fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_VERSION), **options)


def _page() -> fields.Integer:
    return fields.Integer(
        validate=validate.Range(min=1, max=MAX_PAGE),
        load_default=1,
        metadata={"description": f"The page, from 1 to {MAX_PAGE:,}."},
    )


def _per_page() -> fields.Integer:
    return fields.Integer(
        validate=validate.Range(min=1, max=MAX_PER_PAGE),
        load_default=DEFAULT_PER_PAGE,
        metadata={"description": f"Results per page, from 1 to {MAX_PER_PAGE}."},
    )


def _lower(data: Any, names: tuple[str, ...]) -> Any:
    if isinstance(data, dict):
        data = dict(data)
        for name in names:
            if isinstance(data.get(name), str):
                data[name] = data[name].lower()
    return data


class RegisterStateSchema(Schema):
    """``POST /states``: a new state."""

    state_id = fields.String(
        required=True, metadata={"description": "The new state's id.", **STATE_ID_SCHEMA}
    )
    type = fields.String(
        required=True,
        metadata={"description": "A registered state type (any case); the document lists "
                  "those registered when it was served."},
    )  # fmt: skip
    name = fields.String(
        validate=validate.Length(max=MAX_NAME_LENGTH),
        metadata={"description": "Display name; defaults to the id."},
    )
    data = fields.Dict(keys=fields.String(), load_default=dict)
    metadata = fields.Dict(
        keys=fields.String(),
        load_default=dict,
        metadata={"description": f"At most {MAX_METADATA_KEYS} keys and "
                  f"{MAX_METADATA_BYTES // 1024} KiB as JSON.",
                  "maxProperties": MAX_METADATA_KEYS},
    )  # fmt: skip

    @pre_load
    def _normalise(self, data: Any, **_: Any) -> Any:
        return _lower(data, ("type",))


class TransitionSchema(Schema):
    """``POST /states/<id>/transitions``: one lifecycle transition or update."""

    transition = fields.String(
        required=True,
        validate=validate.OneOf([t.value for t in UPDATE_TRANSITIONS]),
        metadata={
            "description": "One of " + ", ".join(TRANSITION_NAMES) + " (any case).",
            "enum": [*TRANSITION_NAMES, *(t.value for t in UPDATE_TRANSITIONS)],
        },
    )
    data = fields.Dict(
        keys=fields.String(),
        metadata={"description": "The new data; absent keeps the current data."},
    )
    name = fields.String(
        validate=validate.Length(max=MAX_NAME_LENGTH),
        metadata={"description": "A new display name."},
    )
    metadata = fields.Dict(
        keys=fields.String(),
        metadata={"description": f"New metadata: at most {MAX_METADATA_KEYS} keys and "
                  f"{MAX_METADATA_BYTES // 1024} KiB as JSON.",
                  "maxProperties": MAX_METADATA_KEYS},
    )  # fmt: skip
    expected_version = _version(
        allow_none=True,
        metadata={"description": "Refuse with 409 unless the state is at this version."},
    )
    reason = fields.String(validate=validate.Length(max=MAX_REASON_LENGTH), allow_none=True)

    @pre_load
    def _normalise(self, data: Any, **_: Any) -> Any:
        return _lower(data, ("transition",))


class RollbackSchema(Schema):
    """``POST /states/<id>/rollback``: restore an earlier version as a new one."""

    to_version = _version(
        required=True, metadata={"description": "The recorded version whose record is restored."}
    )
    reason = fields.String(validate=validate.Length(max=MAX_REASON_LENGTH), allow_none=True)


class ListQuerySchema(Schema):
    """``GET /states``: the named query parameters (dotted ones are filters)."""

    type = fields.String(
        metadata={"description": "Only states of this type (a registered type, any case)."}
    )
    status = fields.String(
        validate=validate.OneOf(STATUSES),
        metadata={"description": "Only states in this status (any case); deleted states "
                  "are never listed."},
    )  # fmt: skip
    page = _page()
    per_page = _per_page()

    @pre_load
    def _normalise(self, data: Any, **_: Any) -> Any:
        return _lower(data, ("type", "status"))


class HistoryQuerySchema(Schema):
    """``GET /states/<id>/history``: a page of changes, oldest first (``page``,
    ``per_page``), or with ``limit`` the latest N, newest first."""

    page = _page()
    per_page = _per_page()
    limit = fields.Integer(
        validate=validate.Range(min=1, max=MAX_HISTORY_LIMIT),
        metadata={
            "description": "Only the latest N changes, newest first, in one answer "
            "(without page, per_page and transition)."
        },
    )
    transition = fields.String(
        validate=validate.OneOf([t.value for t in StateTransition]),
        metadata={"description": "Only changes made by this transition (any case), oldest first."},
    )

    @pre_load
    def _normalise(self, data: Any, **_: Any) -> Any:
        return _lower(data, ("transition",))


class DiffQuerySchema(Schema):
    """``GET /states/<id>/diff?from=&to=``."""

    from_version = fields.Integer(
        data_key="from", required=True, validate=validate.Range(min=1, max=MAX_VERSION)
    )
    to_version = fields.Integer(
        data_key="to", required=True, validate=validate.Range(min=1, max=MAX_VERSION)
    )


# -- responses ------------------------------------------------------------------


class _Response(Schema):
    """A response body: described, never loaded; other keys may appear."""

    class Meta:
        unknown = EXCLUDE


class RecordSchema(_Response):
    """A state's record."""

    state_id = fields.String(required=True)
    name = fields.String(required=True)
    type = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in StateStatus]))
    data = fields.Dict(required=True)
    metadata = fields.Dict(required=True)
    version = fields.Integer(required=True, validate=validate.Range(min=1))
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


class ChangeSchema(_Response):
    """One recorded change of a state: its history row."""

    state_id = fields.String(required=True)
    version = fields.Integer(required=True)
    transition = fields.String(required=True)
    from_status = fields.String(allow_none=True)
    to_status = fields.String(required=True)
    old_record = fields.Nested(RecordSchema, allow_none=True)
    new_record = fields.Nested(RecordSchema, required=True)
    actor = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    correlation_id = fields.String(allow_none=True)
    event_id = fields.String(
        allow_none=True,
        metadata={"description": "The change's event id, as asynchronous callbacks get it."},
    )
    created_at = fields.DateTime(required=True)


class PageSchema(_Response):
    """One page of search results."""

    items = fields.List(fields.Nested(RecordSchema), required=True)
    total = fields.Integer(
        required=True,
        metadata={"description": "The matches; with total_exact false, there are more."},
    )
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)
    pages = fields.Integer(
        required=True,
        validate=validate.Range(min=0),
        metadata={"description": "The number of pages; 0 when nothing matches (a lower "
                  "bound when total_exact is false)."},
    )  # fmt: skip
    total_exact = fields.Boolean(
        required=True,
        metadata={"description": "False when more states match than a search counts "
                  "(1,000, or the results up to this page's end): total is then that "
                  "bound, and next pages go on while they come full."},
    )  # fmt: skip


class HistorySchema(_Response):
    """A state's changes: one page of them (oldest first), or the latest N with ``limit``
    (then without the page fields)."""

    state_id = fields.String(required=True)
    items = fields.List(fields.Nested(ChangeSchema), required=True)
    total = fields.Integer(metadata={"description": "The changes there are (of the transition)."})
    page = fields.Integer()
    per_page = fields.Integer()
    total_exact = fields.Boolean(metadata={"description": "Always true for a history."})
    pages = fields.Integer(
        validate=validate.Range(min=0),
        metadata={"description": "The number of pages; 0 when there are no changes."},
    )
    next = fields.String(
        allow_none=True,
        metadata={"description": "The URL of the next page; null on the last one."},
    )


class DiffSchema(_Response):
    """What changed between two versions, by dotted path."""

    state_id = fields.String(required=True)
    from_version = fields.Integer(required=True)
    to_version = fields.Integer(required=True)
    added = fields.Dict(required=True, metadata={"description": "path -> new value"})
    removed = fields.Dict(required=True, metadata={"description": "path -> old value"})
    changed = fields.Dict(required=True, metadata={"description": 'path -> {"from", "to"}'})


class HealthSchema(_Response):
    """The health of the manager and of every tier."""

    status = fields.String(
        required=True, validate=validate.OneOf(["healthy", "degraded", "unhealthy"])
    )
    state_count = fields.Integer(allow_none=True)
    cache_hit_rate = fields.Float(
        allow_none=True, metadata={"description": "0.0 while cache_lookups is 0."}
    )
    cache_lookups = fields.Integer(
        metadata={"description": "Reads that looked in the cache; 0: not read yet."}
    )
    tiers = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(),
        metadata={
            "description": "Per tier, checked now: backend, available (it answers and is "
            "in use), failures (failed checks and calls since it went down; 0 when "
            "available), degraded_for_seconds, next_check_in_seconds, pending_drops."
        },
    )


class ErrorSchema(_Response):
    """Every error answer."""

    error = fields.String(required=True, metadata={"description": "Machine-readable code."})
    message = fields.String(
        required=True, metadata={"description": "What went wrong and how to fix it."}
    )
    details = fields.Dict(required=True)
    correlation_id = fields.String(required=True, allow_none=True)

"""The OpenAPI 3.1 document of the REST blueprint, built from its route table.

Request bodies and query parameters are derived from the marshmallow schemas the
views validate with, so the document cannot drift from what the API accepts;
paths carry the app's prefix, so they match the app's URL rules exactly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from marshmallow import Schema, fields, validate

from ..domain.model import STATE_ID_RULE
from ..domain.paging import MAX_PER_PAGE
from .schemas import (
    DiffQuerySchema,
    HistoryQuerySchema,
    ListQuerySchema,
    RegisterStateSchema,
    RollbackSchema,
    TransitionSchema,
)

if TYPE_CHECKING:
    from .routes import Route

__all__ = ["OPENAPI_VERSION", "build_openapi", "openapi_path"]

OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/"


def openapi_path(prefix: str, rule: str) -> str:
    """A Flask rule as an OpenAPI path: ``/states/<state_id>`` -> ``/states/{state_id}``."""
    return prefix + re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def _field_schema(field: fields.Field[Any]) -> dict[str, Any]:
    out: dict[str, Any]
    if isinstance(field, fields.Integer):
        out = {"type": "integer"}
    elif isinstance(field, fields.String):
        out = {"type": "string"}
    elif isinstance(field, fields.Dict):
        out = {"type": "object"}
    else:
        out = {}
    for rule in field.validators:
        if isinstance(rule, validate.Range):
            if rule.min is not None:
                out["minimum"] = rule.min
            if rule.max is not None:
                out["maximum"] = rule.max
        elif isinstance(rule, validate.Length) and rule.max is not None:
            out["maxLength"] = rule.max
        elif isinstance(rule, validate.OneOf):
            choices = [str(c) for c in rule.choices]
            out["enum"] = choices + [c.upper() for c in choices]
    if field.allow_none and "type" in out:
        out["type"] = [out["type"], "null"]
    description = field.metadata.get("description")
    if description:
        out["description"] = description
    return out


def _body_schema(schema: Schema) -> dict[str, Any]:
    properties = {
        field.data_key or name: _field_schema(field) for name, field in schema.fields.items()
    }
    required = sorted(
        field.data_key or name for name, field in schema.fields.items() if field.required
    )
    out: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        out["required"] = required
    return out


def _query_parameters(schema: Schema) -> list[dict[str, Any]]:
    return [
        {
            "name": field.data_key or name,
            "in": "query",
            "required": field.required,
            "schema": _field_schema(field),
        }
        for name, field in schema.fields.items()
    ]


def _object(properties: dict[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    return out


_STRING = {"type": "string"}
_INT = {"type": "integer"}
_OBJECT = {"type": "object"}
_RECORD_FIELDS = ("state_id", "name", "type", "status", "data", "metadata", "version")


def _components() -> dict[str, Any]:
    record = _object(
        {
            "state_id": _STRING,
            "name": _STRING,
            "type": _STRING,
            "status": {"type": "string", "enum": ["created", "active", "suspended", "expired",
                                                  "deleted"]},
            "data": _OBJECT,
            "metadata": _OBJECT,
            "version": {"type": "integer", "minimum": 1},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
        (*_RECORD_FIELDS, "created_at", "updated_at"),
    )  # fmt: skip
    change = _object(
        {
            "state_id": _STRING,
            "version": _INT,
            "transition": _STRING,
            "from_status": {"type": ["string", "null"]},
            "to_status": _STRING,
            "old_record": {"oneOf": [{"$ref": _REF + "Record"}, {"type": "null"}]},
            "new_record": {"$ref": _REF + "Record"},
            "actor": {"type": ["string", "null"]},
            "reason": {"type": ["string", "null"]},
            "correlation_id": {"type": ["string", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
        },
        ("state_id", "version", "transition", "to_status", "new_record", "created_at"),
    )
    page = _object(
        {
            "items": {"type": "array", "items": {"$ref": _REF + "Record"}},
            "total": _INT,
            "page": _INT,
            "per_page": _INT,
            "pages": {
                "type": "integer",
                "minimum": 0,
                "description": "The number of pages; 0 when nothing matches.",
            },
        },
        ("items", "total", "page", "per_page", "pages"),
    )
    history = _object(
        {"state_id": _STRING, "items": {"type": "array", "items": {"$ref": _REF + "Change"}}},
        ("state_id", "items"),
    )
    error = _object(
        {
            "error": {"type": "string", "description": "Machine-readable code."},
            "message": {"type": "string", "description": "What went wrong and how to fix it."},
            "details": _OBJECT,
            "correlation_id": {"type": ["string", "null"]},
        },
        ("error", "message", "details", "correlation_id"),
    )
    return {
        "Record": record,
        "Change": change,
        "Page": page,
        "History": history,
        "Diff": {"type": "object", "description": "added, removed and changed dotted paths."},
        "Health": _object({"status": _STRING}, ("status",)),
        "OpenAPI": {"type": "object", "description": "An OpenAPI 3.1 document."},
        "Error": error,
        "RegisterState": _body_schema(RegisterStateSchema()),
        "Transition": _body_schema(TransitionSchema()),
        "Rollback": _body_schema(RollbackSchema()),
    }


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF + ref}}},
    }


_ERRORS = {
    "400": "Malformed request: bad JSON, not an object, bad query parameters or id.",
    "403": "Refused by the access-control hook.",
    "404": "No such state or version.",
    "409": "Transition not allowed, id taken, or version conflict.",
    "413": "The state is larger than TIERED_STATE_MAX_STATE_BYTES.",
    "415": "The body is not application/json.",
    "422": "The body breaks its schema, the state type is unknown or validators refused.",
    "429": "Rate limited; see Retry-After.",
    "503": "A storage tier is unavailable.",
}

_STATE_ID = {
    "name": "state_id",
    "in": "path",
    "required": True,
    "description": f"State ids are {STATE_ID_RULE}.",
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_\-.:@]{1,200}$"},
}

_FILTERS = {
    "name": "filters",
    "in": "query",
    "description": (
        "Equality filters on dotted paths (data.status=active, metadata.plan=pro, name=...); "
        "values are read as JSON where they parse (30, true, null), else as text."
    ),
    "style": "form",
    "explode": True,
    "schema": {"type": "object", "additionalProperties": {"type": "string"}},
}

# endpoint -> (summary, parameters, request body schema, success status, success schema)
_OPERATIONS: dict[str, tuple[str, list[dict[str, Any]], str | None, str, str]] = {
    "list_states": (
        f"List states by type, status and filters, {MAX_PER_PAGE} at most per page.",
        [*_query_parameters(ListQuerySchema()), _FILTERS],
        None, "200", "Page",
    ),
    "register_state": ("Register a new state.", [], "RegisterState", "201", "Record"),
    "get_state": ("A state's current record.", [_STATE_ID], None, "200", "Record"),
    "transition_state": (
        "Apply a lifecycle transition (or UPDATE) to a state.",
        [_STATE_ID], "Transition", "200", "Record",
    ),
    "state_history": (
        "A state's history: every change, the latest N, or those of one transition.",
        [_STATE_ID, *_query_parameters(HistoryQuerySchema())], None, "200", "History",
    ),
    "diff_state": (
        "What changed between two versions, as dotted paths.",
        [_STATE_ID, *_query_parameters(DiffQuerySchema())], None, "200", "Diff",
    ),
    "rollback_state": (
        "Restore an earlier version's record as a new, recorded version.",
        [_STATE_ID], "Rollback", "200", "Record",
    ),
    "health": ("Health of the manager and every tier (503 when unhealthy).", [], None, "200",
               "Health"),
    "openapi": ("This document.", [], None, "200", "OpenAPI"),
}  # fmt: skip


def _operation(endpoint: str) -> dict[str, Any]:
    summary, parameters, body, status, schema = _OPERATIONS[endpoint]
    responses: dict[str, Any] = {status: _json(schema, "Success.")}
    if endpoint == "health":
        responses["503"] = _json("Health", "Unhealthy.")
    for code, description in _ERRORS.items():
        responses.setdefault(code, _json("Error", description))
    operation: dict[str, Any] = {
        "operationId": endpoint,
        "summary": summary,
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": _REF + body}}},
        }
    return operation


def build_openapi(routes: Iterable[Route], *, prefix: str = "") -> dict[str, Any]:
    """The OpenAPI document of ``routes`` mounted at ``prefix``."""
    from .. import __version__

    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = paths.setdefault(openapi_path(prefix, route.rule), {})
        path[route.method.lower()] = _operation(route.endpoint)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "flask_tiered_state REST API",
            "version": __version__,
            "description": "Domain states with lifecycles, history and rollback.",
        },
        "paths": paths,
        "components": {"schemas": _components()},
    }

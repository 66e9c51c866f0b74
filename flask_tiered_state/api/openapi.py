"""The OpenAPI 3.1 document of the REST blueprint, built by apispec from its route table.

apispec's MarshmallowPlugin turns the schemas the views load requests with (and the
response schemas) into JSON Schema, so the document cannot drift from what the API
accepts; paths carry the app's prefix, so they match the app's URL rules exactly.
The mutating (POST) operations declare the ``Idempotency-Key`` request header, the
``Idempotent-Replayed`` response header of a replay, and what 409 and 422 also mean
for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from ..domain.idempotency import MAX_KEY_LENGTH
from .schemas import (
    ChangeSchema,
    DiffSchema,
    ErrorSchema,
    HealthSchema,
    HistorySchema,
    PageSchema,
    RecordSchema,
    RegisterStateSchema,
    RollbackSchema,
    TransitionSchema,
)

if TYPE_CHECKING:
    from .routes import Route

__all__ = ["OPENAPI_VERSION", "build_openapi", "openapi_path"]

OPENAPI_VERSION = "3.1.0"

#: Every schema of the document, by component name.
COMPONENTS = {
    "Record": RecordSchema,
    "Change": ChangeSchema,
    "Page": PageSchema,
    "History": HistorySchema,
    "Diff": DiffSchema,
    "Health": HealthSchema,
    "Error": ErrorSchema,
    "RegisterState": RegisterStateSchema,
    "Transition": TransitionSchema,
    "Rollback": RollbackSchema,
}

#: The error answers every operation may give.
ERRORS = {
    400: "Malformed request: bad JSON, not an object, bad query parameters or id.",
    403: "Refused by the access-control hook.",
    404: "No such state or version.",
    409: "Transition not allowed, id taken, version conflict, or the type's quota of "
    "states reached (quota_exceeded).",
    413: "The state is larger than TIERED_STATE_MAX_STATE_BYTES, or the request body larger "
    "than TIERED_STATE_MAX_REQUEST_BYTES.",
    415: "The body is not application/json.",
    422: "The body breaks its schema, the state type is unknown or validators refused.",
    429: "Rate limited; see Retry-After.",
    503: "A storage tier is unavailable.",
}


#: What 409 and 422 also mean for the operations that read ``Idempotency-Key``.
IDEMPOTENCY_ERRORS = {
    409: " Or idempotency_key_in_use: the first request with this Idempotency-Key is still "
    "running; retry after it ended to get its result.",
    422: " Or idempotency_key_reused: the Idempotency-Key was first used for another request "
    "(other endpoint, state, body or actor).",
}
IDEMPOTENCY_KEY = {
    "description": (
        "Names this request: a repeat with the same key and the same request returns the "
        "first response (same status and body, with Idempotent-Replayed: true) and applies "
        "nothing. A UUID per logical request is a good choice; keys expire after "
        "TIERED_STATE_IDEMPOTENCY_TTL_SECONDS (24 h by default)."
    ),
    "required": False,
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": "^[\\x20-\\x7e]+$",
    },
}
REPLAYED = {
    "description": "true when the answer is the stored response of an earlier request "
    "with the same Idempotency-Key (nothing was applied); absent otherwise.",
    "schema": {"type": "string", "enum": ["true"]},
}


def openapi_path(prefix: str, rule: str) -> str:
    """A Flask rule as an OpenAPI path: ``/states/<state_id>`` -> ``/states/{state_id}``."""
    return prefix + re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def _json(schema: Any, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(route: Route) -> dict[str, Any]:
    success = _json(route.responds, "Success.")
    if route.idempotent:
        success["headers"] = {"Idempotent-Replayed": "IdempotentReplayed"}
    responses: dict[str, Any] = {str(route.status): success}
    for status, (description, schema) in route.responses.items():
        responses[str(status)] = _json(schema, description)
    for status, description in ERRORS.items():
        if route.idempotent:
            description += IDEMPOTENCY_ERRORS.get(status, "")
        responses.setdefault(str(status), _json(ErrorSchema, description))
    parameters: list[Any] = list(route.parameters)
    if route.idempotent:
        parameters.append("IdempotencyKey")
    if route.query is not None:
        parameters.append({"in": "query", "schema": route.query})
    operation: dict[str, Any] = {
        "operationId": route.endpoint,
        "summary": route.summary,
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": route.body}},
        }
    return operation


def build_openapi(routes: Iterable[Route], *, prefix: str = "") -> dict[str, Any]:
    """The OpenAPI document of ``routes`` mounted at ``prefix``."""
    try:
        release = version("flask-tiered-state")
    except PackageNotFoundError:  # run from a source tree that was never installed
        release = "unknown"
    spec = APISpec(
        title="flask_tiered_state REST API",
        version=release,
        openapi_version=OPENAPI_VERSION,
        info={"description": "Domain states with lifecycles, history and rollback."},
        plugins=[MarshmallowPlugin()],
    )
    for name, schema in COMPONENTS.items():
        spec.components.schema(name, schema=schema)
    spec.components.parameter("IdempotencyKey", "header", {"name": "Idempotency-Key",
                                                           **IDEMPOTENCY_KEY})  # fmt: skip
    spec.components.header("IdempotentReplayed", REPLAYED)
    operations: dict[str, dict[str, Any]] = {}
    for route in routes:
        operations.setdefault(route.rule, {})[route.method.lower()] = _operation(route)
    for rule, by_method in operations.items():
        spec.path(path=openapi_path(prefix, rule), operations=by_method)
    document: dict[str, Any] = spec.to_dict()
    return document

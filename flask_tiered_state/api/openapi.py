"""The OpenAPI 3.1 document of the REST blueprint, built by apispec from its route table.

apispec's MarshmallowPlugin turns the schemas the views load requests with (and the
response schemas) into JSON Schema, so the document cannot drift from what the API
accepts; paths carry the app's prefix, so they match the app's URL rules exactly.

The document says what the server does, no more and no less (a contract test runs
schemathesis against it, see ``tests/contract``):

- **Bounds**: the state id pattern (:data:`~flask_tiered_state.domain.model.STATE_ID_RULE`),
  string lengths, the maxima of pages, limits and versions, the filter names the server
  accepts.
- **Enums** of the state types registered on the app's manager *when the document is
  served*, of the statuses and of the transitions.
- **Every status** each operation can answer (:attr:`Route.errors` plus those every
  route may give: 405, 413, 414, 500, and 401/403 with an access hook, 429 with rate
  limits), each with its headers (``Location``, ``Allow``, ``Retry-After``).
- **securitySchemes** of the access hook in use (:func:`security_schemes`).
- An **example** for every operation, and **links** from the operations that answer a
  record to those that take its ``state_id``.

The mutating (POST) operations declare the ``Idempotency-Key`` request header, the
``Idempotent-Replayed`` response header of a replay, and what 409 and 422 also mean
for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from ..domain.idempotency import MAX_KEY_LENGTH
from ..domain.model import STATE_ID_RULE
from ..setting_values import allow_all
from .schemas import (
    STATE_ID_PATTERN,
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
    from ..settings import AccessControlHook
    from .routes import Route

__all__ = [
    "DEFAULT_SECURITY_SCHEMES",
    "OPENAPI_VERSION",
    "SECURITY_SCHEMES_ATTRIBUTE",
    "STATE_ID_PATTERN",
    "build_openapi",
    "openapi_path",
    "security_schemes",
]

OPENAPI_VERSION = "3.1.0"

#: The attribute of an access hook that declares its OpenAPI security schemes: a mapping
#: of scheme name to Security Scheme Object; an empty mapping declares none.
SECURITY_SCHEMES_ATTRIBUTE = "openapi_security_schemes"
#: The schemes of a hook that declares none: a bearer token in ``Authorization``.
DEFAULT_SECURITY_SCHEMES: Mapping[str, Mapping[str, Any]] = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "The token the app's access-control hook checks, sent as "
        "'Authorization: Bearer <token>'.",
    }
}

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

#: What each error status means, unless the route says more (:attr:`Route.errors`).
ERRORS = {
    400: "Malformed request: bad query parameters or state id, a body that is not one JSON "
    "object (invalid_request), or JSON nested deeper than TIERED_STATE_MAX_JSON_DEPTH "
    "(json_too_deep).",
    401: "The access-control hook asks for credentials (see securitySchemes).",
    403: "Refused by the access-control hook (forbidden).",
    404: "No such state (not_found).",
    405: "The path does not take this method (method_not_allowed); Allow lists those it takes.",
    409: "Transition not allowed (invalid_transition), expected_version not matched "
    "(concurrency_conflict).",
    413: "The request body is larger than TIERED_STATE_MAX_REQUEST_BYTES "
    "(request_entity_too_large).",
    414: "The URL is longer than the WSGI server reads (answered by the server, not as JSON).",
    415: "The body is not sent as application/json (unsupported_media_type).",
    422: "The body breaks its schema, or the state type's validators refused the data "
    "(validation_error).",
    429: "Rate limited (rate_limited); Retry-After gives the seconds to wait.",
    500: "An unexpected failure; the message asks to quote the correlation id.",
    503: "A storage tier is unavailable (tier_unavailable, deadline_exceeded, outcome_unknown).",
}
#: The statuses every route may answer (401/403 with a hook, 429 with rate limits).
COMMON_ERRORS = (405, 413, 414, 500)

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
    "example": "5b0f3d0e-charge-42",
}
REPLAYED = {
    "description": "true when the answer is the stored response of an earlier request "
    "with the same Idempotency-Key (nothing was applied); absent otherwise.",
    "schema": {"type": "string", "enum": ["true"]},
}
#: The response headers of some statuses.
HEADERS: dict[int, dict[str, Any]] = {
    405: {
        "Allow": {
            "description": "The methods the path takes.",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds to wait before the next request.",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
    },
}

_RECORD_EXAMPLE = {
    "state_id": "alice",
    "name": "Alice",
    "type": "user",
    "status": "active",
    "data": {"plan": "pro"},
    "metadata": {"source": "signup"},
    "version": 2,
    "created_at": "2026-01-12T09:30:53.450939+00:00",
    "updated_at": "2026-01-12T09:31:10.002114+00:00",
}
_CHANGE_EXAMPLE = {
    "state_id": "alice",
    "version": 2,
    "transition": "activate",
    "from_status": "created",
    "to_status": "active",
    "old_record": {**_RECORD_EXAMPLE, "status": "created", "version": 1,
                   "updated_at": _RECORD_EXAMPLE["created_at"]},
    "new_record": _RECORD_EXAMPLE,
    "actor": "admin",
    "reason": "email verified",
    "correlation_id": "signup-42",
    "event_id": "0194f3a2-6c1e-7d3a-9b1f-3c2d1e0f4a5b",
    "created_at": _RECORD_EXAMPLE["updated_at"],
}  # fmt: skip
#: The success answer's example of each operation.
RESPONSE_EXAMPLES: dict[str, Any] = {
    "list_states": {"items": [_RECORD_EXAMPLE], "total": 1, "page": 1, "per_page": 20,
                    "pages": 1, "total_exact": True},
    "register_state": {**_RECORD_EXAMPLE, "status": "created", "version": 1,
                       "updated_at": _RECORD_EXAMPLE["created_at"]},
    "get_state": _RECORD_EXAMPLE,
    "transition_state": _RECORD_EXAMPLE,
    "state_history": {"state_id": "alice", "items": [_CHANGE_EXAMPLE], "total": 3, "page": 2,
                      "per_page": 1, "pages": 3, "total_exact": True,
                      "next": "/api/state/states/alice/history?page=3&per_page=1"},
    "diff_state": {"state_id": "alice", "from_version": 1, "to_version": 2,
                   "added": {"data.plan": "pro"}, "removed": {},
                   "changed": {"status": {"from": "created", "to": "active"}}},
    "rollback_state": {**_RECORD_EXAMPLE, "version": 4},
    "health": {"status": "degraded", "state_count": 42, "cache_hit_rate": 0.93,
               "cache_lookups": 1200,
               "tiers": {"hot": {"backend": "redis", "available": False, "failures": 3,
                                 "degraded_for_seconds": 12.5, "next_check_in_seconds": 2.0,
                                 "pending_drops": 0},
                         "warm": {"backend": "postgresql", "available": True, "failures": 0,
                                  "degraded_for_seconds": None,
                                  "next_check_in_seconds": None, "pending_drops": 0},
                         "cold": {"backend": "s3", "available": True, "failures": 0,
                                  "degraded_for_seconds": None,
                                  "next_check_in_seconds": None, "pending_drops": 0}}},
    "openapi": {"openapi": OPENAPI_VERSION, "info": {"title": "flask_tiered_state REST API"},
                "paths": {}},
    "api_docs": "<!doctype html><title>flask_tiered_state REST API</title>...",
}  # fmt: skip
#: The request body's example of each operation that takes one.
BODY_EXAMPLES: dict[str, Any] = {
    "register_state": {"state_id": "alice", "type": "user", "name": "Alice",
                       "data": {"plan": "pro"}, "metadata": {"source": "signup"}},
    "transition_state": {"transition": "activate", "reason": "email verified",
                         "expected_version": 1},
    "rollback_state": {"to_version": 1, "reason": "undo the upgrade"},
}  # fmt: skip
#: Examples of query parameters, by name.
PARAMETER_EXAMPLES: dict[str, Any] = {
    "state_id": "alice",
    "type": "user",
    "status": "active",
    "page": 1,
    "per_page": 20,
    "limit": 10,
    "transition": "update",
    "from": 1,
    "to": 2,
    "filters": {"data.plan": "pro"},
}
_ERROR_EXAMPLE = {
    "error": "not_found",
    "message": "No state with id 'alice'.",
    "details": {"state_id": "alice"},
    "correlation_id": "0b829d3b78ca47fa92384a89b4fdf8f9",
}

_STATE_ID = "$response.body#/state_id"
_VERSION = "$response.body#/version"
#: The links of the answers that carry a record: to every operation on its state.
RECORD_LINKS = {
    "GetState": {"operationId": "get_state", "parameters": {"state_id": _STATE_ID}},
    "TransitionState": {"operationId": "transition_state", "parameters": {"state_id": _STATE_ID}},
    "StateHistory": {"operationId": "state_history", "parameters": {"state_id": _STATE_ID}},
    "DiffState": {
        "operationId": "diff_state",
        "parameters": {"state_id": _STATE_ID, "from": _VERSION, "to": _VERSION},
    },
    "RollbackState": {"operationId": "rollback_state", "parameters": {"state_id": _STATE_ID}},
}
#: The operations whose success answer is a record.
_RECORD_OPERATIONS = frozenset({"register_state", "get_state", "transition_state",
                                "rollback_state"})  # fmt: skip


def openapi_path(prefix: str, rule: str) -> str:
    """A Flask rule as an OpenAPI path: ``/states/<state_id>`` -> ``/states/{state_id}``."""
    return prefix + re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def security_schemes(hook: AccessControlHook | None) -> dict[str, Any]:
    """The OpenAPI security schemes of ``hook``: none without a hook or with
    ``"allow-all"``; the hook's :data:`SECURITY_SCHEMES_ATTRIBUTE` where it has one;
    else :data:`DEFAULT_SECURITY_SCHEMES` (a bearer token)."""
    if hook is None or hook is allow_all:
        return {}
    declared = getattr(hook, SECURITY_SCHEMES_ATTRIBUTE, None)
    if declared is None:
        return {name: dict(scheme) for name, scheme in DEFAULT_SECURITY_SCHEMES.items()}
    if not isinstance(declared, Mapping) or not all(
        isinstance(name, str) and isinstance(scheme, Mapping) for name, scheme in declared.items()
    ):
        raise TypeError(
            f"The access hook's {SECURITY_SCHEMES_ATTRIBUTE} must map scheme names to "
            f"OpenAPI Security Scheme Objects (dicts); got {declared!r}."
        )
    return {name: dict(scheme) for name, scheme in declared.items()}


def _json(schema: Any, description: str, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {"application/json": media}}


def _success(route: Route) -> dict[str, Any]:
    example = RESPONSE_EXAMPLES.get(route.endpoint)
    if route.media_type == "application/json":
        success = _json(route.responds, route.success, example)
    else:
        success = {
            "description": route.success,
            "content": {route.media_type: {"schema": route.responds, "example": example}},
        }
    headers: dict[str, Any] = {}
    if route.idempotent:
        headers["Idempotent-Replayed"] = "IdempotentReplayed"
    if route.status == 201:
        headers["Location"] = {
            "description": "The URL of the new state.",
            "required": True,
            "schema": {"type": "string"},
        }
    if headers:
        success["headers"] = headers
    if route.endpoint in _RECORD_OPERATIONS:
        success["links"] = {name: {"$ref": f"#/components/links/{name}"} for name in RECORD_LINKS}
    return success


def _operation(route: Route, *, guarded: bool, rate_limited: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {str(route.status): _success(route)}
    statuses = {*route.errors, *COMMON_ERRORS}
    if guarded:
        statuses |= {401, 403}
    if rate_limited:
        statuses.add(429)
    for status in sorted(statuses):
        description = route.errors.get(status) or ERRORS[status]
        if route.idempotent:
            description += IDEMPOTENCY_ERRORS.get(status, "")
        if status in route.responses:
            description, schema = route.responses[status]
            answer = _json(schema, description)
        elif status == 414:
            answer = {"description": description}
        else:
            answer = _json({"$ref": "#/components/schemas/Error"}, description)
        if status in HEADERS:
            answer["headers"] = HEADERS[status]
        responses[str(status)] = answer
    parameters: list[Any] = [_with_example(p) for p in route.parameters]
    if route.idempotent:
        parameters.append("IdempotencyKey")
    if route.query is not None:
        parameters.append({"in": "query", "schema": route.query})
    operation: dict[str, Any] = {
        "operationId": route.endpoint,
        "summary": route.summary,
        "responses": responses,
    }
    if route.description:
        operation["description"] = route.description
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": route.body,
                    "example": BODY_EXAMPLES[route.endpoint],
                }
            },
        }
    return operation


def _with_example(parameter: dict[str, Any]) -> dict[str, Any]:
    name = parameter.get("name")
    if name in PARAMETER_EXAMPLES and "example" not in parameter:
        return {**parameter, "example": PARAMETER_EXAMPLES[name]}
    return parameter


def _tighten(
    document: dict[str, Any],
    state_types: Sequence[str] | None,
    searchable_types: Sequence[str] | None,
) -> None:
    """What apispec cannot say from the schemas: the enum of the types registered now,
    the examples of the query parameters apispec expanded from a schema."""
    schemas = document["components"]["schemas"]
    if state_types is not None:
        schemas["RegisterState"]["properties"]["type"]["enum"] = list(state_types)
    for path in document["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", ()):
                if "$ref" in parameter or parameter["in"] != "query":
                    continue
                if parameter["name"] == "type" and searchable_types is not None:
                    parameter["schema"]["enum"] = list(searchable_types)
                example = PARAMETER_EXAMPLES.get(parameter["name"])
                if example is not None:
                    parameter.setdefault("example", example)


def build_openapi(
    routes: Iterable[Route],
    *,
    prefix: str = "",
    state_types: Sequence[str] | None = None,
    searchable_types: Sequence[str] | None = None,
    security: Mapping[str, Any] | None = None,
    guarded: bool = True,
    rate_limited: bool = True,
) -> dict[str, Any]:
    """The OpenAPI document of ``routes`` mounted at ``prefix``.

    :param state_types: the registered state types (the enum of ``type`` in bodies);
        None: any type name.
    :param searchable_types: the types ``GET /states`` searches (WARM-home ones): the
        enum of its ``type``; None: any type name.
    :param security: the security schemes (:func:`security_schemes`); every operation
        requires one of them.
    :param guarded: an access hook runs (401 and 403 answers).
    :param rate_limited: rate limits are on (429 answers).
    """
    try:
        release = version("flask-tiered-state")
    except PackageNotFoundError:  # run from a source tree that was never installed
        release = "unknown"
    spec = APISpec(
        title="flask_tiered_state REST API",
        version=release,
        openapi_version=OPENAPI_VERSION,
        info={"description": "Domain states with lifecycles, history and rollback. "
              f"State ids are {STATE_ID_RULE}."},
        plugins=[MarshmallowPlugin()],
    )  # fmt: skip
    for name, schema in COMPONENTS.items():
        spec.components.schema(name, schema=schema)
    spec.components.parameter("IdempotencyKey", "header", {"name": "Idempotency-Key",
                                                           **IDEMPOTENCY_KEY})  # fmt: skip
    spec.components.header("IdempotentReplayed", REPLAYED)
    for name, link in RECORD_LINKS.items():
        spec.components.link(name, link)
    for name, scheme in (security or {}).items():
        spec.components.security_scheme(name, dict(scheme))
    operations: dict[str, dict[str, Any]] = {}
    for route in routes:
        if route.documented:
            operation = _operation(route, guarded=guarded, rate_limited=rate_limited)
            operations.setdefault(route.rule, {})[route.method.lower()] = operation
    for rule, by_method in operations.items():
        spec.path(path=openapi_path(prefix, rule), operations=by_method)
    document: dict[str, Any] = spec.to_dict()
    document["components"]["schemas"]["Error"]["example"] = _ERROR_EXAMPLE
    if security:
        document["security"] = [{name: []} for name in security]
    _tighten(document, state_types, searchable_types)
    return document

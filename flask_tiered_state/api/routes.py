"""The REST blueprint's views (mounted at ``TIERED_STATE_API_PREFIX``).

Every view is guarded by the access-control hook and answers JSON, errors included
(see :mod:`flask_tiered_state.http_errors`), and so do the URLs under the prefix that
no route matches (404, or 405 for a wrong method). Bad input answers 400 (malformed JSON,
a body that is not an object, bad query parameters), 413 (a body larger than
``TIERED_STATE_MAX_REQUEST_BYTES``, refused before it is read), 415 (a body that is not
``application/json``) or 422 (a body that breaks its schema); never 500.

Every POST route mutates, and every one reads the ``Idempotency-Key`` header (see
:mod:`flask_tiered_state.domain.idempotency`): the key goes to the manager call, and a
replayed call answers the first response's status and body with
``Idempotent-Replayed: true``. GET routes ignore the header.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import marshmallow
from flask import Blueprint, current_app, jsonify, request, send_from_directory, url_for
from flask.wrappers import Response
from werkzeug.exceptions import BadRequest, NotFound, RequestEntityTooLarge, UnsupportedMediaType

from ..access import check_access
from ..app_state import get_app_state
from ..domain.idempotency import check_idempotency_key, idempotent_call
from ..domain.manager import StateManager
from ..domain.model import STATE_ID_RULE, StateTransition
from ..domain.paging import DEFAULT_PER_PAGE, MAX_PAGE, MAX_PER_PAGE
from ..domain.search import OBJECT_ROOTS
from ..errors import InvalidRequestError, JSONTooDeepError, StateNotFoundError, ValidationError
from ..http_errors import register_blueprint_error_handlers, route_unmatched_urls
from ..json_codec import check_json_depth, dumps
from ..ratelimit import get_limiter, limit_blueprint
from ..setting_values import allow_all
from ..storage.base import StateCategory
from .openapi import build_openapi, security_schemes
from .schemas import (
    MAX_HISTORY_LIMIT,
    STATE_ID_SCHEMA,
    DiffQuerySchema,
    DiffSchema,
    HealthSchema,
    HistoryQuerySchema,
    HistorySchema,
    ListQuerySchema,
    PageSchema,
    RecordSchema,
    RegisterStateSchema,
    RollbackSchema,
    TransitionSchema,
)
from .viewer import VIEWER_FILES, VIEWER_PACKAGE, viewer_directory, viewer_page

__all__ = [
    "FILTER_NAME_PATTERN",
    "IDEMPOTENCY_KEY_HEADER",
    "REPLAYED_HEADER",
    "ROUTES",
    "Route",
    "create_api_blueprint",
    "health_body",
    "history_body",
    "recent_history_body",
]

BLUEPRINT_NAME = "tiered_state_api"
#: The request header naming a request, read by every POST route.
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
#: The response header (``true``) of an answer replayed from a key's first request.
REPLAYED_HEADER = "Idempotent-Replayed"
#: Query parameters of ``GET /states`` that are filters although they have no dot.
PLAIN_FILTERS = frozenset({"name"})
#: The filter names ``GET /states`` accepts: those above, and dotted paths into the
#: record's objects (what :func:`~flask_tiered_state.domain.search.parse_filters` takes).
FILTER_NAME_PATTERN = (
    rf"^({'|'.join(sorted(PLAIN_FILTERS))}|({'|'.join(OBJECT_ROOTS)})(\.[A-Za-z0-9_\-]{{1,100}})+)$"
)


@dataclass(frozen=True, slots=True)
class Route:
    """One view: URL rule (relative to the prefix), method, endpoint, hook action, and
    what the OpenAPI document says of it (the schemas it loads and answers with)."""

    rule: str
    method: str
    endpoint: str
    action: str
    view: Callable[..., Response]
    summary: str
    responds: type[marshmallow.Schema] | dict[str, Any]
    status: int = 200
    body: type[marshmallow.Schema] | None = None
    query: type[marshmallow.Schema] | None = None
    parameters: tuple[dict[str, Any], ...] = ()
    #: The error statuses the view answers besides those every view may give (405, 413,
    #: 414, 500; 401/403 with a hook, 429 with rate limits): status -> what it means here
    #: ("" for the document's usual sentence).
    errors: Mapping[int, str] = field(default_factory=dict)
    #: Answers with another schema than the error body: status -> (meaning, schema).
    responses: Mapping[int, tuple[str, Any]] = field(default_factory=dict)
    #: Reads the ``Idempotency-Key`` header (every POST route: they all mutate).
    idempotent: bool = False
    #: What the success answer is, and its media type.
    success: str = "Success."
    media_type: str = "application/json"
    description: str = ""
    #: In the OpenAPI document (the viewer's static files are not).
    documented: bool = True


# One instance per schema, made once: making one deep-copies its fields, which cost a
# POST more CPU than loading its body did. load() keeps nothing on the instance, so one
# instance serves every request and thread.
_LIST_QUERY = ListQuerySchema()
_REGISTER_BODY = RegisterStateSchema()
_TRANSITION_BODY = TransitionSchema()
_HISTORY_QUERY_SCHEMA = HistoryQuerySchema()
_DIFF_QUERY = DiffQuerySchema()
_ROLLBACK_BODY = RollbackSchema()


def _respond(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _respond_record(
    record: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A state's record as the answer, encoded by the store's JSON codec (orjson with the
    ``fast`` extra): a stored record is JSON by construction, so the app's JSON provider
    (three times slower per record) has nothing to convert. The text is the canonical
    one (sorted keys) with jsonify's final newline; non-ASCII characters are sent as
    UTF-8 rather than escaped."""
    text = dumps(record) + "\n"
    return current_app.response_class(text, status, headers, mimetype="application/json")


def _manager() -> Any:
    return get_app_state().manager


def _actor() -> str | None:
    return check_access(get_app_state().settings.access_control, _ACTIONS[request.endpoint or ""])


def _messages(exc: marshmallow.ValidationError) -> dict[str, Any]:
    if isinstance(exc.messages, dict):
        return dict(exc.messages)
    return {"_schema": exc.messages}


def _body(schema: marshmallow.Schema) -> dict[str, Any]:
    if not request.is_json:
        raise UnsupportedMediaType(
            f"The request body must be JSON sent with 'Content-Type: application/json'; "
            f"got {request.mimetype or 'no content type'!r}."
        )
    try:
        body = request.get_json()
    except BadRequest:
        raise InvalidRequestError(
            "The request body is not valid JSON; send one JSON object."
        ) from None
    except RecursionError:  # json's decoder recurses once per level
        raise JSONTooDeepError(
            "the request body", _manager().max_json_depth, field="body", parsed=False
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequestError(
            f"The request body must be a JSON object; got {type(body).__name__}.",
            details={"body_type": type(body).__name__},
        )
    # The manager holds data and metadata to the same limit; checked here too, before
    # the schema and the idempotency fingerprint walk the body by recursion.
    limit = _manager().max_json_depth
    for name, value in body.items():
        field = name if name in schema.fields else "body"  # no unknown names echoed
        check_json_depth(value, limit, what=f"the {field} in the request body", field=field)
    try:
        loaded: dict[str, Any] = schema.load(body)
    except marshmallow.ValidationError as exc:
        raise ValidationError(
            "The request body is invalid; see details.errors for each field.",
            errors=_messages(exc),
        ) from None
    return loaded


def _query(schema: marshmallow.Schema, args: Mapping[str, str]) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = schema.load(args)
    except marshmallow.ValidationError as exc:
        raise InvalidRequestError(
            "Invalid query parameters; see details.errors for each parameter.",
            details={"errors": _messages(exc)},
        ) from None
    return loaded


def _filter_value(text: str) -> Any:
    """``30`` -> 30, ``true`` -> True, ``"30"`` -> "30", ``active`` -> "active"."""

    def reject(constant: str) -> Any:
        raise ValueError(constant)

    try:
        return json.loads(text, parse_constant=reject)
    except (ValueError, RecursionError):  # too deep to parse: kept as text
        return text


_T = TypeVar("_T")


def _idempotent(mutation: Callable[[str | None], _T]) -> tuple[_T, dict[str, str]]:
    """Run ``mutation(idempotency_key)`` with the request's ``Idempotency-Key`` (None
    without the header); the headers to answer with (``Idempotent-Replayed: true``
    when the manager replayed the key's stored result instead of applying anything).

    :raises InvalidRequestError: the header is not 1 to 255 printable ASCII characters.
    """
    header = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    key = None if header is None else check_idempotency_key(header)
    with idempotent_call() as call:
        result = mutation(key)
    return result, {REPLAYED_HEADER: "true"} if call.replayed else {}


def _existing(state_id: str) -> dict[str, Any]:
    record: dict[str, Any] | None = _manager().get_state(state_id)
    if record is None:
        raise StateNotFoundError(state_id)
    return record


# -- views ---------------------------------------------------------------------


def list_states() -> Response:
    _actor()
    named: dict[str, str] = {}
    filters: dict[str, Any] = {}
    for name in request.args:
        values = request.args.getlist(name)
        if len(values) > 1:
            raise InvalidRequestError(
                f"Query parameter {name!r} is given {len(values)} times; give it once.",
                details={"parameter": name},
            )
        if "." in name or name in PLAIN_FILTERS:
            filters[name] = _filter_value(values[0])
        else:
            named[name] = values[0]
    query = _query(_LIST_QUERY, named)
    if "status" in query:
        filters["status"] = query["status"]
    page = _manager().search_states(
        query.get("type"), filters or None, page=query["page"], per_page=query["per_page"]
    )
    return _respond(page.to_dict())


def register_state() -> Response:
    actor = _actor()
    body = _body(_REGISTER_BODY)
    state_id = body.pop("state_id")
    record, headers = _idempotent(
        lambda key: _manager().register_state(
            state_id, body["type"], body, actor=actor, idempotency_key=key
        )
    )
    location = url_for(f".{_ENDPOINT_GET}", state_id=record["state_id"])
    return _respond_record(record, 201, {"Location": location, **headers})


def get_state(state_id: str) -> Response:
    _actor()
    return _respond_record(_existing(state_id))


def transition_state(state_id: str) -> Response:
    actor = _actor()
    body = _body(_TRANSITION_BODY)
    changes = {k: body[k] for k in ("name", "data", "metadata") if k in body}
    record, headers = _idempotent(
        lambda key: _manager().update_state(
            state_id,
            changes or None,
            body["transition"],
            expected_version=body.get("expected_version"),
            actor=actor,
            reason=body.get("reason"),
            idempotency_key=key,
        )
    )
    return _respond_record(record, 200, headers)


def state_history(state_id: str) -> Response:
    _actor()
    args = request.args.to_dict()
    query = _query(_HISTORY_QUERY_SCHEMA, args)
    manager = _manager()
    if "limit" in query:
        others = sorted({"page", "per_page", "transition"} & set(args))
        if others:
            raise InvalidRequestError(
                f"limit (the latest N changes) goes alone, not with {', '.join(others)}; "
                "page through the history with page and per_page instead.",
                details={"parameters": ["limit", *others]},
            )
        return _respond(recent_history_body(manager, state_id, query["limit"]))
    body = history_body(
        manager, state_id, transition=query.get("transition"), page=query["page"],
        per_page=query["per_page"],
        link=lambda values: url_for(f".{_ENDPOINT_HISTORY}", **values),
    )  # fmt: skip
    return _respond(body)


def history_body(
    manager: StateManager,
    state_id: str,
    *,
    transition: str | None = None,
    page: int = 1,
    per_page: int = DEFAULT_PER_PAGE,
    link: Callable[[dict[str, Any]], str] | None = None,
) -> dict[str, Any]:
    """The body of ``GET .../history`` for a page, also printed by ``flask state history
    --json``: ``{"state_id", "items", "total", "page", "per_page", "pages",
    "total_exact", "next"}``; ``next`` is ``link(values)`` of the following page's query
    (None on the last page, or without ``link``).

    :raises StateNotFoundError: no change matches and the state never existed.
    """
    result = manager.get_history_page(state_id, transition=transition, page=page, per_page=per_page)
    if result.total == 0 and manager.get_state(state_id, include_deleted=True) is None:
        raise StateNotFoundError(state_id)
    following = None
    if result.has_next and link is not None:
        following = link(
            {"state_id": state_id, "page": result.page + 1, "per_page": result.per_page,
             **({"transition": transition} if transition else {})}
        )  # fmt: skip
    return {"state_id": state_id, **result.to_dict(), "next": following}


def recent_history_body(manager: StateManager, state_id: str, limit: int) -> dict[str, Any]:
    """The body of ``GET .../history?limit=N`` (and ``flask state history --limit N
    --json``): ``{"state_id", "items"}``, the latest N changes, newest first.

    :raises StateNotFoundError: the state never existed.
    """
    items = manager.get_recent_changes(state_id, limit)
    if not items and manager.get_state(state_id, include_deleted=True) is None:
        raise StateNotFoundError(state_id)
    return {"state_id": state_id, "items": items}


def health_body(manager: StateManager) -> dict[str, Any]:
    """The body of ``GET /health`` (and ``flask state health --json``): the manager's
    health status, NaN and infinities as null."""
    status: dict[str, Any] = _finite(manager.get_health_status())
    return status


def diff_state(state_id: str) -> Response:
    _actor()
    query = _query(_DIFF_QUERY, request.args.to_dict())
    diff = _manager().diff_versions(state_id, query["from_version"], query["to_version"])
    return _respond(diff)


def rollback_state(state_id: str) -> Response:
    actor = _actor()
    body = _body(_ROLLBACK_BODY)
    record, headers = _idempotent(
        lambda key: _manager().rollback_state(
            state_id, body["to_version"], actor=actor, reason=body.get("reason"),
            idempotency_key=key,
        )
    )  # fmt: skip
    return _respond_record(record, 200, headers)


def health() -> Response:
    _actor()
    status = health_body(_manager())
    healthy = status.get("status") != "unhealthy"
    return _respond(status, 200 if healthy else 503)


def limit_request_body() -> None:
    """Refuse a body larger than ``TIERED_STATE_MAX_REQUEST_BYTES`` (413): by its
    ``Content-Length`` before anything is read; a chunked one (no length) by reading at
    most one byte more than the limit (werkzeug would cut it there without a word)."""
    environ = request.environ
    if not environ.get("CONTENT_LENGTH") and "HTTP_TRANSFER_ENCODING" not in environ:
        return  # no body (every GET): nothing to measure, no settings to look up
    limit = get_app_state().settings.request_bytes_limit
    app_limit = request.max_content_length
    if limit is None or (app_limit is not None and app_limit <= limit):
        return  # the app's own MAX_CONTENT_LENGTH is the tighter bound
    length = request.content_length
    if length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        with contextlib.suppress(AttributeError):  # Flask < 3.1: read-only (the app config's)
            request.max_content_length = limit + 1  # type: ignore[misc,unused-ignore]
        length = len(request.get_data(cache=True))  # the views read it from the cache
    if length is not None and length > limit:
        raise RequestEntityTooLarge(
            f"The request body is {'more than ' if length == limit + 1 else ''}{length} "
            f"bytes; the API reads at most {limit} bytes (TIERED_STATE_MAX_REQUEST_BYTES)."
        )


def openapi_document() -> Response:
    _actor()
    app_state = get_app_state()
    hook = app_state.settings.access_control
    types = app_state.manager.types
    document = build_openapi(
        ROUTES,
        prefix=app_state.settings.api_prefix or "",
        state_types=types.names(),
        searchable_types=[n for n in types.names() if types.get(n).home_tier is StateCategory.WARM],
        security=security_schemes(hook),
        guarded=hook is not None and hook is not allow_all,
        rate_limited=get_limiter(current_app._get_current_object()) is not None,  # type: ignore[attr-defined]
    )
    return _respond(document)


def api_docs() -> Response:
    """The HTML viewer of the document (Swagger UI, from the ``apidocs`` extra)."""
    _actor()
    _viewer_directory()
    return Response(viewer_page(url_for(f".{_ENDPOINT_OPENAPI}"), url_for(f".{_ENDPOINT_DOCS}")),
                    mimetype="text/html")  # fmt: skip


def api_docs_asset(filename: str) -> Response:
    """One of the viewer's static files (:data:`VIEWER_FILES`)."""
    _actor()
    directory = _viewer_directory()
    if filename not in VIEWER_FILES:
        raise NotFound(
            f"The API viewer has no file {filename[:80]!r}; it serves "
            f"{', '.join(sorted(VIEWER_FILES))}."
        )
    return send_from_directory(directory, filename, max_age=3600)


def _viewer_directory() -> str:
    directory = viewer_directory()
    if directory is None:
        raise NotFound(
            "The API viewer is not installed: install the apidocs extra "
            f"(pip install 'flask-tiered-state[apidocs]', which brings {VIEWER_PACKAGE}). "
            f"The OpenAPI document itself is at {url_for(f'.{_ENDPOINT_OPENAPI}')}."
        )
    return directory


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity; report them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


_ENDPOINT_GET = "get_state"
_ENDPOINT_HISTORY = "state_history"
_ENDPOINT_OPENAPI = "openapi"
_ENDPOINT_DOCS = "api_docs"

_STATE_ID = {
    "name": "state_id",
    "in": "path",
    "required": True,
    "description": f"State ids are {STATE_ID_RULE}.",
    "schema": {"type": "string", **STATE_ID_SCHEMA},
}
_FILTERS = {
    "name": "filters",
    "in": "query",
    "description": (
        "Equality filters: name, or a dotted path into data or metadata (data.plan=pro, "
        "metadata.source=import) whose keys are 1 to 100 letters, digits, _ and -; each "
        "once. Values are read as JSON where they parse (30, true, null), else as text; "
        "a value no backend compares answers 400: NaN or an infinity (1e999), an integer "
        "beyond 64 bits, a NUL character."
    ),
    "style": "form",
    "explode": True,
    "schema": {
        "type": "object",
        "propertyNames": {"pattern": FILTER_NAME_PATTERN},
        "additionalProperties": {"type": "string", "pattern": "^[^\\u0000]*$"},
    },
}

_NOT_FOUND = "No such state (not_found)."
_NO_VERSION = "No such state (not_found), or no such recorded version (version_not_found)."
_BODY_400 = (
    "The body is not one JSON object, or nests deeper than "
    "TIERED_STATE_MAX_JSON_DEPTH (json_too_deep); a bad state id or Idempotency-Key "
    "(invalid_request)."
)
_STORAGE = {503: ""}
#: The errors of the routes that take a state id in the path and a JSON body.
_CHANGE_ERRORS = {400: _BODY_400, 404: _NOT_FOUND, 409: "", 415: "", 422: "", **_STORAGE}

_PAGING = {
    "page": {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_PAGE,
        "default": 1,
        "description": f"The page, from 1 to {MAX_PAGE:,}.",
    },
    "per_page": {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_PER_PAGE,
        "default": DEFAULT_PER_PAGE,
        "description": f"Changes per page, from 1 to {MAX_PER_PAGE}.",
    },
}
#: The query of ``GET /states/<id>/history``: a page (of one transition), or ``limit``
#: alone; what HistoryQuerySchema and the view accept, as one object (OpenAPI cannot say
#: "limit goes alone" of separate parameters).
_HISTORY_QUERY = {
    "name": "history_query",
    "in": "query",
    "style": "form",
    "explode": True,
    "description": "Either page, per_page and transition (a page of changes, oldest "
    "first), or limit alone (the latest N changes, newest first); any other parameter "
    "answers 400.",
    "schema": {
        "anyOf": [
            {"type": "object", "title": "A page", "additionalProperties": False,
             "properties": {**_PAGING, "transition": {
                 "type": "string", "enum": [t.value for t in StateTransition],
                 "description": "Only changes made by this transition (any case)."}}},
            {"type": "object", "title": "The latest N", "additionalProperties": False,
             "required": ["limit"],
             "properties": {"limit": {"type": "integer", "minimum": 1,
                                      "maximum": MAX_HISTORY_LIMIT,
                                      "description": "The latest N changes, newest first."}}},
        ]
    },
    "example": {"page": 1, "per_page": 20},
}  # fmt: skip

#: Every route of the blueprint; the OpenAPI document is built from this table.
ROUTES: tuple[Route, ...] = (
    Route(
        "/states", "GET", "list_states", "states.list", list_states,
        f"List states by type, status and filters, {MAX_PER_PAGE} at most per page.",
        PageSchema, query=ListQuerySchema, parameters=(_FILTERS,),
        errors={400: "Bad query parameters: an unknown name, one given twice, a page out "
                "of range, an unknown status, a filter name or value the server refuses "
                "(invalid_request).",
                422: "An unknown state type (invalid_state_type).", **_STORAGE},
    ),
    Route(
        "/states", "POST", "register_state", "states.register", register_state,
        "Register a new state.", RecordSchema, status=201, body=RegisterStateSchema,
        idempotent=True, success="The new state's record.",
        errors={400: _BODY_400,
                409: "The id is taken or was ever used (already_exists), or the type holds "
                "its quota of states already (quota_exceeded).",
                413: "The request body is larger than TIERED_STATE_MAX_REQUEST_BYTES "
                "(request_entity_too_large), or the record than "
                "TIERED_STATE_MAX_STATE_BYTES (state_too_large).",
                415: "",
                422: "The body breaks its schema or the type's validators refused the data "
                "(validation_error), or the type is unknown (invalid_state_type).",
                **_STORAGE},
    ),
    Route(
        "/states/<state_id>", "GET", _ENDPOINT_GET, "states.read", get_state,
        "A state's current record.", RecordSchema, parameters=(_STATE_ID,),
        errors={400: "A bad state id (invalid_request).",
                404: "No such state, or it was deleted (not_found).", **_STORAGE},
    ),
    Route(
        "/states/<state_id>/transitions", "POST", "transition_state", "states.transition",
        transition_state, "Apply a lifecycle transition (or UPDATE) to a state.",
        RecordSchema, body=TransitionSchema, parameters=(_STATE_ID,), idempotent=True,
        success="The state's new record.",
        errors={**_CHANGE_ERRORS,
                413: "The request body is larger than TIERED_STATE_MAX_REQUEST_BYTES "
                "(request_entity_too_large), or the new record than "
                "TIERED_STATE_MAX_STATE_BYTES (state_too_large)."},
    ),
    Route(
        "/states/<state_id>/history", "GET", _ENDPOINT_HISTORY, "states.history", state_history,
        "A state's history, a page at a time (50 changes by default, oldest first; the "
        "answer's next links the following page), of one transition, or the latest N.",
        HistorySchema, parameters=(_STATE_ID, _HISTORY_QUERY),
        errors={400: "A bad state id or query parameters, or limit with page, per_page or "
                "transition (invalid_request).", 404: _NOT_FOUND, **_STORAGE},
    ),
    Route(
        "/states/<state_id>/diff", "GET", "diff_state", "states.diff", diff_state,
        "What changed between two versions, as dotted paths.",
        DiffSchema, query=DiffQuerySchema, parameters=(_STATE_ID,),
        errors={400: "A bad state id, or from/to missing or not 1 to 2,147,483,647 "
                "(invalid_request).", 404: _NO_VERSION, **_STORAGE},
    ),
    Route(
        "/states/<state_id>/rollback", "POST", "rollback_state", "states.rollback",
        rollback_state, "Restore an earlier version's record as a new, recorded version.",
        RecordSchema, body=RollbackSchema, parameters=(_STATE_ID,), idempotent=True,
        success="The state's new record (the restored one, at the next version).",
        errors={**_CHANGE_ERRORS,
                404: "No such state (not_found), or to_version is not a recorded version: "
                "one the state has not reached yet included (version_not_found).",
                409: "The lifecycle does not allow the status change the rollback implies "
                "(invalid_transition), or the state is at to_version already "
                "(already_at_version)."},
    ),
    Route(
        "/health", "GET", "health", "health", health,
        "Health of the manager and every tier (503 when unhealthy).",
        HealthSchema, responses={503: ("Unhealthy: the WARM tier is down.", HealthSchema)},
        errors={503: ""},
    ),
    Route(
        "/openapi.json", "GET", _ENDPOINT_OPENAPI, "openapi", openapi_document,
        "This document.", {"type": "object", "description": "An OpenAPI 3.1 document."},
        success="The OpenAPI document, with the prefix in its paths and the state types "
        "registered now.",
    ),
    Route(
        "/docs", "GET", _ENDPOINT_DOCS, "openapi", api_docs,
        "An HTML viewer of this document (Swagger UI, from the apidocs extra).",
        {"type": "string"}, media_type="text/html", success="The viewer's page.",
        errors={404: "The viewer is not installed (the apidocs extra); the message says "
                "what to install (not_found)."},
    ),
    Route(
        "/docs/<path:filename>", "GET", "api_docs_asset", "openapi", api_docs_asset,
        "A static file of the viewer.", {"type": "string"}, documented=False,
    ),
)  # fmt: skip

_ACTIONS = {f"{BLUEPRINT_NAME}.{route.endpoint}": route.action for route in ROUTES}


def create_api_blueprint() -> Blueprint:
    """A fresh blueprint with every route (one per app, registered by ``init_app``).

    Its handlers answer its errors as JSON, before any handler of the app; registered
    with a URL prefix, it also answers the unknown URLs and wrong methods under it.
    """
    blueprint = Blueprint(BLUEPRINT_NAME, __name__)
    blueprint.before_request(limit_request_body)
    register_blueprint_error_handlers(blueprint)
    limit_blueprint(blueprint, _ACTIONS)  # TIERED_STATE_RATE_LIMIT_*
    for route in ROUTES:
        blueprint.add_url_rule(route.rule, route.endpoint, route.view, methods=[route.method])
    route_unmatched_urls(blueprint)
    return blueprint

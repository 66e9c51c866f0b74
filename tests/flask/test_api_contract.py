"""Issue 13, finding 7: the OpenAPI document is as tight as the server (patterns, enums,
maxima, every status, securitySchemes, examples, links), rollback to a version not
reached yet is 404 as documented, and the HTML viewer is served from the apidocs extra."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask

from flask_tiered_state.domain.arguments import MAX_NAME_LENGTH, MAX_VERSION
from flask_tiered_state.domain.model import StateStatus, StateTransition
from flask_tiered_state.domain.paging import MAX_PAGE, MAX_PER_PAGE
from flask_tiered_state.extension import get_app_state

from .conftest import AppFactory, register


def _document(app: Flask, **headers: str) -> dict[str, Any]:
    response = app.test_client().get("/api/openapi.json", headers=headers)
    assert response.status_code == 200, response.get_json()
    document: dict[str, Any] = response.get_json()
    return document


def _parameter(operation: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in operation["parameters"] if p.get("name") == name)


def test_ids_enums_and_maxima_are_documented(make_app: AppFactory) -> None:
    app = make_app(TIERED_STATE_API_PREFIX="/api")
    get_app_state(app).manager.register_state_type("invoice")
    document = _document(app)
    paths = document["paths"]
    schemas = document["components"]["schemas"]

    pattern = _parameter(paths["/api/states/{state_id}"]["get"], "state_id")["schema"]["pattern"]
    assert re.fullmatch(pattern, "alice:1@x.y-z_") and not re.fullmatch(pattern, "a/b")
    assert not re.fullmatch(pattern, "a" * 201)
    register_body = schemas["RegisterState"]["properties"]
    assert register_body["state_id"]["pattern"] == pattern
    # The types registered when the document is served; GET /states: the searchable ones.
    assert "invoice" in register_body["type"]["enum"] and "session" in register_body["type"]["enum"]
    listing = paths["/api/states"]["get"]
    assert "invoice" in _parameter(listing, "type")["schema"]["enum"]
    assert "session" not in _parameter(listing, "type")["schema"]["enum"]
    assert _parameter(listing, "status")["schema"]["enum"] == [s.value for s in StateStatus]
    assert _parameter(listing, "page")["schema"]["maximum"] == MAX_PAGE
    assert _parameter(listing, "per_page")["schema"]["maximum"] == MAX_PER_PAGE
    names = _parameter(listing, "filters")["schema"]["propertyNames"]["pattern"]
    assert re.fullmatch(names, "data.plan") and re.fullmatch(names, "name")
    assert not re.fullmatch(names, "state_id.x") and not re.fullmatch(names, "data")
    history = _parameter(paths["/api/states/{state_id}/history"]["get"], "history_query")
    page, latest = history["schema"]["anyOf"]
    assert page["properties"]["transition"]["enum"] == [t.value for t in StateTransition]
    assert latest["required"] == ["limit"] and latest["additionalProperties"] is False
    assert schemas["Rollback"]["properties"]["to_version"]["maximum"] == MAX_VERSION
    assert schemas["RegisterState"]["properties"]["name"]["maxLength"] == MAX_NAME_LENGTH
    diff = paths["/api/states/{state_id}/diff"]["get"]
    assert _parameter(diff, "from")["schema"]["maximum"] == MAX_VERSION


def test_every_status_examples_and_links(make_app: AppFactory) -> None:
    app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_RATE_LIMIT=True,
                   TIERED_STATE_ACCESS_CONTROL=lambda request, action: True)  # fmt: skip
    document = _document(app)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            statuses = set(operation["responses"])
            assert {"401", "403", "405", "413", "414", "429", "500"} <= statuses, path
            assert "Retry-After" in operation["responses"]["429"]["headers"]
            assert "Allow" in operation["responses"]["405"]["headers"]
            success = next(s for s in statuses if s.startswith("2"))
            content = operation["responses"][success]["content"]
            assert all("example" in media for media in content.values()), (path, method)
            if "requestBody" in operation:
                assert "example" in operation["requestBody"]["content"]["application/json"]
    rollback = document["paths"]["/api/states/{state_id}/rollback"]["post"]["responses"]
    assert {"404", "409", "415", "422", "503"} <= set(rollback)
    assert "version_not_found" in rollback["404"]["description"]
    created = document["paths"]["/api/states"]["post"]["responses"]["201"]
    assert created["headers"]["Location"]["required"] is True
    links = {link["$ref"].rsplit("/", 1)[1] for link in created["links"].values()}
    targets = {document["components"]["links"][name]["operationId"] for name in links}
    assert targets == {"get_state", "transition_state", "state_history", "diff_state",
                       "rollback_state"}  # fmt: skip


def test_security_schemes_follow_the_hook(make_app: AppFactory) -> None:
    from flask_tiered_state.api.openapi import DEFAULT_SECURITY_SCHEMES

    open_app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_ACCESS_CONTROL="allow-all")
    document = _document(open_app)
    assert "securitySchemes" not in document["components"] and "security" not in document
    assert "401" not in document["paths"]["/api/health"]["get"]["responses"]

    def hook(request: Any, action: str) -> bool:
        return True

    by_default = _document(make_app(TIERED_STATE_API_PREFIX="/api",
                                    TIERED_STATE_ACCESS_CONTROL=hook))  # fmt: skip
    assert by_default["components"]["securitySchemes"] == dict(DEFAULT_SECURITY_SCHEMES)
    assert by_default["security"] == [{"bearerAuth": []}]

    def keyed(request: Any, action: str) -> bool:
        return True

    keyed.openapi_security_schemes = {  # type: ignore[attr-defined]
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    }
    declared = _document(make_app(TIERED_STATE_API_PREFIX="/api",
                                  TIERED_STATE_ACCESS_CONTROL=keyed))  # fmt: skip
    assert declared["components"]["securitySchemes"] == keyed.openapi_security_schemes  # type: ignore[attr-defined]
    assert declared["security"] == [{"apiKey": []}]


def test_rollback_to_a_version_not_reached_yet_is_404(make_app: AppFactory) -> None:
    client = make_app(TIERED_STATE_API_PREFIX="/api").test_client()
    register(client, "u1")
    client.post("/api/states/u1/transitions", json={"transition": "update", "data": {"a": 1}})
    future = client.post("/api/states/u1/rollback", json={"to_version": 3})
    assert future.status_code == 404, future.get_json()
    assert future.get_json()["error"] == "version_not_found"
    assert future.get_json()["details"]["available"] == [1, 2]
    current = client.post("/api/states/u1/rollback", json={"to_version": 2})
    assert current.status_code == 409, current.get_json()
    assert current.get_json()["error"] == "already_at_version"
    assert client.post("/api/states/u1/rollback", json={"to_version": 1}).status_code == 200


def test_the_viewer_is_served_behind_the_hook(make_app: AppFactory) -> None:
    actions: list[str] = []

    def hook(request: Any, action: str) -> bool:
        actions.append(action)
        return bool(request.headers.get("Authorization") == "Bearer t")

    client = make_app(
        TIERED_STATE_API_PREFIX="/api", TIERED_STATE_ACCESS_CONTROL=hook
    ).test_client()
    assert client.get("/api/docs").status_code == 403
    page = client.get("/api/docs", headers={"Authorization": "Bearer t"})
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert "/api/openapi.json" in text and "/api/docs/swagger-ui-bundle.js" in text
    assert "http" not in text.replace("http-equiv", "")  # no CDN
    with client.get(
        "/api/docs/swagger-ui-bundle.js", headers={"Authorization": "Bearer t"}
    ) as script:
        assert script.status_code == 200 and len(script.data) > 100_000
    assert client.get("/api/docs/swagger-ui-bundle.js").status_code == 403
    other = client.get("/api/docs/../openapi.py", headers={"Authorization": "Bearer t"})
    assert other.status_code == 404
    assert set(actions) == {"openapi"}


def test_the_viewer_without_its_extra_says_what_to_install(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_tiered_state.api import viewer

    monkeypatch.setattr(viewer, "_MODULE", "no_such_module_for_the_viewer")
    client = make_app(TIERED_STATE_API_PREFIX="/api").test_client()
    answer = client.get("/api/docs")
    assert answer.status_code == 404 and answer.is_json
    assert "flask-tiered-state[apidocs]" in answer.get_json()["message"]
    assert client.get("/api/docs/swagger-ui.css").status_code == 404

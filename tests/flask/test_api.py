"""The REST blueprint: every route, paging and filters, the access-control hook, and
the OpenAPI document checked against the app's real URL rules."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_tiered_state.api.openapi import openapi_path
from flask_tiered_state.api.routes import BLUEPRINT_NAME, ROUTES
from flask_tiered_state.http_errors import UNMATCHED_ENDPOINT

from .conftest import AppFactory, register


def test_register_answers_201_with_the_record_and_its_location(client: FlaskClient) -> None:
    response = client.post(
        "/api/states",
        json={"state_id": "u1", "type": "USER", "name": "Ada", "data": {"plan": "pro"}},
    )
    assert response.status_code == 201
    record = response.get_json()
    assert record["state_id"] == "u1" and record["type"] == "user"
    assert record["status"] == "created" and record["version"] == 1
    assert record["name"] == "Ada" and record["data"] == {"plan": "pro"}
    assert response.headers["Location"] == "/api/states/u1"
    assert client.get("/api/states/u1").get_json() == record


def test_transitions_apply_the_lifecycle_and_keep_data_unless_given(client: FlaskClient) -> None:
    register(client, "u1")
    active = client.post("/api/states/u1/transitions", json={"transition": "ACTIVATE"})
    assert active.status_code == 200
    assert active.get_json()["status"] == "active"
    assert active.get_json()["data"] == {"plan": "free"}
    updated = client.post(
        "/api/states/u1/transitions",
        json={"transition": "update", "data": {"plan": "pro"}, "expected_version": 2,
              "reason": "upgrade"},
    )  # fmt: skip
    assert updated.get_json()["data"] == {"plan": "pro"}
    assert updated.get_json()["version"] == 3
    rows = client.get("/api/states/u1/history").get_json()["items"]
    assert [r["transition"] for r in rows] == ["create", "activate", "update"]
    assert rows[2]["reason"] == "upgrade"


def test_delete_is_a_transition_and_hides_the_state(client: FlaskClient) -> None:
    register(client, "u1")
    deleted = client.post("/api/states/u1/transitions", json={"transition": "DELETE"})
    assert deleted.get_json()["status"] == "deleted"
    assert client.get("/api/states/u1").status_code == 404
    history = client.get("/api/states/u1/history").get_json()["items"]
    assert [r["transition"] for r in history] == ["create", "delete"]


def test_list_filters_by_type_status_and_dotted_paths_with_paging(client: FlaskClient) -> None:
    for number in range(5):
        register(client, f"u{number}", data={"plan": "pro" if number % 2 else "free",
                                             "seats": number})  # fmt: skip
    register(client, "t1", "transaction")
    client.post("/api/states/u1/transitions", json={"transition": "activate"})

    page = client.get("/api/states?type=user&per_page=2&page=2").get_json()
    assert page["total"] == 5 and page["pages"] == 3 and page["page"] == 2
    assert len(page["items"]) == 2
    pro = client.get("/api/states?type=user&data.plan=pro").get_json()
    assert sorted(r["state_id"] for r in pro["items"]) == ["u1", "u3"]
    typed = client.get("/api/states?data.seats=3").get_json()
    assert [r["state_id"] for r in typed["items"]] == ["u3"]
    active = client.get("/api/states?status=ACTIVE").get_json()
    assert [r["state_id"] for r in active["items"]] == ["u1"]
    everything = client.get("/api/states").get_json()
    assert everything["total"] == 6


def test_history_limit_and_transition_filters(client: FlaskClient) -> None:
    register(client, "u1")
    for transition in ("activate", "suspend", "resume"):
        client.post("/api/states/u1/transitions", json={"transition": transition})
    recent = client.get("/api/states/u1/history?limit=2").get_json()["items"]
    assert [r["version"] for r in recent] == [4, 3]
    suspends = client.get("/api/states/u1/history?transition=SUSPEND").get_json()["items"]
    assert [r["to_status"] for r in suspends] == ["suspended"]


def test_diff_and_rollback(client: FlaskClient) -> None:
    register(client, "u1")
    client.post("/api/states/u1/transitions",
                json={"transition": "update", "data": {"plan": "pro", "seats": 3}})  # fmt: skip
    diff = client.get("/api/states/u1/diff?from=1&to=2").get_json()
    assert diff["changed"] == {"data.plan": {"from": "free", "to": "pro"}}
    assert diff["added"] == {"data.seats": 3}
    rolled = client.post("/api/states/u1/rollback", json={"to_version": 1, "reason": "oops"})
    assert rolled.status_code == 200
    assert rolled.get_json()["data"] == {"plan": "free"}
    assert rolled.get_json()["version"] == 3
    last = client.get("/api/states/u1/history?limit=1").get_json()["items"][0]
    assert last["transition"] == "rollback" and last["reason"] == "oops"


def test_health(client: FlaskClient) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "healthy"
    assert set(body["tiers"]) == {"hot", "warm", "cold"}


def test_the_access_hook_guards_every_route_and_names_the_actor(make_app: AppFactory) -> None:
    calls: list[str] = []

    def hook(request: Any, action: str) -> object:
        calls.append(action)
        if request.headers.get("X-User") == "mallory":
            return False
        return request.headers.get("X-User") or None

    app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_ACCESS_CONTROL=hook)
    client = app.test_client()
    ada = {"X-User": "ada"}
    assert client.post("/api/states", json={"state_id": "u1", "type": "user"},
                       headers=ada).status_code == 201  # fmt: skip
    client.post("/api/states/u1/transitions", json={"transition": "activate"}, headers=ada)
    rows = client.get("/api/states/u1/history", headers=ada).get_json()["items"]
    assert [r["actor"] for r in rows] == ["ada", "ada"]

    for route in ROUTES:
        path = route.rule.replace("<state_id>", "u1")
        for headers in ({"X-User": "mallory"}, {}):
            response = client.open("/api" + path, method=route.method, headers=headers,
                                   json={})  # fmt: skip
            assert response.status_code == 403, (route, headers)
            body = response.get_json()
            assert body["error"] == "forbidden"
            assert route.action in body["message"]
    assert {r.action for r in ROUTES} <= set(calls)


def test_the_openapi_document_is_valid(client: FlaskClient) -> None:
    from openapi_spec_validator import validate

    document = client.get("/api/openapi.json").get_json()
    validate(document)
    assert document["openapi"].startswith("3.")


def _app_rules(app: Flask) -> set[tuple[str, str]]:
    rules = set()
    for rule in app.url_map.iter_rules():
        # The catch-all rules only raise the 404 or 405 the URL would have had.
        if rule.endpoint == f"{BLUEPRINT_NAME}.{UNMATCHED_ENDPOINT}":
            continue
        # The viewer's static files are not part of the API.
        if rule.endpoint in {f"{BLUEPRINT_NAME}.{r.endpoint}" for r in ROUTES if not r.documented}:
            continue
        if rule.endpoint.startswith(BLUEPRINT_NAME + "."):
            for method in rule.methods or ():
                if method not in ("HEAD", "OPTIONS"):
                    rules.add((openapi_path("", rule.rule), method.lower()))
    return rules


@pytest.mark.parametrize("prefix", ["/api", "/v2/state"])
def test_the_openapi_paths_are_exactly_the_app_routes(make_app: AppFactory, prefix: str) -> None:
    app = make_app(TIERED_STATE_API_PREFIX=prefix)
    document = app.test_client().get(prefix + "/openapi.json").get_json()
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == _app_rules(app)
    assert all(path.startswith(prefix + "/") for path, _ in documented)


def test_no_routes_without_an_api_prefix(make_app: AppFactory) -> None:
    app = make_app()
    assert _app_rules(app) == set()
    assert app.test_client().get("/states").status_code == 404


def _documented_schema(document: dict[str, Any], path: str, method: str, status: int) -> Any:
    response = document["paths"][path][method]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    return {"$defs": {}, "components": document["components"], "allOf": [schema]}


def test_every_answer_matches_its_documented_schema(client: FlaskClient) -> None:
    from jsonschema import Draft202012Validator

    document = client.get("/api/openapi.json").get_json()
    register(client, "u1")
    calls = [
        ("post", "/api/states", "/api/states", {"state_id": "u2", "type": "user"}),
        ("get", "/api/states/u1", "/api/states/{state_id}", None),
        ("post", "/api/states/u1/transitions", "/api/states/{state_id}/transitions",
         {"transition": "ACTIVATE", "reason": "checked"}),
        ("post", "/api/states/u1/transitions", "/api/states/{state_id}/transitions",
         {"transition": "update", "data": {"plan": "pro"}}),
        ("get", "/api/states/u1/history", "/api/states/{state_id}/history", None),
        ("get", "/api/states/u1/diff?from=1&to=3", "/api/states/{state_id}/diff", None),
        ("post", "/api/states/u1/rollback", "/api/states/{state_id}/rollback", {"to_version": 2}),
        ("get", "/api/states?type=user&data.plan=free", "/api/states", None),
        ("get", "/api/health", "/api/health", None),
        # the errors
        ("get", "/api/states/nobody", "/api/states/{state_id}", None),
        ("post", "/api/states/u1/transitions", "/api/states/{state_id}/transitions",
         {"transition": "fly"}),
        ("get", "/api/states?per_page=0", "/api/states", None),
        ("post", "/api/states/u1/rollback", "/api/states/{state_id}/rollback", {"to_version": 99}),
    ]  # fmt: skip
    statuses = []
    for method, url, path, body in calls:
        response = getattr(client, method)(url, json=body)
        statuses.append(response.status_code)
        schema = _documented_schema(document, path, method, response.status_code)
        errors = list(Draft202012Validator(schema).iter_errors(response.get_json()))
        assert errors == [], (url, response.status_code, [e.message for e in errors])
    assert statuses == [201, 200, 200, 200, 200, 200, 200, 200, 200, 404, 422, 400, 404]


def test_the_documented_schemas_refuse_what_the_views_refuse(client: FlaskClient) -> None:
    from jsonschema import Draft202012Validator

    document = client.get("/api/openapi.json").get_json()
    body = document["paths"]["/api/states/{state_id}/transitions"]["post"]["requestBody"]
    schema = {"components": document["components"], **body["content"]["application/json"]["schema"]}
    validator = Draft202012Validator(schema)
    assert validator.is_valid({"transition": "SUSPEND", "expected_version": None})
    for refused in ({"transition": "fly"}, {"transition": "update", "extra": 1}, {}):
        assert not validator.is_valid(refused)
        assert client.post("/api/states/u1/transitions", json=refused).status_code == 422

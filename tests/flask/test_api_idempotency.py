"""The REST blueprint's ``Idempotency-Key`` header, on both backends: replays answer the
first response, a reused key is refused with 422, a running one with 409, and a retry
after any answer leaves exactly one history row."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_tiered_state.api.routes import ROUTES
from flask_tiered_state.domain.idempotency import fingerprint
from flask_tiered_state.extension import get_app_state

from .conftest import BOTH_BACKENDS, AppFactory, register

KEY = "3f1c2a9e-charge-42"


def post(client: FlaskClient, url: str, body: dict[str, Any], key: str | None = KEY) -> Any:
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post(url, json=body, headers=headers)


def transitions(client: FlaskClient, state_id: str) -> list[str]:
    rows = client.get(f"/api/states/{state_id}/history").get_json()["items"]
    return [row["transition"] for row in rows]


@BOTH_BACKENDS
def test_a_repeated_transition_replays_the_first_answer(client: FlaskClient) -> None:
    register(client, "u1")
    body = {"transition": "update", "data": {"plan": "pro"}, "reason": "charge-42"}
    first = post(client, "/api/states/u1/transitions", body)
    assert first.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    for _ in range(3):
        again = post(client, "/api/states/u1/transitions", body)
        assert again.status_code == 200
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.data == first.data  # the same body, byte for byte
    assert transitions(client, "u1") == ["create", "update"]
    # A state changed since: the replay still answers what the first request did.
    client.post("/api/states/u1/transitions", json={"transition": "activate"})
    replay = post(client, "/api/states/u1/transitions", body)
    assert replay.data == first.data and replay.get_json()["version"] == 2
    assert transitions(client, "u1") == ["create", "update", "activate"]


@BOTH_BACKENDS
def test_a_repeated_registration_replays_201_and_its_location(client: FlaskClient) -> None:
    body = {"state_id": "u7", "type": "user", "data": {"plan": "free"}}
    first = post(client, "/api/states", body)
    again = post(client, "/api/states", body)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"] == "/api/states/u7"
    assert again.data == first.data
    # Without the key the same request is a new one: the id is taken.
    assert post(client, "/api/states", body, key=None).status_code == 409
    assert transitions(client, "u7") == ["create"]


@BOTH_BACKENDS
def test_a_repeated_rollback_replays(client: FlaskClient) -> None:
    register(client, "u1")
    client.post("/api/states/u1/transitions", json={"transition": "update", "data": {"n": 1}})
    first = post(client, "/api/states/u1/rollback", {"to_version": 1})
    again = post(client, "/api/states/u1/rollback", {"to_version": 1})
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true" and again.data == first.data
    assert transitions(client, "u1") == ["create", "update", "rollback"]


@BOTH_BACKENDS
def test_a_reused_key_with_another_request_answers_422(client: FlaskClient) -> None:
    register(client, "u1")
    register(client, "u2")
    body = {"transition": "update", "data": {"plan": "pro"}}
    assert post(client, "/api/states/u1/transitions", body).status_code == 200
    refused = [
        post(client, "/api/states/u1/transitions", {**body, "data": {"plan": "team"}}),
        post(client, "/api/states/u1/transitions", {**body, "reason": "other"}),
        post(client, "/api/states/u2/transitions", body),  # another state
        post(client, "/api/states/u1/rollback", {"to_version": 1}),  # another endpoint
        post(client, "/api/states", {"state_id": "u3", "type": "user"}),
    ]
    for response in refused:
        assert response.status_code == 422
        error = response.get_json()
        assert error["error"] == "idempotency_key_reused"
        assert error["details"]["idempotency_key"] == KEY
        assert "Use a new key" in error["message"]
        assert "Idempotent-Replayed" not in response.headers
    assert transitions(client, "u1") == ["create", "update"]
    assert transitions(client, "u2") == ["create"]
    assert client.get("/api/states/u3").status_code == 404


@BOTH_BACKENDS
def test_a_key_whose_first_request_runs_answers_409(client: FlaskClient, app: Flask) -> None:
    register(client, "u1")
    manager = get_app_state(app).manager
    parameters = {
        "state_id": "u1", "new_data": {"data": {"plan": "pro"}}, "transition": "update",
        "expected_version": None, "actor": None, "reason": None, "merge": False,
    }  # fmt: skip
    digest = fingerprint("update_state", parameters)
    lease = manager.idempotency.begin(KEY, "update_state", digest, lease_seconds=60)
    body = {"transition": "update", "data": {"plan": "pro"}}
    busy = post(client, "/api/states/u1/transitions", body)
    assert busy.status_code == 409
    assert busy.get_json()["error"] == "idempotency_key_in_use"
    assert "still running" in busy.get_json()["message"]
    assert transitions(client, "u1") == ["create"]
    manager.idempotency.release(lease)  # the first request failed: the key is free again
    done = post(client, "/api/states/u1/transitions", body)
    assert done.status_code == 200 and "Idempotent-Replayed" not in done.headers
    assert transitions(client, "u1") == ["create", "update"]


@BOTH_BACKENDS
def test_a_failed_request_releases_its_key(client: FlaskClient) -> None:
    register(client, "u1")
    for _ in range(2):  # refused each time: an error is not stored, the retry runs again
        refused = post(client, "/api/states/u1/transitions", {"transition": "resume"})
        assert refused.status_code == 409
        assert refused.get_json()["error"] == "invalid_transition"
    fixed = post(client, "/api/states/u1/transitions", {"transition": "activate"})
    assert fixed.status_code == 200 and "Idempotent-Replayed" not in fixed.headers
    assert transitions(client, "u1") == ["create", "activate"]


@pytest.mark.parametrize("key", ["", "x" * 256, "clé", "tab\there"])
def test_a_bad_key_answers_400_and_applies_nothing(client: FlaskClient, key: str) -> None:
    register(client, "u1")
    response = post(client, "/api/states/u1/transitions", {"transition": "activate"}, key=key)
    assert response.status_code == 400
    error = response.get_json()
    assert error["error"] == "invalid_request"
    assert "printable ASCII" in error["message"]
    assert transitions(client, "u1") == ["create"]


@BOTH_BACKENDS
def test_get_routes_ignore_the_header(client: FlaskClient) -> None:
    register(client, "u1")
    for url in ("/api/states/u1", "/api/states", "/api/states/u1/history", "/api/health"):
        assert client.get(url, headers={"Idempotency-Key": ""}).status_code == 200, url


def test_a_key_is_never_replayed_to_another_actor(make_app: AppFactory) -> None:
    app = make_app(
        TIERED_STATE_API_PREFIX="/api",
        TIERED_STATE_ACCESS_CONTROL=lambda request, action: request.headers.get("X-User"),
    )
    client = app.test_client()
    ada, eve = {"X-User": "ada"}, {"X-User": "eve"}
    body = {"state_id": "secret", "type": "user", "data": {"plan": "pro"}}
    headers = {"Idempotency-Key": KEY}
    assert client.post("/api/states", json=body, headers={**headers, **ada}).status_code == 201
    stolen = client.post("/api/states", json=body, headers={**headers, **eve})
    assert stolen.status_code == 422
    assert stolen.get_json()["error"] == "idempotency_key_reused"
    assert "plan" not in stolen.get_data(as_text=True)


def test_the_document_declares_the_header_on_every_post(client: FlaskClient) -> None:
    from jsonschema import Draft202012Validator

    document = client.get("/api/openapi.json").get_json()
    key = document["components"]["parameters"]["IdempotencyKey"]
    assert key["in"] == "header" and key["name"] == "Idempotency-Key"
    checker = Draft202012Validator(key["schema"])
    assert checker.is_valid(KEY) and not checker.is_valid("") and not checker.is_valid("é")
    reference = {"$ref": "#/components/parameters/IdempotencyKey"}
    posts = {(route.rule, route.method) for route in ROUTES if route.method == "POST"}
    assert posts and all(route.idempotent == (route.method == "POST") for route in ROUTES)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            declared = reference in operation.get("parameters", [])
            assert declared == (method == "post"), (path, method)
            if method != "post":
                continue
            responses = operation["responses"]
            success = next(v for k, v in responses.items() if k.startswith("2"))
            assert success["headers"]["Idempotent-Replayed"] == {
                "$ref": "#/components/headers/IdempotentReplayed"
            }
            assert "idempotency_key_in_use" in responses["409"]["description"]
            assert "idempotency_key_reused" in responses["422"]["description"]

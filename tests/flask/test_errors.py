"""Every error mapping, the JSON error body with its correlation id, and bad input that
never produces a 500."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_tiered_state.errors import RateLimitedError, StorageError
from flask_tiered_state.extension import current_state_manager

from .conftest import AppFactory, register


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.get_json()
    assert set(body) == {"error", "message", "details", "correlation_id"}
    assert body["error"] == code
    assert body["message"]
    assert body["correlation_id"] == response.headers["X-Correlation-ID"]
    return body


def test_404_unknown_state(client: FlaskClient) -> None:
    body = assert_error(client.get("/api/states/nobody"), 404, "not_found")
    assert body["details"] == {"state_id": "nobody"}
    assert_error(client.get("/api/states/nobody/history"), 404, "not_found")
    assert_error(client.post("/api/states/nobody/transitions", json={"transition": "activate"}),
                 404, "not_found")  # fmt: skip


def test_404_unknown_version(client: FlaskClient) -> None:
    register(client, "u1")
    body = assert_error(client.get("/api/states/u1/diff?from=1&to=7"), 404, "version_not_found")
    assert body["details"]["available"] == [1]


def test_404_and_405_under_the_prefix_answer_json(client: FlaskClient) -> None:
    assert_error(client.get("/api/nothing-here"), 404, "not_found")
    body = assert_error(client.delete("/api/states"), 405, "method_not_allowed")
    assert body["details"]["allowed_methods"] == ["GET", "HEAD", "OPTIONS", "POST"]


def test_errors_outside_the_prefix_are_left_to_the_app(client: FlaskClient) -> None:
    response = client.get("/elsewhere")
    assert response.status_code == 404
    assert response.mimetype == "text/html"


def test_422_schema_unknown_type_and_validator(client: FlaskClient, app: Flask) -> None:
    body = assert_error(client.post("/api/states", json={"state_id": "u1"}), 422,
                        "validation_error")  # fmt: skip
    assert body["details"]["errors"]["type"] == ["Missing data for required field."]
    body = assert_error(client.post("/api/states", json={"state_id": "u1", "type": "user",
                                                         "colour": "red"}),
                        422, "validation_error")  # fmt: skip
    assert "colour" in body["details"]["errors"]
    body = assert_error(client.post("/api/states", json={"state_id": "u1", "type": "alien"}),
                        422, "invalid_state_type")  # fmt: skip
    assert "user" in body["details"]["known"]
    body = assert_error(client.post("/api/states/u1/transitions", json={"transition": "fly"}),
                        422, "validation_error")  # fmt: skip
    assert "transition" in body["details"]["errors"]

    current_state_manager.register_validator("user", lambda state: "plan" in state["data"])
    assert_error(client.post("/api/states", json={"state_id": "u2", "type": "user",
                                                  "data": {"x": 1}}),
                 422, "validation_error")  # fmt: skip
    assert client.get("/api/states/u2").status_code == 404


def test_409_invalid_transition(client: FlaskClient) -> None:
    register(client, "u1")
    body = assert_error(
        client.post("/api/states/u1/transitions", json={"transition": "RESUME"}),
        409, "invalid_transition",
    )  # fmt: skip
    assert body["details"]["status"] == "created"
    assert "activate" in body["details"]["allowed"]


def test_409_concurrency_conflict(client: FlaskClient) -> None:
    register(client, "u1")
    client.post("/api/states/u1/transitions", json={"transition": "activate"})
    body = assert_error(
        client.post("/api/states/u1/transitions",
                    json={"transition": "suspend", "expected_version": 1}),
        409, "concurrency_conflict",
    )  # fmt: skip
    assert body["details"]["actual_version"] == 2
    assert client.get("/api/states/u1").get_json()["status"] == "active"


def test_409_id_taken(client: FlaskClient) -> None:
    register(client, "u1")
    assert_error(client.post("/api/states", json={"state_id": "u1", "type": "user"}), 409,
                 "already_exists")  # fmt: skip


def test_413_state_too_large(make_app: AppFactory) -> None:
    app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_MAX_STATE_BYTES=2000)
    client = app.test_client()
    body = assert_error(
        client.post("/api/states", json={"state_id": "big", "type": "user",
                                         "data": {"blob": "x" * 5000}}),
        413, "state_too_large",
    )  # fmt: skip
    assert body["details"]["limit"] == 2000
    assert client.get("/api/states/big").status_code == 404


def test_403_access_denied(make_app: AppFactory) -> None:
    app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_ACCESS_CONTROL=lambda r, a: False)
    assert_error(app.test_client().get("/api/states"), 403, "forbidden")


def test_429_and_500_mappings_apply_to_the_apps_own_views(make_app: AppFactory) -> None:
    app = make_app(TIERED_STATE_API_PREFIX="/api")

    @app.get("/limited")
    def limited() -> str:
        raise RateLimitedError("Too many requests; retry in 2.5 seconds.", retry_after=2.5)

    @app.get("/broken")
    def broken() -> str:
        raise StorageError("The store failed.")

    client = app.test_client()
    response = client.get("/limited")
    body = assert_error(response, 429, "rate_limited")
    assert response.headers["Retry-After"] == "3"
    assert body["details"] == {"retry_after": 2.5}
    assert_error(client.get("/broken"), 500, "storage_error")


def test_without_app_wide_handlers_the_blueprint_still_answers_json(make_app: AppFactory) -> None:
    app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_REGISTER_ERROR_HANDLERS=False)
    app.config["TESTING"] = False

    @app.get("/limited")
    def limited() -> str:
        raise RateLimitedError("Slow down.")

    client = app.test_client()
    assert_error(client.get("/api/states/nobody"), 404, "not_found")
    assert client.get("/limited").status_code == 500
    assert client.get("/limited").mimetype == "text/html"


@pytest.mark.redis
def test_503_when_the_hot_tier_is_really_down(make_app: AppFactory, disposable_redis: Any) -> None:
    app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_HOT_URL=disposable_redis.url)
    client = app.test_client()
    register(client, "s0", "session")
    disposable_redis.stop()
    body = assert_error(client.post("/api/states", json={"state_id": "s1", "type": "session"}),
                        503, "tier_unavailable")  # fmt: skip
    assert body["details"]["tier"]
    health = client.get("/api/health")
    assert health.status_code == 200
    assert health.get_json()["status"] == "degraded"
    assert health.get_json()["tiers"]["hot"]["available"] is False


BAD_BODIES: list[tuple[dict[str, Any], int, str]] = [
    ({"data": "{not json", "content_type": "application/json"}, 400, "invalid_request"),
    ({"json": [1, 2]}, 400, "invalid_request"),
    ({"json": "text"}, 400, "invalid_request"),
    ({"data": "null", "content_type": "application/json"}, 400, "invalid_request"),
    ({"data": "state_id=u1", "content_type": "application/x-www-form-urlencoded"}, 415,
     "unsupported_media_type"),
    ({}, 415, "unsupported_media_type"),
    ({"json": {"state_id": 5, "type": "user"}}, 422, "validation_error"),
    ({"json": {"state_id": "bad id!", "type": "user"}}, 400, "invalid_request"),
    ({"json": {"state_id": "u1", "type": "user", "data": [1]}}, 422, "validation_error"),
    ({"json": {"state_id": "u1", "type": "user", "data": {"n": float("nan")}}}, 422,
     "validation_error"),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "status", "code"), BAD_BODIES)
def test_bad_bodies_never_produce_a_500(
    client: FlaskClient, kwargs: dict[str, Any], status: int, code: str
) -> None:
    assert_error(client.post("/api/states", **kwargs), status, code)


BAD_QUERIES: list[tuple[str, int, str]] = [
    ("/api/states?page=0", 400, "invalid_request"),
    ("/api/states?page=abc", 400, "invalid_request"),
    ("/api/states?per_page=100000", 400, "invalid_request"),
    ("/api/states?colour=red", 400, "invalid_request"),
    ("/api/states?data.plan=a&data.plan=b", 400, "invalid_request"),
    ("/api/states?data..x=1", 400, "invalid_request"),
    ("/api/states?type=alien", 422, "invalid_state_type"),
    ("/api/states?type=session", 400, "invalid_request"),
    ("/api/states/u1/diff", 400, "invalid_request"),
    ("/api/states/u1/diff?from=x&to=2", 400, "invalid_request"),
    ("/api/states/u1/history?limit=-3", 400, "invalid_request"),
    ("/api/states/u1/history?transition=fly", 400, "invalid_request"),
    ("/api/states/" + "x" * 300, 400, "invalid_request"),
]


@pytest.mark.parametrize(("url", "status", "code"), BAD_QUERIES)
def test_bad_queries_never_produce_a_500(
    client: FlaskClient, url: str, status: int, code: str
) -> None:
    register(client, "u1")
    assert_error(client.get(url), status, code)


def test_bad_transition_and_rollback_bodies(client: FlaskClient) -> None:
    register(client, "u1")
    for body in ({"transition": "activate", "expected_version": "2"},
                 {"transition": "activate", "expected_version": 0},
                 {"transition": "create"}, {"transition": 7}, {}):  # fmt: skip
        assert_error(client.post("/api/states/u1/transitions", json=body), 422,
                     "validation_error")  # fmt: skip
    assert_error(client.post("/api/states/u1/rollback", json={"to_version": "1"}), 422,
                 "validation_error")  # fmt: skip
    assert_error(client.post("/api/states/u1/rollback", json={"to_version": 1}), 409,
                 "already_at_version")  # fmt: skip


def test_an_unexpected_failure_of_the_api_is_a_json_500(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(request: Any, action: str) -> bool:
        raise ZeroDivisionError("a bug")

    app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_ACCESS_CONTROL=hook)
    app.config["TESTING"] = False  # answer instead of propagating to the test
    body = assert_error(app.test_client().get("/api/states"), 500, "internal_server_error")
    assert "correlation id" in body["message"] and "a bug" not in body["message"]
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)

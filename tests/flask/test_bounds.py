"""Issue 13, findings 2 and 3 over HTTP and the CLI: the inputs that answered 500 (or
printed a traceback) answer 400 JSON (or one ``Error:`` line); request bodies, history
answers, names and the number of states per type are bounded. On the embedded defaults
and on Redis + PostgreSQL + S3.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient

from flask_tiered_state.domain.arguments import MAX_NAME_LENGTH
from flask_tiered_state.extension import get_app_state

from .conftest import BOTH_BACKENDS, AppFactory, register
from .test_errors import assert_error

JSON = {"Content-Type": "application/json"}

#: The URLs of finding 2 that answered 500 on one backend or the other.
FINDING_2 = [
    "/api/states?page=288230376151711744&per_page=753",
    "/api/states/u1/diff?from=1&to=2147483648",
    "/api/states/u1/diff?from=2147483648&to=1",
    "/api/states/u1/diff?from=1&to=9223372036854775808",
    "/api/states?data.n=9223372036854775808",
    "/api/states?data.n=-9223372036854775809",
    "/api/states?data.n=1e999",
    "/api/states?data.n=-1e999",
    "/api/states?data.s=a%00b",
    "/api/states?name=a%00b",
    "/api/states?metadata.plan=%00",
]


@BOTH_BACKENDS
@pytest.mark.parametrize("url", FINDING_2)
def test_inputs_the_storage_cannot_take_answer_400(client: FlaskClient, url: str) -> None:
    register(client, "u1")
    body = assert_error(client.get(url), 400, "invalid_request")
    assert "Traceback" not in body["message"]


@BOTH_BACKENDS
def test_the_messages_say_what_is_allowed(client: FlaskClient) -> None:
    register(client, "u1")
    body = assert_error(client.get("/api/states?data.n=1e999"), 400, "invalid_request")
    assert "finite" in body["message"] and body["details"]["path"] == "data.n"
    body = assert_error(client.get("/api/states?data.s=a%00b"), 400, "invalid_request")
    assert "NUL" in body["message"]
    body = assert_error(client.get("/api/states/u1/diff?from=1&to=2147483648"), 400,
                        "invalid_request")  # fmt: skip
    assert "2147483647" in json.dumps(body["details"])


@BOTH_BACKENDS
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/states/u1/rollback", {"to_version": 2**31}),
        ("/api/states/u1/rollback", {"to_version": 2**63}),
        ("/api/states/u1/transitions", {"transition": "update", "expected_version": 2**31}),
    ],
)
def test_versions_in_bodies_are_bounded(
    client: FlaskClient, path: str, body: dict[str, Any]
) -> None:
    register(client, "u1")
    assert_error(client.post(path, json=body), 422, "validation_error")


# -- the CLI: one Error: line, exit 1 (2 for usage), never a traceback -----------------


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["state", *args])


def one_error_line(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: "), result.output
    if code == 1:
        assert len(lines) == 1, result.output
    return lines[-1]


@BOTH_BACKENDS
@pytest.mark.parametrize(
    "value", ["1e999", "-1e999", "9223372036854775808", "-9223372036854775809", "a\x00b"]
)
def test_the_cli_refuses_bad_filter_values_with_one_line(app: Flask, value: str) -> None:
    get_app_state(app).manager.register_state("u1", "user")
    line = one_error_line(run(app, "list", "--filter", f"data.n={value}"), code=2)
    assert "filter 'data.n'" in line


@BOTH_BACKENDS
@pytest.mark.parametrize(
    "args",
    [
        ("diff", "u1", "1", "2147483648"),
        ("diff", "u1", "9223372036854775808", "1"),
        ("rollback", "u1", "2147483648"),
        ("transition", "u1", "update", "--expected-version", "2147483648"),
        ("list", "--page", "288230376151711744", "--per-page", "753"),
        ("events", "retry", "9223372036854775808"),
    ],
)
def test_the_cli_refuses_out_of_range_numbers_as_usage(app: Flask, args: tuple[str, ...]) -> None:
    get_app_state(app).manager.register_state("u1", "user")
    one_error_line(run(app, *args), code=2)


# -- request bodies are bounded before they are parsed ---------------------------------


@BOTH_BACKENDS
def test_a_body_over_the_limit_answers_413_before_it_is_parsed(client: FlaskClient) -> None:
    big = b"{" + b" " * (5 * 1024 * 1024)  # not even JSON: parsing would answer 400
    body = assert_error(
        client.post("/api/states", data=big, headers=JSON), 413, "request_entity_too_large"
    )
    assert "TIERED_STATE_MAX_REQUEST_BYTES" in body["message"]
    assert str(get_app_state(client.application).settings.request_bytes_limit) in body["message"]


def test_the_limit_is_a_setting_and_covers_bodies_without_a_length(
    make_app: AppFactory,
) -> None:
    app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_MAX_REQUEST_BYTES=1000)
    client = app.test_client()
    record = {"state_id": "u1", "type": "user", "data": {"blob": "x" * 2000}}
    assert_error(client.post("/api/states", json=record), 413, "request_entity_too_large")
    chunked = client.post(
        "/api/states",
        input_stream=io.BytesIO(json.dumps(record).encode()),
        headers={**JSON, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert_error(chunked, 413, "request_entity_too_large")
    register(client, "u2")  # a small body passes


@BOTH_BACKENDS
def test_a_body_within_the_default_limit_is_stored(client: FlaskClient) -> None:
    # 0.9 MiB of escaped text: the body is larger than the record it carries.
    text = "é" * (450 * 1024)
    record = {"state_id": "big", "type": "user", "data": {"text": text}}
    response = client.post("/api/states", data=json.dumps(record), headers=JSON)
    assert response.status_code == 201, response.get_json()


# -- /history answers a page at a time --------------------------------------------------


@BOTH_BACKENDS
def test_history_is_paginated_by_default(client: FlaskClient) -> None:
    register(client, "u1")
    for n in range(60):
        response = client.post(
            "/api/states/u1/transitions", json={"transition": "update", "data": {"n": n}}
        )
        assert response.status_code == 200
    first = client.get("/api/states/u1/history").get_json()
    assert len(first["items"]) == 50
    assert [row["version"] for row in first["items"]][:2] == [1, 2]
    assert (first["total"], first["page"], first["per_page"], first["pages"]) == (61, 1, 50, 2)
    assert first["next"] == "/api/states/u1/history?page=2&per_page=50"
    second = client.get(first["next"]).get_json()
    assert [row["version"] for row in second["items"]] == list(range(51, 62))
    assert second["next"] is None
    small = client.get("/api/states/u1/history?per_page=20&page=3&transition=UPDATE").get_json()
    assert [row["version"] for row in small["items"]] == list(range(42, 62))
    assert small["next"] is None and small["total"] == 60
    latest = client.get("/api/states/u1/history?limit=2").get_json()
    assert [row["version"] for row in latest["items"]] == [61, 60]


@BOTH_BACKENDS
@pytest.mark.parametrize(
    "query",
    ["per_page=1001", "page=0", "page=1000001", "limit=2&page=1", "limit=2&transition=update"],
)
def test_history_paging_is_bounded(client: FlaskClient, query: str) -> None:
    register(client, "u1")
    assert_error(client.get(f"/api/states/u1/history?{query}"), 400, "invalid_request")


@BOTH_BACKENDS
def test_history_of_an_unknown_state_is_404(client: FlaskClient) -> None:
    assert_error(client.get("/api/states/nobody/history?page=2"), 404, "not_found")


# -- names and quotas -------------------------------------------------------------------


@BOTH_BACKENDS
def test_a_million_character_name_is_refused(client: FlaskClient) -> None:
    record = {"state_id": "u1", "type": "user", "name": "n" * 1_000_000}
    body = assert_error(client.post("/api/states", json=record), 422, "validation_error")
    assert "name" in body["details"]["errors"]
    register(client, "u1", name="n" * MAX_NAME_LENGTH)
    change = {"transition": "update", "name": "n" * (MAX_NAME_LENGTH + 1)}
    assert_error(client.post("/api/states/u1/transitions", json=change), 422, "validation_error")


def test_anonymous_sessions_stop_at_the_quota(make_app: AppFactory) -> None:
    app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_MAX_STATES_PER_TYPE=5)
    client = app.test_client()
    blob = {"blob": "x" * 10_000}
    for n in range(5):
        register(client, f"s{n}", "session", data=blob)
    body = assert_error(
        client.post("/api/states", json={"state_id": "s5", "type": "session", "data": blob}),
        409,
        "quota_exceeded",
    )
    assert body["details"] == {"state_type": "session", "max_states": 5, "count": 5}
    assert "TIERED_STATE_MAX_STATES_PER_TYPE" in body["message"]
    assert_error(client.get("/api/states/s5"), 404, "not_found")

"""NUL and lone surrogates in a state over HTTP and the CLI: the same 422 on every backend.

Issue 13 leftovers: ``POST /states`` or a transition whose data, metadata or name held
``"\\u0000"`` answered 201 on SQLite and 500 on PostgreSQL (a raw DataError from the
history INSERT). A value PostgreSQL still refuses answers 400 without its text.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_tiered_state.extension import get_app_state
from tests.conftest import services_config

from .conftest import BOTH_BACKENDS, AppFactory, register

#: JSON texts of bodies (escapes as a client sends them) and the path the answer names.
BODIES = [
    ('{"data": {"card": "4111\\u0000"}}', "data.card"),
    ('{"data": {"a": {"k\\u0000": 1}}}', 'data.a["k\\u0000"]'),
    ('{"metadata": {"tags": ["x", "\\ud800"]}}', "metadata.tags[1]"),
    ('{"name": "Ada\\u0000"}', "name"),
]


def post(client: FlaskClient, url: str, text: str) -> Any:
    return client.post(url, data=text, content_type="application/json")


@BOTH_BACKENDS
@pytest.mark.parametrize(("fields", "path"), BODIES)
def test_registration_answers_422_naming_the_path(
    client: FlaskClient, fields: str, path: str
) -> None:
    body = '{"state_id": "u1", "type": "user", ' + fields[1:]
    response = post(client, "/api/states", body)
    assert response.status_code == 422, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["error"] == "validation_error"
    assert list(answer["details"]["errors"]) == [path]
    assert path in answer["message"] and "4111" not in response.get_data(as_text=True)
    assert client.get("/api/states/u1").status_code == 404


@BOTH_BACKENDS
@pytest.mark.parametrize(("fields", "path"), BODIES)
def test_a_transition_answers_422_and_changes_nothing(
    client: FlaskClient, fields: str, path: str
) -> None:
    register(client, "u1")
    body = '{"transition": "update", ' + fields[1:]
    response = post(client, "/api/states/u1/transitions", body)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert list(response.get_json()["details"]["errors"]) == [path]
    assert client.get("/api/states/u1").get_json()["version"] == 1
    assert client.get("/api/states/u1/history").get_json()["total"] == 1


@BOTH_BACKENDS
def test_the_cli_answers_one_error_line(app: Flask) -> None:
    get_app_state(app).manager.register_state("u1", "user", {"data": {"plan": "free"}})
    runner = app.test_cli_runner()
    for option, text, path in (
        ("--data", json.dumps({"plan": "free\x00"}), "data.plan"),
        ("--metadata", json.dumps({"\x00": 1}), 'metadata["\\u0000"]'),
        ("--data", '{"plan": "\\udfff"}', "data.plan"),
    ):
        result = runner.invoke(args=["state", "transition", "u1", "update", option, text])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert lines[0].startswith("Error: "), result.output
        assert lines[1:] and all(line.startswith("  ") for line in lines[1:])  # its fields
        assert path in lines[0]
    assert get_app_state(app).manager.get_state("u1")["version"] == 1  # type: ignore[index]


@pytest.mark.postgres
def test_a_value_postgresql_refuses_answers_400_without_its_text(
    request: pytest.FixtureRequest, make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(TIERED_STATE_API_PREFIX="/api", **services_config(request))
    client = app.test_client()
    register(client, "u0")
    # The reason goes to a text column of the history, which cannot hold NUL.
    body = {"transition": "update", "reason": "4111-1111\u0000"}
    response = client.post("/api/states/u0/transitions", json=body)
    assert response.status_code == 400, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["error"] == "invalid_request"
    text = response.get_data(as_text=True)
    for leaked in ("4111", "0x00", "text fields", "psycopg"):
        assert leaked not in text, leaked
    assert "server log" in answer["message"] and "error" not in answer["details"]
    assert "cannot contain NUL" in caplog.text  # the log keeps the driver's text
    assert client.get("/api/states/u0").get_json()["version"] == 1

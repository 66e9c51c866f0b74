"""The depth limit of stored JSON (``TIERED_STATE_MAX_JSON_DEPTH``) over the manager, the
REST API, the dashboard and the CLI, and records stored before the limit existed.

Issue 13, finding 1: a body nested ~500-950 levels was stored, and every later read
from the in-process cache answered 500. Finding 2 (its JSON part): a body nested
deeper than json's decoder can recurse answered 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_tiered_state import errors
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import state_key
from flask_tiered_state.extension import get_app_state
from tests.conftest import SERVICES, services_config

from .conftest import AppFactory

#: Deep enough that pickling a record recursed past the interpreter's limit (finding 1),
#: shallow enough for json's decoder to parse it.
PICKLE_BREAKING_DEPTH = 600
#: Deeper than json's decoder can recurse (finding 2).
UNPARSEABLE_DEPTHS = [1_100, 100_000]


def nested(depth: int) -> dict[str, Any]:
    """A JSON object nesting exactly ``depth`` levels (``nested(1) == {"leaf": 1}``),
    objects and arrays alternating."""
    value: Any = {"leaf": 1}
    for level in range(depth - 1):  # the outermost wrapper is an object
        value = [value] if (depth - level) % 2 else {"a": value}
    assert isinstance(value, dict)
    return value


def nested_text(depth: int) -> str:
    """The text of an array nesting ``depth`` levels, built without recursion."""
    return "[" * depth + "]" * depth


def test_nested_helpers_nest_as_claimed() -> None:
    from flask_tiered_state.json_codec import json_depth

    for depth in (1, 2, 3, 64, 65):
        assert json_depth(nested(depth)) == depth
    assert json_depth(json.loads(nested_text(20))) == 20


@pytest.fixture(params=["embedded", SERVICES])
def limits_app(request: pytest.FixtureRequest, make_app: AppFactory) -> Flask:
    """An app with the REST API at /api and the dashboard at /dash, on both backends."""
    config = services_config(request) if request.param == "services" else {}
    return make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_DASHBOARD_PREFIX="/dash", **config)


@pytest.fixture
def client(limits_app: Flask) -> FlaskClient:
    return limits_app.test_client()


def manager_of(app: Flask) -> StateManager:
    return get_app_state(app).manager


def refused_as_too_deep(response: Any, field: str, limit: int = 64) -> None:
    assert response.status_code == 400, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert body["error"] == "json_too_deep"
    assert body["details"] == {"field": field, "limit": limit}
    assert f"at most {limit} levels" in body["message"]
    assert "TIERED_STATE_MAX_JSON_DEPTH" in body["message"]


def register_u1(client: FlaskClient) -> dict[str, Any]:
    response = client.post(
        "/api/states", json={"state_id": "u1", "type": "user", "data": {"plan": "free"}}
    )
    assert response.status_code == 201, response.get_json()
    record: dict[str, Any] = response.get_json()
    return record


# -- finding 1: a deep body is refused, and the state stays readable -----------------------


@pytest.mark.parametrize("depth", [65, PICKLE_BREAKING_DEPTH])
def test_an_update_nested_beyond_the_limit_is_refused_and_the_state_stays_readable(
    client: FlaskClient, depth: int
) -> None:
    record = register_u1(client)
    client.get("/api/states/u1")  # cached: the reads below are served from the cache
    for key in (None, "deep-update-1"):
        headers = {} if key is None else {"Idempotency-Key": key}
        response = client.post(
            "/api/states/u1/transitions",
            json={"transition": "update", "data": nested(depth)},
            headers=headers,
        )
        refused_as_too_deep(response, "data")
        assert "nests arrays and objects more than 64 levels" in response.get_json()["message"]
    for _ in range(3):
        read = client.get("/api/states/u1")
        assert read.status_code == 200 and read.get_json() == record
    history = client.get("/api/states/u1/history")
    assert history.status_code == 200 and len(history.get_json()["items"]) == 1
    assert client.get("/dash/states/u1").status_code == 200


def test_registration_and_metadata_are_held_to_the_limit_too(client: FlaskClient) -> None:
    response = client.post(
        "/api/states", json={"state_id": "u2", "type": "user", "data": nested(65)}
    )
    refused_as_too_deep(response, "data")
    response = client.post(
        "/api/states",
        json={"state_id": "u2", "type": "user", "data": {}, "metadata": nested(65)},
    )
    refused_as_too_deep(response, "metadata")
    assert client.get("/api/states/u2").status_code == 404
    at_limit = {"state_id": "u2", "type": "user", "data": nested(64), "metadata": nested(64)}
    created = client.post("/api/states", json=at_limit)
    assert created.status_code == 201
    assert client.get("/api/states/u2").get_json()["data"] == nested(64)


# -- finding 2: a body too deep to parse answers 400, not 500 -------------------------------


@pytest.mark.parametrize("depth", UNPARSEABLE_DEPTHS)
def test_a_body_too_deep_to_parse_answers_400(client: FlaskClient, depth: int) -> None:
    register_u1(client)
    deep = nested_text(depth)
    bodies = {
        "/api/states": f'{{"state_id": "u2", "type": "user", "data": {{"a": {deep}}}}}',
        "/api/states/u1/transitions": f'{{"transition": "update", "data": {{"a": {deep}}}}}',
        "/api/states/u1/rollback": f'{{"to_version": {deep}}}',
    }
    for url, text in bodies.items():
        for headers in ({}, {"Idempotency-Key": f"k-{depth}"}):
            response = client.post(url, data=text, content_type="application/json", headers=headers)
            refused_as_too_deep(response, "body")
            assert "too deeply to be processed" in response.get_json()["message"]
    assert client.get("/api/states/u1").get_json()["version"] == 1
    assert client.get("/api/states/u2").status_code == 404


def test_bodies_about_as_deep_as_the_parser_goes_answer_400(client: FlaskClient) -> None:
    """Around the depth where json's decoder gives up, parsed or not, with or without an
    idempotency key (whose fingerprint recurses too): always the same 400."""
    register_u1(client)
    for depth in range(900, 1_000, 7):
        text = f'{{"transition": "update", "data": {{"a": {nested_text(depth)}}}}}'
        for headers in ({}, {"Idempotency-Key": f"near-{depth}"}):
            response = client.post(
                "/api/states/u1/transitions",
                data=text,
                content_type="application/json",
                headers=headers,
            )
            assert response.status_code == 400, (depth, response.get_data(as_text=True)[:300])
            assert response.get_json()["error"] == "json_too_deep"
    assert client.get("/api/states/u1").get_json()["version"] == 1


@pytest.mark.parametrize("depth", UNPARSEABLE_DEPTHS)
def test_filters_too_deep_to_parse_are_not_server_errors(client: FlaskClient, depth: int) -> None:
    register_u1(client)
    deep = nested_text(depth)
    listed = client.get("/api/states", query_string={"data.plan": deep})
    assert listed.status_code in (200, 400), listed.get_data(as_text=True)[:300]
    searched = client.get("/dash/states", query_string={"q": f"data.plan={deep}"})
    assert searched.status_code in (200, 400), searched.get_data(as_text=True)[:300]


# -- values stored before the limit existed ------------------------------------------------


def store_directly(manager: StateManager, state_id: str, data: Any) -> dict[str, Any]:
    """Put ``data`` into the state's record through the store, bypassing the manager's
    checks, as a record written before the limit existed."""
    record = manager.get_state(state_id)
    assert record is not None
    record = {**record, "data": data}
    manager.store.set(state_key(state_id), record, expected_version=1)
    return record


def test_a_record_stored_before_the_limit_existed_stays_readable(
    limits_app: Flask, client: FlaskClient
) -> None:
    register_u1(client)
    manager = manager_of(limits_app)
    record = store_directly(manager, "u1", nested(PICKLE_BREAKING_DEPTH))
    for _ in range(3):  # the first read fills the cache, the later ones are hits
        assert manager.get_state("u1") == record
        response = client.get("/api/states/u1")
        assert response.status_code == 200 and response.get_json() == record
    assert client.get("/dash/states/u1").status_code == 200
    # Changing it is allowed as long as the change itself is within the limit.
    updated = client.post(
        "/api/states/u1/transitions", json={"transition": "update", "data": {"plan": "pro"}}
    )
    assert updated.status_code == 200 and updated.get_json()["data"] == {"plan": "pro"}


# -- the setting ----------------------------------------------------------------------------


def test_the_setting_sets_the_limit(make_app: AppFactory) -> None:
    app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_MAX_JSON_DEPTH="3")
    client = app.test_client()
    assert manager_of(app).max_json_depth == 3
    ok = client.post("/api/states", json={"state_id": "u1", "type": "user", "data": nested(3)})
    assert ok.status_code == 201
    response = client.post(
        "/api/states/u1/transitions", json={"transition": "update", "data": nested(4)}
    )
    refused_as_too_deep(response, "data", limit=3)


@pytest.mark.parametrize("value", [0, -1, 257, "deep", 2.5, True, None])
def test_the_setting_is_checked_at_init_app(make_app: AppFactory, value: object) -> None:
    with pytest.raises(errors.ConfigurationError, match="TIERED_STATE_MAX_JSON_DEPTH"):
        make_app(TIERED_STATE_MAX_JSON_DEPTH=value)


# -- the manager: every write path -----------------------------------------------------------


@pytest.fixture
def manager(make_app: AppFactory) -> StateManager:
    manager = manager_of(make_app())
    manager.register_state("u1", "user", {"data": {"plan": "free"}})
    return manager


def expect_too_deep(call: Callable[[], Any], field: str, limit: int = 64) -> None:
    with pytest.raises(errors.InvalidRequestError) as caught:
        call()
    error = caught.value
    assert error.code == "json_too_deep" and error.http_status == 400
    assert error.details["field"] == field and error.details["limit"] == limit
    assert "TIERED_STATE_MAX_JSON_DEPTH" in error.message


def deep_python_value(depth: int) -> dict[str, Any]:
    """A value far deeper than any JSON text the standard library could parse."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return {"a": value}


@pytest.mark.parametrize("depth", [65, PICKLE_BREAKING_DEPTH, 50_000])
def test_every_write_path_of_the_manager_is_held_to_the_limit(
    manager: StateManager, depth: int
) -> None:
    deep = nested(depth) if depth < 1_000 else deep_python_value(depth)
    expect_too_deep(lambda: manager.register_state("u2", "user", {"data": deep}), "data")
    expect_too_deep(lambda: manager.register_state("u2", "user", {"metadata": deep}), "metadata")
    expect_too_deep(lambda: manager.update_state("u1", {"data": deep}), "data")
    # Too deep for json to fingerprint the call: refused before the records' check.
    expect_too_deep(
        lambda: manager.update_state("u1", {"data": deep}, idempotency_key="k1"),
        "parameters" if depth >= 1_000 else "data",
    )
    expect_too_deep(lambda: manager.update_state("u1", {"data": deep}, merge=True), "data")
    expect_too_deep(lambda: manager.update_state("u1", {"metadata": deep}), "metadata")
    expect_too_deep(
        lambda: manager.batch_set_state({"u1": {"data": {}}, "u2": {"type": "user", "data": deep}}),
        "data",
    )
    expect_too_deep(lambda: manager.batch_update_state({"u1": {"data": deep}}, "update"), "data")
    assert manager.get_state("u2") is None
    assert manager.get_state("u1")["version"] == 1  # type: ignore[index]
    assert len(manager.get_state_history("u1")) == 1


def test_a_value_that_contains_itself_is_refused_as_too_deep(manager: StateManager) -> None:
    circular: dict[str, Any] = {}
    circular["self"] = circular
    expect_too_deep(lambda: manager.update_state("u1", {"data": circular}), "data")


def test_rollback_to_a_version_recorded_under_a_higher_limit_is_refused(
    manager: StateManager,
) -> None:
    manager.update_state("u1", {"data": nested(10)})
    manager.update_state("u1", {"data": {"plan": "pro"}})
    stricter = StateManager.create(
        store=manager.store, close_store=False, create_tables=False, max_json_depth=5
    )
    try:
        with pytest.raises(errors.JSONTooDeepError) as caught:
            stricter.rollback_state("u1", 2)
        assert "version 2 of 'u1'" in caught.value.message
        assert caught.value.details == {"field": "data", "limit": 5}
        assert stricter.rollback_state("u1", 1)["data"] == {"plan": "free"}
        assert manager.rollback_state("u1", 2)["data"] == nested(10)
    finally:
        stricter.close()


def test_create_takes_the_limit_and_checks_it(manager: StateManager) -> None:
    made = StateManager.create(store=manager.store, close_store=False, create_tables=False)
    try:
        assert made.max_json_depth == 64
    finally:
        made.close()
    for bad in (0, 257, "64", 2.0, None, True):
        with pytest.raises(errors.ConfigurationError, match="max_json_depth"):
            StateManager.create(
                store=manager.store, close_store=False, create_tables=False,
                max_json_depth=bad,  # type: ignore[arg-type]
            )  # fmt: skip


# -- the CLI --------------------------------------------------------------------------------


def one_error_line(result: Any, message: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and (code == 2 or len(lines) == 1), result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("depth", [65, PICKLE_BREAKING_DEPTH, *UNPARSEABLE_DEPTHS])
def test_the_cli_answers_one_error_line(make_app: AppFactory, depth: int) -> None:
    app = make_app()
    manager_of(app).register_state("u1", "user", {"data": {"plan": "free"}})
    runner = app.test_cli_runner()
    text = json.dumps(nested(depth)) if depth < 1_000 else f'{{"a": {nested_text(depth)}}}'
    for option in ("--data", "--metadata"):
        result = runner.invoke(args=["state", "transition", "u1", "update", option, text])
        one_error_line(result, "TIERED_STATE_MAX_JSON_DEPTH", code=2)  # a usage error
    listed = runner.invoke(
        args=["state", "list", "--filter", f"data.plan={nested_text(depth)}", "--json"]
    )
    assert listed.exception is None or isinstance(listed.exception, SystemExit), listed.output
    assert "Traceback" not in listed.output
    assert manager_of(app).get_state("u1")["version"] == 1  # type: ignore[index]

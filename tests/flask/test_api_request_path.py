"""The REST blueprint's per-request work (issue 16, the HTTP path): what a request no
longer pays for, with every answer unchanged in meaning."""

from __future__ import annotations

import json
from typing import Any

import marshmallow
import pytest
from flask.testing import FlaskClient

from flask_tiered_state.json_codec import dumps

from .conftest import register


def test_no_schema_is_built_per_request(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(client, "u1")  # the blueprint exists, its schemas with it
    built: list[str] = []
    original = marshmallow.Schema.__init__

    def counting(self: marshmallow.Schema, *args: Any, **kwargs: Any) -> None:
        built.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(marshmallow.Schema, "__init__", counting)
    for n in range(3):
        changed = client.post(
            "/api/states/u1/transitions", json={"transition": "update", "data": {"n": n}}
        )
        assert changed.status_code == 200, changed.get_json()
    assert client.post("/api/states", json={"state_id": "u2", "type": "user"}).status_code == 201
    assert client.get("/api/states?type=user").status_code == 200
    assert client.get("/api/states/u1/history?page=1").status_code == 200
    assert client.get("/api/states/u1/diff?from=1&to=2").status_code == 200
    assert client.post("/api/states/u1/rollback", json={"to_version": 2}).status_code == 200
    assert built == []


def test_a_record_answer_is_the_codec_text_of_the_record(client: FlaskClient) -> None:
    created = register(client, "u1", name="Zoë ✓", data={"b": 1, "a": "naïve"})
    answer = client.get("/api/states/u1")
    assert answer.mimetype == "application/json"
    assert answer.data.decode("utf-8") == dumps(created) + "\n"
    assert json.loads(answer.data) == created
    changed = client.post("/api/states/u1/transitions", json={"transition": "activate"})
    assert changed.data.decode("utf-8") == dumps(changed.get_json()) + "\n"

"""Strings PostgreSQL cannot store (NUL, lone surrogates) are refused alike on every backend.

Issue 13 leftovers: a state whose data, metadata or name held ``"\\u0000"`` was stored on
SQLite and answered a raw ``sqlalchemy.exc.DataError`` (a 500 over HTTP) on PostgreSQL,
whose ``jsonb`` cannot hold it. The record builder now refuses such strings -- values and
keys, at any depth -- with a ValidationError naming their path, on both backend sets, and
a value the WARM database still refuses (a NUL in ``reason``) is an InvalidRequestError
without the database's text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.records import check_record_json, unstorable_text
from flask_tiered_state.errors import (
    InvalidRequestError,
    JSONTooDeepError,
    TieredStateError,
    ValidationError,
)
from flask_tiered_state.json_codec import json_depth

NUL = "\x00"
SURROGATE = "\ud800"

#: (structure with a bad string, the path the error names)
BAD_STRUCTURES: list[tuple[dict[str, Any], str]] = [
    ({"data": {"note": f"a{NUL}b"}}, "data.note"),
    ({"data": {f"k{NUL}": 1}}, 'data["k\\u0000"]'),
    ({"data": {"items": [1, {"name": f"x{NUL}"}]}}, "data.items[1].name"),
    ({"metadata": {"source": [NUL]}}, "metadata.source[0]"),
    ({"name": f"Alice{NUL}"}, "name"),
    ({"data": {"note": f"é{SURROGATE}"}}, "data.note"),
    ({"data": {"deep": {"\udfff": True}}}, 'data.deep["\\udfff"]'),
    ({"metadata": {"tags": ["ok", f"{SURROGATE}"]}}, "metadata.tags[1]"),
    ({"name": f"{SURROGATE}"}, "name"),
]


def refused(call: Callable[[], object], path: str) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        call()
    error = caught.value
    assert path in error.message and list(error.errors) == [path], error.message
    assert ("NUL" in error.message) or ("surrogate" in error.message)
    error.message.encode("utf-8")  # printable and sendable as it is
    return error


@pytest.mark.parametrize(("structure", "path"), BAD_STRUCTURES)
def test_registration_is_refused_on_every_backend(
    manager: StateManager, structure: dict[str, Any], path: str
) -> None:
    refused(lambda: manager.register_state("u1", "user", structure), path)
    assert manager.get_state("u1") is None
    assert manager.get_state_history("u1") == []
    manager.register_state("u1", "user", {"data": {"note": "fine é 😀"}})  # id still free


@pytest.mark.parametrize(("structure", "path"), BAD_STRUCTURES)
def test_every_update_path_is_refused(
    manager: StateManager, structure: dict[str, Any], path: str
) -> None:
    manager.register_state("u1", "user", {"data": {"plan": "free"}})
    refused(lambda: manager.update_state("u1", structure), path)
    refused(lambda: manager.update_state("u1", structure, merge=True), path)
    refused(lambda: manager.update_state("u1", structure, "activate"), path)
    refused(lambda: manager.batch_update_state({"u1": structure}, "update"), path)
    refused(lambda: manager.batch_set_state({"u2": {"type": "user", **structure}}), path)
    assert manager.get_state("u1")["version"] == 1  # type: ignore[index]
    assert manager.get_state("u2") is None
    assert len(manager.get_state_history("u1")) == 1


def test_strings_postgresql_can_store_are_kept(manager: StateManager) -> None:
    data = {"text": "tab\tnewline\n\x01\x1f del\x7f é 😀 \u2028 \ufffd", "é😀": ["\uffff"]}
    manager.register_state("u1", "user", {"data": data, "name": "Ünïcode 😀"})
    assert manager.get_state("u1")["data"] == data  # type: ignore[index]
    assert manager.get_state_history("u1")[0]["new_record"]["data"] == data


def test_rollback_to_a_version_holding_nul_is_refused(embedded_manager: StateManager) -> None:
    manager = embedded_manager
    manager.register_state("u1", "user", {"data": {"plan": "free"}})
    manager.update_state("u1", {"data": {"plan": "pro"}})
    # As SQLite stored it before NUL was refused: version 1 of the history holds one.
    table = manager.history.table
    with manager.history.engine.begin() as connection:
        row = connection.execute(
            table.select().where(table.c.state_id == "u1", table.c.version == 1)
        ).one()
        record = {**row.new_record, "data": {"plan": f"free{NUL}"}}
        connection.execute(table.update().where(table.c.id == row.id).values(new_record=record))
    refused(lambda: manager.rollback_state("u1", 1), "data.plan")
    assert manager.get_state("u1")["version"] == 2  # type: ignore[index]


@pytest.mark.postgres
def test_a_value_postgresql_refuses_is_a_named_error_without_its_text(
    request: pytest.FixtureRequest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.domain.conftest import build_test_store

    manager = StateManager.create(store=build_test_store("servers", request, tmp_path))
    try:
        caplog.set_level(logging.WARNING, logger="flask_tiered_state.storage")
        # The reason goes to a text column of the history, which PostgreSQL refuses NUL in:
        # registration writes it in a transaction, an update in one statement; a session
        # lives in HOT, whose write the failed transaction undoes.
        manager.register_state("u0", "user")
        reason = f"secret-{NUL}"
        calls: list[Callable[[], object]] = [
            lambda: manager.register_state("u1", "user", reason=reason),
            lambda: manager.update_state("u0", {"data": {}}, reason=reason),
            lambda: manager.register_state("s1", "session", reason=reason),
            lambda: manager.batch_set_state(
                {"u2": {"type": "user"}, "s2": {"type": "session"}}, reason=reason
            ),
        ]
        for call in calls:
            with pytest.raises(InvalidRequestError) as caught:
                call()
            assert isinstance(caught.value, TieredStateError)
            assert "refused the write or query" in caught.value.message
            assert "secret" not in caught.value.message and "0x00" not in caught.value.message
            assert "NUL" in caught.value.message
        assert "NUL" in caplog.text or "0x00" in caplog.text  # the log keeps the reason
        for state_id in ("u1", "s1", "u2", "s2"):
            assert manager.get_state(state_id) is None, state_id
        assert manager.get_state("u0")["version"] == 1  # type: ignore[index]
    finally:
        manager.close()


# -- the walk ---------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.sampled_from(["a", "é", "😀", NUL, SURROGATE, "\udc00"]), max_size=4),
)  # fmt: skip
_keys = st.text(alphabet=st.sampled_from(["k", "é", NUL, SURROGATE]), max_size=3)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=12,
)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value, *(s for item in value.values() for s in _strings(item))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


@settings(max_examples=400, deadline=None)
@given(value=st.dictionaries(_keys, _values, max_size=4), limit=st.integers(1, 6))
def test_the_walk_refuses_exactly_what_it_should(value: dict[str, Any], limit: int) -> None:
    bad = [s for s in _strings(value) if NUL in s or any(0xD800 <= ord(c) <= 0xDFFF for c in s)]
    try:
        check_record_json(value, limit, what="the data of 'x'", field="data")
    except JSONTooDeepError:
        assert json_depth(value, limit) > limit
    except ValidationError as exc:
        assert bad
        (path,) = exc.errors
        assert path.startswith("data")
    else:
        assert not bad and json_depth(value, limit) <= limit
    assert unstorable_text("".join(_strings(value))) == bool(bad)

"""The record vocabulary: ids, keys, enums, StateRecord."""

from __future__ import annotations

from datetime import datetime

import pytest

from flask_tiered_state.domain.model import (
    STATE_ID_RULE,
    StateRecord,
    StateStatus,
    StateTransition,
    StateType,
    state_key,
    utc_now_iso,
    validate_state_id,
)
from flask_tiered_state.errors import InvalidRequestError


@pytest.mark.parametrize("state_id", ["a", "user:42", "x.y-z_w@host", "A" * 200])
def test_valid_state_ids(state_id: str) -> None:
    assert validate_state_id(state_id) == state_id
    assert state_key(state_id) == f"state:{state_id}"


@pytest.mark.parametrize(
    ("state_id", "shown"),
    [
        ("", "(0 characters)"),
        ("a" * 201, "(201 characters)"),
        ("has space", "contains ' '"),
        ("slash/no", "contains '/'"),
        (42, "int 42"),
        (None, "NoneType None"),
    ],
)
def test_invalid_state_ids_name_the_rule(state_id: object, shown: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        validate_state_id(state_id)
    assert shown in info.value.message
    assert STATE_ID_RULE in info.value.message


def test_enum_values_are_the_stored_strings() -> None:
    user: str = StateType.USER  # a str subclass: it equals the stored string
    assert user == "user" and str(StateType.SESSION) == "session"
    assert [s.value for s in StateStatus] == [
        "created",
        "active",
        "suspended",
        "expired",
        "deleted",
    ]
    assert StateTransition("suspend") is StateTransition.SUSPEND


def test_state_record_round_trip() -> None:
    now = utc_now_iso()
    record = {
        "state_id": "u1",
        "name": "Ann",
        "type": "user",
        "status": "active",
        "data": {"a": 1},
        "metadata": {},
        "version": 3,
        "created_at": now,
        "updated_at": now,
    }
    obj = StateRecord.from_dict(record)
    assert obj.status is StateStatus.ACTIVE
    assert obj.to_dict() == record


def test_timestamps_are_fixed_width_utc() -> None:
    stamp = utc_now_iso()
    assert stamp.endswith("+00:00") and len(stamp) == len("2024-01-01T00:00:00.000000+00:00")
    assert datetime.fromisoformat(stamp).utcoffset() is not None

"""Structure checks and validators (callables and marshmallow 4 schemas)."""

from __future__ import annotations

from typing import Any

import marshmallow
import pytest
from marshmallow import Schema, fields

from flask_tiered_state.domain.validation import (
    ValidatorRegistry,
    check_json,
    parse_structure,
    run_checks,
)
from flask_tiered_state.errors import ConfigurationError, ValidationError


class UserSchema(Schema):
    email = fields.Email(required=True)
    age = fields.Integer()


def _run(registry: ValidatorRegistry, value: dict[str, Any]) -> None:
    run_checks(registry.state_checks("user"), value, state_id="u1", state_type="user", what="state")


def test_structure_fields() -> None:
    given = parse_structure(
        {"name": "Ann", "type": "user", "data": {"a": 1}}, state_id="u1", state_type="user"
    )
    assert (given.name, given.data, given.metadata) == ("Ann", {"a": 1}, None)
    empty = parse_structure(None, state_id="u1", state_type="user")
    assert (empty.name, empty.data, empty.metadata) == (None, None, None)


@pytest.mark.parametrize(
    ("structure", "field", "fragment"),
    [
        ({"type": "transaction"}, "type", "disagrees"),
        ({"colour": "red"}, "colour", "Unknown key"),
        ({"status": "active"}, "status", "managed"),
        ({"version": 9}, "version", "managed"),
        ({"data": [1, 2]}, "data", "JSON object"),
        ({"metadata": "x"}, "metadata", "JSON object"),
        ({"name": 5}, "name", "string"),
    ],
)
def test_structure_errors_name_the_field(structure: Any, field: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_structure(structure, state_id="u1", state_type="user")
    assert field in info.value.errors
    assert fragment in info.value.errors[field][0]
    assert "'u1'" in info.value.message


def test_structure_not_a_mapping() -> None:
    with pytest.raises(ValidationError, match="must be a mapping"):
        parse_structure(["x"], state_id="u1", state_type="user")


def test_managed_fields_may_round_trip_unchanged() -> None:
    current = {"state_id": "u1", "status": "active", "version": 3}
    parse_structure(
        {"state_id": "u1", "status": "active", "version": 3, "data": {}},
        state_id="u1",
        state_type="user",
        current=current,
    )
    with pytest.raises(ValidationError, match="status"):
        parse_structure({"status": "suspended"}, state_id="u1", state_type="user", current=current)


def test_check_json_refuses_non_json() -> None:
    check_json({"a": [1, "x", None, True, 1.5]}, state_id="u1", field="data")
    for bad in ({"a": {1, 2}}, {"a": float("nan")}, {"a": object()}):
        with pytest.raises(ValidationError, match="not JSON-serialisable"):
            check_json(bad, state_id="u1", field="data")


def test_schema_class_and_instance() -> None:
    for schema in (UserSchema, UserSchema()):
        registry = ValidatorRegistry()
        registry.register("user", schema)
        _run(registry, {"email": "a@example.com"})
        with pytest.raises(ValidationError) as info:
            _run(registry, {"email": "nope", "age": "x"})
        assert set(info.value.errors) == {"email", "age"}
        assert "email" in info.value.message and "nothing was stored" in info.value.message


def test_callable_returning_false_and_raising_marshmallow_error() -> None:
    def positive_balance(data: dict[str, Any]) -> bool:
        return bool(data.get("balance", 0) >= 0)

    def raises(data: dict[str, Any]) -> None:
        if "forbidden" in data:
            raise marshmallow.ValidationError({"forbidden": ["Not allowed here."]})

    registry = ValidatorRegistry()
    registry.register("user", positive_balance)
    registry.register("user", raises)
    _run(registry, {"balance": 3})
    with pytest.raises(ValidationError) as info:
        _run(registry, {"balance": -1})
    assert "positive_balance" in info.value.errors["_schema"][0]
    with pytest.raises(ValidationError) as info:
        _run(registry, {"forbidden": 1})
    assert info.value.errors == {"forbidden": ["Not allowed here."]}
    assert registry.unregister("user", positive_balance)
    assert not registry.unregister("user", positive_balance)
    _run(registry, {"balance": -1})


def test_the_schema_is_kept_apart_from_the_validators_and_can_be_cleared() -> None:
    registry = ValidatorRegistry()
    registry.register("user", lambda state: True)
    registry.set_schema("user", UserSchema)
    schema = registry.schema("user")
    assert schema is not None and len(registry.state_checks("user")) == 1
    with pytest.raises(ValidationError, match="The data of user state 'u1'"):
        run_checks((schema,), {}, state_id="u1", state_type="user", what="data")
    registry.set_schema("user", None)
    assert registry.schema("user") is None


def test_not_a_validator() -> None:
    with pytest.raises(ConfigurationError, match="neither a callable"):
        ValidatorRegistry().register("user", 42)

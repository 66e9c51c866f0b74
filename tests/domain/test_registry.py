"""State types: built-ins, home tiers, custom types, name rules."""

from __future__ import annotations

import pytest

from flask_tiered_state.domain.lifecycle import DEFAULT_LIFECYCLE, Lifecycle
from flask_tiered_state.domain.model import StateType
from flask_tiered_state.domain.registry import TYPE_NAME_RULE, TypeRegistry
from flask_tiered_state.errors import (
    ConfigurationError,
    InvalidRequestError,
    InvalidStateTypeError,
)
from flask_tiered_state.storage.base import StateCategory


def test_builtin_home_tiers() -> None:
    types = TypeRegistry()
    assert types.names() == ["feature", "session", "subscription", "transaction", "user"]
    for name in ("user", "transaction", "subscription", "feature"):
        assert types.get(name).home_tier is StateCategory.WARM
    session = types.get(StateType.SESSION)
    assert session.home_tier is StateCategory.HOT and session.lifecycle is DEFAULT_LIFECYCLE


def test_unknown_types_list_the_known_ones() -> None:
    types = TypeRegistry()
    for bad in ("planet", 5, None, ["user"]):
        with pytest.raises(InvalidStateTypeError) as info:
            types.get(bad)
        assert "feature, session, subscription, transaction, user" in info.value.message


def test_register_and_replace() -> None:
    types = TypeRegistry()
    custom = Lifecycle({})
    spec = types.register("invoice", lifecycle=custom, home_tier=StateCategory.COLD)
    assert types.get("invoice") is spec and spec.lifecycle is custom
    replaced = types.register(StateType.USER, hot_ttl_seconds=10, home_tier="hot")  # type: ignore[arg-type]
    assert types.get("user") is replaced and replaced.home_tier is StateCategory.HOT


@pytest.mark.parametrize("name", ["", "Invoice", "9lives", "has-dash", "x" * 65, 3])
def test_type_name_rule(name: object) -> None:
    with pytest.raises(InvalidRequestError) as info:
        TypeRegistry().register(name)
    assert TYPE_NAME_RULE in info.value.message


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"lifecycle": "default"}, "must be a Lifecycle"),
        ({"home_tier": "lukewarm"}, "home_tier"),
        ({"hot_ttl_seconds": 0}, "hot_ttl_seconds"),
        ({"hot_ttl_seconds": 1.5}, "hot_ttl_seconds"),
    ],
)
def test_bad_type_settings(options: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        TypeRegistry().register("invoice", **options)  # type: ignore[arg-type]

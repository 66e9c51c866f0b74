"""``json_depth`` and ``check_json_depth``: property tests against a recursive reference."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_tiered_state.errors import ConfigurationError, InvalidRequestError, JSONTooDeepError
from flask_tiered_state.json_codec import (
    DEFAULT_MAX_JSON_DEPTH,
    MAX_JSON_DEPTH,
    check_json_depth,
    check_max_json_depth,
    json_depth,
)


def reference_depth(value: Any) -> int:
    """The depth by recursion, straight from the definition."""
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, (list, tuple)):
        return 1 + max((reference_depth(v) for v in value), default=0)
    return 0


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=60,
)


def build_chain(kinds: list[str], leaf: Any = 1) -> Any:
    value = leaf
    for kind in reversed(kinds):
        if kind == "dict":
            value = {"k": value, "other": "x"}
        elif kind == "list":
            value = [0, value]
        else:
            value = (value,)
    return value


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_agrees_with_the_recursive_reference(value: Any) -> None:
    assert json_depth(value) == reference_depth(value)


@settings(max_examples=400, deadline=None)
@given(json_values, st.integers(min_value=1, max_value=8))
def test_refuses_exactly_the_values_deeper_than_the_limit(value: Any, limit: int) -> None:
    depth = reference_depth(value)
    assert json_depth(value, limit) == min(depth, limit + 1)
    if depth > limit:
        with pytest.raises(JSONTooDeepError) as caught:
            check_json_depth(value, limit, what="the data of 'x'", field="data")
        assert caught.value.details == {"field": "data", "limit": limit}
        assert caught.value.code == "json_too_deep" and caught.value.http_status == 400
        assert isinstance(caught.value, InvalidRequestError)
    else:
        check_json_depth(value, limit, what="the data of 'x'", field="data")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["dict", "list", "tuple"]), max_size=2_000),
    st.integers(min_value=1, max_value=MAX_JSON_DEPTH),
)
def test_deep_chains_are_measured_without_recursion(kinds: list[str], limit: int) -> None:
    value = build_chain(kinds)
    assert json_depth(value, 10_000) == len(kinds)
    assert json_depth(value, limit) == min(len(kinds), limit + 1)


def test_what_counts_as_a_level() -> None:
    assert json_depth(1) == json_depth("text") == json_depth(None) == 0
    assert json_depth({}) == json_depth([]) == json_depth({"a": 1}) == 1
    assert json_depth({"a": [1]}) == 2
    assert json_depth({("not", "counted"): 1}) == 1  # keys are not levels
    assert json_depth(OrderedDict(a=OrderedDict(b=[]))) == 3  # subclasses are
    assert json_depth(type("L", (list,), {})([[1]])) == 2
    circular: dict[str, Any] = {}
    circular["self"] = circular
    assert json_depth(circular, 10) == 11


def test_the_message_names_the_value_the_limit_and_the_setting() -> None:
    with pytest.raises(JSONTooDeepError) as caught:
        check_json_depth({"a": {"b": {}}}, 2, what="the metadata of 'u1'", field="metadata")
    assert caught.value.message == (
        "The metadata of 'u1' nests arrays and objects more than 2 levels deep; at most 2 "
        "levels are allowed (TIERED_STATE_MAX_JSON_DEPTH). Flatten the value, or raise the "
        "setting."
    )


def test_the_limit_is_checked() -> None:
    assert DEFAULT_MAX_JSON_DEPTH == 64 and MAX_JSON_DEPTH == 256
    assert check_max_json_depth(1) == 1 and check_max_json_depth(256) == 256
    for bad in (0, 257, -1, "64", 64.0, True, None):
        with pytest.raises(ConfigurationError, match="from 1 to 256"):
            check_max_json_depth(bad)

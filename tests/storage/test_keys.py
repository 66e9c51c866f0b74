"""The key rules: a batch of keys is accepted exactly when each key would be."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_tiered_state.errors import InvalidKeyError
from flask_tiered_state.storage.keys import validate_key, validate_keys

ALPHABET = "AZaz09_-.:/@+="
# Valid characters, plus ones a key may not hold (a newline above all: the batch check
# joins keys with it), and lengths around the 255 limit.
valid = st.text(alphabet=ALPHABET, min_size=1, max_size=4)
keys = st.one_of(
    valid,
    st.text(alphabet=ALPHABET + " \n*?\x00é", min_size=0, max_size=6),
    st.builds(lambda a, b: f"{a}\n{b}", valid, valid),
    st.builds(lambda n, c: c * n, st.integers(250, 260), st.sampled_from("a\n")),
)


def _verdict(call: Any) -> Any:
    try:
        return ("ok", call())
    except InvalidKeyError as exc:
        return ("refused", str(exc))


@given(st.lists(keys, max_size=8))
def test_a_batch_is_valid_exactly_when_every_key_is(batch: list[str]) -> None:
    one_by_one = _verdict(lambda: [validate_key(k) for k in batch])
    assert _verdict(lambda: validate_keys(batch)) == one_by_one


@pytest.mark.parametrize(
    "batch", [["ok\nok"], ["a", "b\n", "c"], ["ok", 5], ["a" * 256], [""], ["x", str]]
)
def test_bad_batches_are_refused_naming_the_key(batch: list[Any]) -> None:
    with pytest.raises(InvalidKeyError):
        validate_keys(batch)


def test_a_bare_string_is_not_a_batch() -> None:
    with pytest.raises(InvalidKeyError, match="sequence of keys"):
        validate_keys("abc")

"""The key rules: a batch of keys is accepted exactly when each key would be; the glob
matcher matches what a glob means, in time bounded by key length times pattern length."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_tiered_state.errors import InvalidKeyError, InvalidPatternError
from flask_tiered_state.storage.keys import (
    glob_to_regex,
    validate_key,
    validate_keys,
    validate_pattern,
)

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


# -- the glob matcher ------------------------------------------------------------------


def _backtracking_reference(pattern: str, key: str) -> bool:
    """The plain translation (``*`` -> ``.*``): right, but exponential on long keys."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch("".join(parts), key, re.DOTALL) is not None


# A small alphabet, so that stars and question marks often have several ways to fit;
# "." and "_" check that regex and LIKE metacharacters stay literal.
@given(
    pattern=st.text(alphabet="ab._*?", min_size=1, max_size=10),
    key=st.text(alphabet="ab._", min_size=0, max_size=12),
)
@settings(max_examples=2000)
def test_glob_matches_what_the_plain_translation_matches(pattern: str, key: str) -> None:
    matched = glob_to_regex(pattern).fullmatch(key) is not None
    assert matched == _backtracking_reference(pattern, key)


ADVERSARIAL = "*a*a*a*a*a*a*a*a*b"


def _match_seconds(pattern: str, key: str) -> tuple[bool, float]:
    matcher = glob_to_regex(pattern)  # compiled outside the clock, as call sites do once
    started = time.perf_counter()
    matched = matcher.fullmatch(key) is not None
    return matched, time.perf_counter() - started


@pytest.mark.timeout(20)  # the plain translation would run for ages: fail instead
def test_many_stars_against_a_long_key_take_milliseconds() -> None:
    # Issue 13: `*a*a*a*a*a*b` took 55 s against a 200-character key.
    matched, seconds = _match_seconds(ADVERSARIAL, "a" * 10_000)
    assert not matched
    assert seconds < 0.05, f"{ADVERSARIAL!r} took {seconds * 1000:.0f} ms on 10,000 a's"


@given(
    segments=st.lists(st.sampled_from(["a", "?", "a?", "aa", "?a?"]), min_size=1, max_size=40),
    tail=st.sampled_from(["b", "?b", "ab", "a", ""]),
    length=st.integers(min_value=1, max_value=10_000),
)
@settings(max_examples=100, deadline=None)
def test_no_pattern_backtracks_over_its_stars(segments: list[str], tail: str, length: int) -> None:
    # Keys of a's against stars between parts that fit almost everywhere: the shape
    # that makes a backtracking matcher try every placement of every part.
    pattern = "*" + "*".join(segments) + "*" + tail
    matched, seconds = _match_seconds(pattern, "a" * length)
    assert matched == (not tail.endswith("b") and length >= sum(map(len, segments)) + len(tail))
    assert seconds < 0.05, f"{pattern!r} took {seconds * 1000:.0f} ms on {length} a's"


@pytest.mark.parametrize(
    ("pattern", "match"),
    [
        ("", "1 to 255 characters"),
        ("a" * 256, "is 256 characters; patterns are 1 to 255 characters"),
        ("*" * 300, "is 300 characters; patterns are 1 to 255 characters"),
        ("user[0-9]", r"contains '\[\]'"),
        (b"user:*", "must be strings"),
    ],
)
def test_bad_patterns_are_refused_saying_what_is_allowed(pattern: Any, match: str) -> None:
    with pytest.raises(InvalidPatternError, match=match):
        validate_pattern(pattern)
    with pytest.raises(InvalidPatternError, match=match):
        glob_to_regex(pattern)


def test_the_longest_pattern_is_allowed() -> None:
    pattern = "*a" * 127 + "*"
    assert len(pattern) == 255
    assert glob_to_regex(pattern).fullmatch("a" * 127)
    assert not glob_to_regex(pattern).fullmatch("a" * 126)

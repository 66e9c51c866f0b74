"""The JSON codec: both backends give the standard library's text, values and errors."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import json
import math
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_tiered_state import json_codec
from flask_tiered_state.errors import InvalidRequestError
from flask_tiered_state.json_codec import ORJSON, STDLIB, Codec
from flask_tiered_state.storage.store import TieredStore

from .store_support import memory_tiers

ROOT = Path(__file__).resolve().parents[2]
CODECS = [
    pytest.param(STDLIB, id="json"),
    pytest.param(ORJSON, id="orjson", marks=pytest.mark.skipif(ORJSON is None, reason="no orjson")),
]
canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode
EDGE_INTS = [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30, -(10**40)]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**130), max_value=2**130)
    | st.sampled_from(EDGE_INTS)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=1e-10, max_value=1e-3)  # orjson spells these unlike repr()
    | st.text()
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    """Equal with equal types, dict key order and float spelling (-0.0 is not 0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[key], b[key]) for key in a)
    return bool(a == b)


def outcome(call: Any, *args: Any) -> tuple[str, Any]:
    """("ok", result) or (exception type name, message)."""
    try:
        return "ok", call(*args)
    except (TypeError, ValueError) as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=300, deadline=None)
@given(value=VALUES)
def test_dumps_writes_the_stdlib_canonical_text(codec: Codec, value: Any) -> None:
    text = codec.dumps(value)
    assert text == canonical(value)
    assert same(codec.loads(text), json.loads(canonical(value)))


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=300, deadline=None)
@given(value=VALUES, ensure_ascii=st.booleans(), indent=st.sampled_from([None, 0, 2]))
def test_loads_equals_json_loads(
    codec: Codec, value: Any, ensure_ascii: bool, indent: int | None
) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent)
    assert same(codec.loads(text), json.loads(text))
    assert same(codec.loads(text.encode()), json.loads(text))


NUMBER = r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?"


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=500, deadline=None)
@given(text=st.from_regex(NUMBER, fullmatch=True))
def test_numbers_read_exactly_as_json_loads_reads_them(codec: Codec, text: str) -> None:
    assert same(codec.loads(text), json.loads(text))
    assert same(codec.loads(f"[{text}]"), json.loads(f"[{text}]"))


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet='0123456789-+.eE[]{}",: \n\\utrfalsnNIy\x00é', max_size=20))
def test_loads_fails_where_json_loads_fails(codec: Codec, text: str) -> None:
    expected = outcome(json.loads, text)
    got = outcome(codec.loads, text)
    if expected[0] == "ok":
        assert got[0] == "ok" and same(got[1], expected[1])
    else:
        with pytest.raises(json.JSONDecodeError):
            codec.loads(text)


ANY_FLOATS = st.recursive(
    st.none() | st.floats() | st.integers() | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=12,
)


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=400, deadline=None)
@given(value=ANY_FLOATS)
def test_nan_and_infinity_anywhere_are_refused_as_by_the_stdlib(codec: Codec, value: Any) -> None:
    assert outcome(codec.dumps, value) == outcome(STDLIB.dumps, value)
    plain = outcome(lambda v: json.dumps(v, allow_nan=False, separators=(",", ":")), value)
    assert outcome(codec.check_encodable, value)[0] == plain[0]


@pytest.mark.parametrize("codec", CODECS)
def test_big_integers_are_exact_both_ways(codec: Codec) -> None:
    for number in EDGE_INTS:
        text = codec.dumps({"n": number, "list": [number]})
        assert text == f'{{"list":[{number}],"n":{number}}}'
        back = codec.loads(text)
        assert back == {"n": number, "list": [number]} and type(back["n"]) is int
    assert codec.loads("123456789012345678901234567890") == 123456789012345678901234567890


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        -math.inf,
        [1.0, math.nan],
        {"a": {"b": math.inf}},
        {"a": None, "b": [-math.nan]},  # orjson writes both as null
        [None, "x" * 127, -math.inf, -1, 255],
    ],
)
def test_nan_and_infinity_are_refused(codec: Codec, value: Any) -> None:
    with pytest.raises(ValueError, match="Out of range float values"):
        codec.dumps(value)
    assert codec.dumps({"a": None}) == '{"a":null}'  # a real null still encodes


@pytest.mark.parametrize("codec", CODECS)
def test_non_string_keys_convert_and_sort_like_the_stdlib(codec: Codec) -> None:
    assert codec.dumps({10: "b", 2: "a"}) == '{"2":"a","10":"b"}'
    assert codec.dumps({1.5: 1, True: 2}) == '{"true":2,"1.5":1}'
    assert codec.dumps({None: 1}) == '{"null":1}'
    for mixed in ({1: "a", "b": 2}, {None: 1, 2: 3}):
        assert outcome(codec.dumps, mixed) == outcome(canonical, mixed)
        assert outcome(codec.dumps, mixed)[0] == "TypeError"


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("value", ["\ud800", ["ok", "a\udfffb"], {"\udc00": 1}, {"k": ["\ud83d"]}])
def test_lone_surrogates_are_refused(codec: Codec, value: Any) -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        codec.dumps(value)
    assert codec.dumps("\U0001f600") == '"\U0001f600"'
    assert codec.loads('"\\ud800"') == json.loads('"\\ud800"') == "\ud800"


class Plain(enum.Enum):
    A = 1


class Text(str, enum.Enum):
    A = "a"


class Number(enum.IntEnum):
    A = 1


class Float(float):
    pass


@dataclasses.dataclass
class Point:
    x: int


Pair = collections.namedtuple("Pair", "x y")


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value, 1]
    return value


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2024, 5, 1, 12, 0),
        datetime.date(2024, 5, 1),
        datetime.time(12, 0),
        Point(1),
        Decimal("1.5"),
        {1, 2},
        b"bytes",
        object(),
        {(1, 2): "tuple key"},
    ],
)
def test_what_the_stdlib_refuses_is_refused(codec: Codec, value: Any) -> None:
    assert outcome(codec.dumps, value) == outcome(canonical, value)
    assert outcome(codec.dumps, value)[0] == "TypeError"
    assert outcome(codec.check_encodable, {"v": value})[0] == "TypeError"


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "value",
    [
        (1, "tuple"),
        Pair(1, 2),
        collections.OrderedDict([("b", 1), ("a", 2)]),
        Text.A,
        Number.A,
        {Text.A: 1},
        Float(2.5),
        {"deep": [[[[{"x": 1e-7}]]]] * 3},
        nested(300),  # deeper than orjson's own limit
    ],
)
def test_subclasses_tuples_and_depth_are_written_like_the_stdlib(codec: Codec, value: Any) -> None:
    assert codec.dumps(value) == canonical(value)


def test_uuid_and_plain_enums_are_the_documented_difference() -> None:
    key = uuid.UUID(int=5)
    for value in (key, Plain.A):
        with pytest.raises(TypeError, match="not JSON serializable"):
            STDLIB.dumps(value)
    if ORJSON is not None:
        assert ORJSON.dumps({"id": key}) == '{"id":"00000000-0000-0000-0000-000000000005"}'
        assert ORJSON.dumps([Plain.A]) == "[1]"


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=200, deadline=None)
@given(value=VALUES)
def test_check_encodable_accepts_json_values(codec: Codec, value: Any) -> None:
    codec.check_encodable(value)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "value",
    [
        {"a": math.nan},
        [math.inf],
        {"a": {1, 2}},
        {"a": object()},
        {(1,): 2},
        {"when": datetime.datetime(2024, 1, 1)},
        {1: "a", "b": 2},  # accepted: json.dumps does not sort
        "\ud800",  # accepted: json.dumps escapes it
        {"big": 2**70},
    ],
)
def test_check_encodable_raises_where_json_dumps_raises(codec: Codec, value: Any) -> None:
    expected = outcome(lambda v: json.dumps(v, allow_nan=False, separators=(",", ":")), value)
    got = outcome(codec.check_encodable, value)
    assert got[0] == expected[0] and (got[0] == "ok" or got[1] == expected[1])


def test_the_active_codec() -> None:
    active = STDLIB if ORJSON is None else ORJSON
    assert json_codec.BACKEND == active.name == ("json" if ORJSON is None else "orjson")
    assert json_codec.dumps is active.dumps and json_codec.loads is active.loads


def test_an_installed_orjson_of_the_fast_extra_is_used() -> None:
    orjson = pytest.importorskip("orjson")
    version = tuple(int(part) for part in orjson.__version__.split(".")[:3])
    if version >= (3, 11, 7):  # the fast extra's lower bound
        assert ORJSON is not None, "the codec's probes found orjson spelling values otherwise"
    for exponent in range(-330, 310):  # every float spelling the probes sample
        for mantissa in (1.0, 1.2345678901234567, 9.999999999999998):
            number = float(f"{mantissa}e{exponent}")
            if math.isfinite(number) and ORJSON is not None:
                assert ORJSON.dumps([number, -number]) == canonical([number, -number])


def test_without_orjson_the_stdlib_codec_serves() -> None:
    code = (
        "import sys; sys.modules['orjson'] = None\n"
        "from flask_tiered_state import json_codec as c\n"
        "from flask_tiered_state.storage.store import TieredStore\n"
        "from tests.storage.store_support import memory_tiers\n"
        "store = TieredStore(memory_tiers())\n"
        "store.set('k', {'b': [2**64, 1e-07], 'a': 'é'})\n"
        "store.cache.clear()\n"
        "print(c.BACKEND, c.ORJSON, store.get_entry('k').value, store.get('k') == "
        "{'b': [2**64, 1e-07], 'a': 'é'})\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == 'json None {"a":"é","b":[18446744073709551616,1e-07]} True\n'


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"a": math.nan}, "Out of range float"),
        ({"s": "\ud800"}, "lone surrogate"),
        ({"when": datetime.date(2024, 1, 1)}, "date is not JSON serializable"),
        ({1: "a", "b": 2}, "'<' not supported"),
    ],
)
def test_the_store_refuses_bad_values_with_invalid_request(value: Any, words: str) -> None:
    store = TieredStore(memory_tiers())
    with pytest.raises(InvalidRequestError, match="not JSON-serialisable") as caught:
        store.set("k", value)
    assert words in str(caught.value) and store.keys() == []
    with pytest.raises(InvalidRequestError, match=words):
        store.batch_set({"ok": 1, "k": value})


def test_the_store_keeps_text_and_numbers_exact() -> None:
    store = TieredStore(memory_tiers())
    value = {"small": [1e-05, 1.5e-07, 2.5e-10], "big": [2**64, -(2**63) - 1], "é": None}
    store.set("k", value)
    store.batch_set({"b": value})
    for key in ("k", "b"):
        entry = store.get_entry(key)
        assert entry is not None and entry.value == canonical(value)
    store.cache.clear()
    assert same(store.get("k"), json.loads(canonical(value)))
    assert same(store.batch_get(["b"])["b"], json.loads(canonical(value)))

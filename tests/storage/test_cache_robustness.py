"""Whatever the store was given stays readable: values nested too deeply to pickle (the
cache's snapshot) or to encode and decode near the interpreter's recursion limit.

Issue 13, finding 1: a record nested ~500-950 levels deep was stored, and every read
served from the in-process cache raised RecursionError in ``pickle.dumps``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from flask_tiered_state import json_codec
from flask_tiered_state.storage.base import StateCategory, StoredValue, make_metadata
from flask_tiered_state.storage.cache import StateCache
from flask_tiered_state.storage.factory import build_store
from flask_tiered_state.storage.store import TieredStore
from tests.conftest import SERVICES, unique_name

#: Pickling recursed past the interpreter's limit at about 500 levels.
TOO_DEEP_TO_PICKLE = 600
#: As deep as json's encoder still goes from a shallow stack.
NEAR_THE_RECURSION_LIMIT = 950
_T = TypeVar("_T")


def chain(depth: int) -> Any:
    """A value nesting ``depth`` levels, objects and arrays alternating."""
    value: Any = "leaf"
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


def at_stack_depth(frames: int, call: Callable[[], _T]) -> _T:
    """``call()`` from ``frames`` frames further down the stack (a request handler's)."""
    if frames == 0:
        return call()
    return at_stack_depth(frames - 1, call)


def stored(key: str, value: Any) -> StoredValue:
    text = json.dumps(value, separators=(",", ":"))
    return StoredValue(key, text, make_metadata(text, version=1, category=StateCategory.WARM))


# -- the cache ------------------------------------------------------------------------------


def test_a_value_too_deep_to_pickle_is_served_from_its_text() -> None:
    cache = StateCache()
    value = {"data": chain(TOO_DEEP_TO_PICKLE)}
    cache.set(stored("k", value))
    size = cache.stats().bytes
    first = cache.get("k")
    assert first == value
    first["data"] = "mutated"  # a fresh copy on every hit: the cache is unchanged
    assert cache.get("k") == value
    found, _token = cache.lookup("k")
    assert found == value and found is not cache.get("k")
    assert cache.stats().bytes == size  # no snapshot was counted
    assert cache.stats().hits == 4


def test_a_deep_value_is_served_from_deep_in_the_stack() -> None:
    cache = StateCache()
    value = {"data": chain(400)}  # picklable from a shallow stack, not from a deep one
    cache.set(stored("k", value))
    assert at_stack_depth(300, lambda: cache.get("k")) == value
    assert cache.get("k") == value
    assert at_stack_depth(300, lambda: cache.lookup("k")[0]) == value


def test_shallow_values_still_get_a_snapshot() -> None:
    cache = StateCache()
    cache.set(stored("k", {"data": chain(20)}))
    size = cache.stats().bytes
    assert cache.get("k") == {"data": chain(20)}
    assert cache.stats().bytes > size  # the snapshot's bytes


# -- the store, over its tiers --------------------------------------------------------------


@pytest.fixture(params=["embedded", SERVICES])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TieredStore]:
    if request.param == "services":
        built = build_store(
            hot_url=request.getfixturevalue("redis_url"),
            key_prefix=request.getfixturevalue("redis_prefix"),
            engine=request.getfixturevalue("postgres_engine"),
            local_dir=tmp_path,
        )
    else:
        built = build_store(local_dir=tmp_path)
    yield built
    built.close()


@pytest.mark.parametrize("home", [StateCategory.HOT, StateCategory.WARM, StateCategory.COLD])
@pytest.mark.parametrize("depth", [TOO_DEEP_TO_PICKLE, NEAR_THE_RECURSION_LIMIT])
def test_a_deep_value_written_to_the_store_stays_readable(
    store: TieredStore, home: StateCategory, depth: int
) -> None:
    key = unique_name("deep:")
    value = {"data": chain(depth)}
    if home is StateCategory.COLD:
        store.set(key, value)
        assert store.demote_to_cold(key)
    else:
        store.set(key, value, category=home)
    for _ in range(3):  # the first read fills the cache; the others are hits
        assert store.get(key) == value
    store.cache.clear()
    assert at_stack_depth(100, lambda: store.get(key)) == value
    assert store.batch_get([key]) == {key: value}


def test_a_value_too_deep_to_encode_is_refused_with_a_named_error(store: TieredStore) -> None:
    from flask_tiered_state.errors import InvalidRequestError

    key = unique_name("deep:")
    with pytest.raises(InvalidRequestError, match="too deeply"):
        store.set(key, {"data": chain(5_000)})
    assert store.get(key) is None


# -- the codec ------------------------------------------------------------------------------

CODECS = [json_codec.STDLIB, *([json_codec.ORJSON] if json_codec.ORJSON else [])]


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_encoding_a_value_too_deep_raises_value_error(codec: json_codec.Codec) -> None:
    deep = chain(5_000)
    with pytest.raises(ValueError, match="too deeply"):
        codec.dumps(deep)
    with pytest.raises(ValueError, match="too deeply"):
        codec.check_encodable(deep)
    with pytest.raises(ValueError, match="too deeply"):
        at_stack_depth(500, lambda: codec.dumps(chain(NEAR_THE_RECURSION_LIMIT)))


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_text_once_written_is_decoded_from_any_stack_depth(codec: json_codec.Codec) -> None:
    value = chain(NEAR_THE_RECURSION_LIMIT)
    text = codec.dumps(value)
    assert at_stack_depth(500, lambda: codec.loads(text)) == value
    # Integers of 19+ digits take the standard library's path under orjson too.
    big = "[" * NEAR_THE_RECURSION_LIMIT + "12345678901234567890" + "]" * NEAR_THE_RECURSION_LIMIT
    decoded = at_stack_depth(500, lambda: codec.loads(big))
    for _ in range(NEAR_THE_RECURSION_LIMIT):
        decoded = decoded[0]
    assert decoded == 12345678901234567890


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_decoding_errors_stay_what_they_were(codec: json_codec.Codec) -> None:
    with pytest.raises(ValueError, match="too deeply"):
        codec.loads("[" * 100_000 + "]" * 100_000)
    broken = "[" * 900 + "nope" + "]" * 900
    with pytest.raises(json.JSONDecodeError):
        at_stack_depth(500, lambda: codec.loads(broken))

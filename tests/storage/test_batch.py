"""Batch operations: one call per tier, never a loop of single calls; same results."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flask_tiered_state.errors import InvalidKeyError, InvalidRequestError, TierUnavailableError
from flask_tiered_state.storage.base import StateCategory, StateRepositories
from flask_tiered_state.storage.cache import StateCache
from flask_tiered_state.storage.memory import MemoryStateRepository
from flask_tiered_state.storage.sql import SQLStateRepository
from flask_tiered_state.storage.store import TieredStore
from flask_tiered_state.storage.tiering import TierPromotionPolicy

from .store_support import FaultyRepository, doc, faulty_tiers, memory_tiers

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD
SINGLE_CALLS = {"fetch", "store", "delete"}
Parts = tuple[TieredStore, FaultyRepository, FaultyRepository, FaultyRepository]


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[Callable[..., Parts]]:
    stores: list[TieredStore] = []

    def make(**policy: object) -> Parts:
        base = StateRepositories(
            MemoryStateRepository(HOT),
            SQLStateRepository(f"sqlite:///{tmp_path / f'warm{len(stores)}.sqlite3'}"),
            MemoryStateRepository(COLD),
        )
        repositories, hot, warm, cold = faulty_tiers(base)
        store = TieredStore(repositories, policy=TierPromotionPolicy(**policy))  # type: ignore[arg-type]
        stores.append(store)
        return store, hot, warm, cold

    yield make
    for store in stores:
        store.close()


def calls(*repos: FaultyRepository) -> dict[str, dict[str, int]]:
    return {r.category.value: dict(r.calls) for r in repos}


@pytest.mark.parametrize("size", [10, 1000])
def test_batch_set_is_one_store_many_and_one_drop_per_tier(
    make_store: Callable[..., Parts], size: int
) -> None:
    store, hot, warm, cold = make_store()
    items = {f"k{i}": {"n": i} for i in range(size)}
    written = store.batch_set(items)
    assert set(written) == set(items)
    assert all(m.version == 1 and m.category is WARM for m in written.values())
    assert calls(hot, warm, cold) == {
        "hot": {"delete_stale": 1},
        "warm": {"store_many": 1},
        "cold": {},
    }
    assert store.get("k7") == {"n": 7}  # the cache was refreshed: no tier touched
    assert warm.calls["fetch"] == 0


@pytest.mark.parametrize("size", [10, 999, 5000])
def test_batch_get_is_one_fetch_many_per_tier(make_store: Callable[..., Parts], size: int) -> None:
    store, hot, warm, cold = make_store()
    keys = [f"k{i}" for i in range(size)]
    for i, key in enumerate(keys):
        {0: hot, 1: warm, 2: cold}[i % 3].inner.store(key, doc(i))
    store.cache.clear()
    got = store.batch_get([*keys, "absent"])
    assert list(got) == keys  # in the order asked, absent keys left out
    assert got == {key: i for i, key in enumerate(keys)}
    for repo in (hot, warm, cold):
        assert repo.calls["fetch_many"] == 1
        assert not SINGLE_CALLS & set(repo.calls)
    for repo in (hot, warm, cold):
        repo.reset()
    assert store.batch_get(keys[:5]) == {key: i for i, key in enumerate(keys[:5])}
    from_cache = not (hot.calls or warm.calls or cold.calls)
    assert from_cache is (size < store.cache.scan_threshold)  # larger batches are scans


def test_batch_get_returns_copies(make_store: Callable[..., Parts]) -> None:
    store, *_ = make_store()
    store.batch_set({"a": {"list": [1]}})
    first = store.batch_get(["a"])
    first["a"]["list"].append(2)
    assert store.batch_get(["a"]) == {"a": {"list": [1]}}


def test_batch_set_to_hot_home_drops_lower_copies_in_one_call_each(
    make_store: Callable[..., Parts],
) -> None:
    store, hot, warm, cold = make_store()
    store.batch_set({"s1": 1, "s2": 2})
    cold.inner.store("s2", doc("archived"))
    for repo in (hot, warm, cold):
        repo.reset()
    store.batch_set({"s1": "new1", "s2": "new2"}, category="hot", ttl_seconds=30)
    assert calls(hot, warm, cold) == {
        "hot": {"store_many": 1},
        "warm": {"delete_stale": 1},
        "cold": {"delete_stale": 1},
    }
    assert warm.inner.fetch_many(["s1", "s2"]) == {} and cold.inner.fetch("s2") is None
    assert hot.inner.fetch("s1").metadata.ttl_seconds == 30  # type: ignore[union-attr]


def test_batch_delete_counts_keys_and_uses_batch_calls(make_store: Callable[..., Parts]) -> None:
    store, hot, warm, cold = make_store()
    store.batch_set({f"k{i}": i for i in range(50)})
    store.batch_promote([f"k{i}" for i in range(10)])
    store.batch_set({f"c{i}": i for i in range(5)}, category=COLD)
    for repo in (hot, warm, cold):
        repo.reset()
    keys = [f"k{i}" for i in range(50)] + [f"c{i}" for i in range(5)] + ["absent"]
    assert store.batch_delete(keys) == 55
    for repo in (hot, warm, cold):
        assert not SINGLE_CALLS & set(repo.calls)
        assert sum(repo.calls.values()) <= 2
    assert store.keys() == []
    assert store.batch_delete([]) == 0


def test_batch_promote_copies_and_verifies_in_one_round_trip_each(
    make_store: Callable[..., Parts],
) -> None:
    store, hot, warm, cold = make_store()
    store.batch_set({f"k{i}": i for i in range(100)})
    store.batch_set({"archived": 1}, category=COLD)
    hot.inner.store("k0", doc(0), version=1)
    for repo in (hot, warm, cold):
        repo.reset()
    keys = [f"k{i}" for i in range(100)] + ["archived", "absent"]
    assert store.batch_promote(keys, ttl_seconds=90) == 100  # k0 was already in HOT
    assert hot.calls == {"fetch_many": 2, "add_copies": 1}  # locate, copy, read back
    assert warm.calls == {"fetch_many": 1} and cold.calls == {"fetch_many": 1}
    copies = hot.inner.fetch_many(keys)
    assert len(copies) == 101 and copies["k5"].metadata.ttl_seconds == 90
    assert warm.inner.fetch("k5") is not None  # homes kept


def test_batch_demote_moves_many_keys(make_store: Callable[..., Parts]) -> None:
    store, _, warm, _ = make_store()
    store.batch_set({f"k{i}": i for i in range(20)})
    assert store.batch_demote([f"k{i}" for i in range(20)]) == 20
    assert warm.inner.fetch_many([f"k{i}" for i in range(20)]) == {}
    store.cache.clear()
    assert store.batch_get(["k3", "k19"]) == {"k3": 3, "k19": 19}
    assert store.batch_demote(["k3"]) == 0


def test_batch_set_validates_everything_before_writing(make_store: Callable[..., Parts]) -> None:
    store, _, warm, _ = make_store()
    with pytest.raises(InvalidRequestError, match="'bad'"):
        store.batch_set({"good": 1, "bad": {1, 2}})
    with pytest.raises(InvalidKeyError):
        store.batch_set({"good": 1, "not ok": 2})
    with pytest.raises(InvalidRequestError, match="mapping"):
        store.batch_set([("a", 1)])  # type: ignore[arg-type]
    assert warm.calls["store_many"] == 0
    assert store.batch_set({}) == {}


def test_batch_set_to_a_dead_hot_home_raises(make_store: Callable[..., Parts]) -> None:
    store, hot, _, _ = make_store()
    hot.failing.add("*")
    with pytest.raises(TierUnavailableError):
        store.batch_set({"s": 1}, category=HOT)
    store.batch_set({"w": 1})  # WARM writes go on; the HOT copies are dropped later
    assert "w" in store.coordinator.pending[HOT]
    assert store.batch_get(["w"]) == {"w": 1}


def test_a_large_batch_is_a_scan_that_leaves_the_working_set_alone() -> None:
    store = TieredStore(memory_tiers(), cache=StateCache(max_entries=1000))
    assert store.cache.scan_threshold == 100
    store.set("hot-1", "kept")
    store.get("hot-1")
    items = {f"k{i}": i for i in range(150)}
    store.batch_set(items)  # a bulk write invalidates instead of caching
    assert len(store.cache) == 1
    assert store.batch_get([*items, "hot-1"]) == {**items, "hot-1": "kept"}
    assert len(store.cache) == 1  # a bulk read does not fill the cache ...
    assert store.cache.access_history("k1") == ()  # ... nor record accesses
    assert store.cache.stats().hits >= 1  # but it used the cached value
    store.set("k1", "one")
    store.batch_set({**items, "k1": "changed"})
    assert store.get("k1") == "changed"  # the invalidated entry is never served

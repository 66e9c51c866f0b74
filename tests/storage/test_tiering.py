"""Tier moves: copy -> verify -> delete source; promotion policy; idle demotion."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from flask_tiered_state.errors import ConfigurationError, IntegrityError, TierUnavailableError
from flask_tiered_state.storage.base import (
    StateCategory,
    StateMetadata,
    StateRepositories,
    StoredValue,
    checksum_of,
)
from flask_tiered_state.storage.cache import StateCache
from flask_tiered_state.storage.filesystem import FilesystemStateRepository
from flask_tiered_state.storage.memory import MemoryStateRepository
from flask_tiered_state.storage.sql import SQLStateRepository
from flask_tiered_state.storage.store import TieredStore
from flask_tiered_state.storage.tiering import TierPromotionPolicy

from .store_support import FaultyRepository, faulty_tiers, memory_tiers

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD


StoreParts = tuple[TieredStore, FaultyRepository, FaultyRepository, FaultyRepository]


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[Callable[..., StoreParts]]:
    """Stores with HOT in memory, WARM on SQLite, COLD in a directory (the embedded
    defaults), each tier wrapped to count calls and inject faults."""
    stores: list[TieredStore] = []

    def make(**policy: object) -> StoreParts:
        root = tmp_path / str(len(stores))
        root.mkdir()
        base = StateRepositories(
            MemoryStateRepository(HOT),
            SQLStateRepository(f"sqlite:///{root / 'warm.sqlite3'}"),
            FilesystemStateRepository(root / "cold"),
        )
        repositories, hot, warm, cold = faulty_tiers(base)
        store = TieredStore(repositories, policy=TierPromotionPolicy(**policy))  # type: ignore[arg-type]
        stores.append(store)
        return store, hot, warm, cold

    yield make
    for store in stores:
        store.close()


def assert_verified(copy: StoredValue | None, version: int) -> None:
    assert copy is not None
    assert copy.metadata.checksum == checksum_of(copy.value)
    assert copy.metadata.version == version


# --------------------------------------------------------------------------- the policy


def test_policy_promotes_on_enough_accesses_within_the_window() -> None:
    policy = TierPromotionPolicy(promote_after_accesses=3, promotion_window_seconds=10)
    assert not policy.should_promote([1.0, 2.0], now=5.0)
    assert policy.should_promote([1.0, 2.0, 3.0], now=5.0)
    assert not policy.should_promote([1.0, 2.0, 3.0], now=11.0)  # the oldest of 3 is stale
    assert policy.should_promote([0.0, 9.0, 10.0, 11.0], now=12.0)
    assert not TierPromotionPolicy(auto_promote=False).should_promote([1.0] * 9, now=1.0)


def test_policy_idleness_uses_the_last_access_then_the_write_time() -> None:
    policy = TierPromotionPolicy(demote_after_idle_seconds=100)
    assert policy.is_idle(None, stored_at=0.0, now=0.0, wall=100.0)
    assert not policy.is_idle(None, stored_at=50.0, now=0.0, wall=100.0)
    assert not policy.is_idle(950.0, stored_at=0.0, now=1000.0, wall=1000.0)
    assert policy.is_idle(800.0, stored_at=0.0, now=1000.0, wall=1000.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"promote_after_accesses": 0},
        {"hot_ttl_seconds": 0},
        {"hot_ttl_seconds": 1.5},
        {"promotion_window_seconds": -1},
        {"demote_after_idle_seconds": True},
    ],
)
def test_bad_policy_settings_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(kwargs))):
        TierPromotionPolicy(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- promotion


def test_promote_places_a_verified_hot_copy_and_keeps_the_home(
    make_store: Callable[..., StoreParts],
) -> None:
    store, hot, warm, _ = make_store(hot_ttl_seconds=120)
    store.set("k", {"a": 1})
    store.set("k", {"a": 2})
    assert store.promote_to_hot("k") is True
    copy = hot.inner.fetch("k")
    assert_verified(copy, 2)
    assert copy is not None and copy.metadata.ttl_seconds == 120
    assert_verified(warm.inner.fetch("k"), 2)
    assert store.promote_to_hot("k") is False  # already there: nothing happens
    assert store.promote_to_hot("absent") is False
    assert store.promote_to_hot("k2") is False


def test_promote_refuses_when_hot_is_down(make_store: Callable[..., StoreParts]) -> None:
    store, hot, _, _ = make_store()
    store.set("k", 1)
    hot.failing.add("*")
    with pytest.raises(TierUnavailableError):
        store.promote_to_hot("k")
    with pytest.raises(TierUnavailableError, match="nothing can be promoted"):
        store.promote_to_hot("k")


def test_a_copy_that_does_not_read_back_is_deleted_and_the_source_kept(
    make_store: Callable[..., StoreParts],
) -> None:
    store, hot, warm, _ = make_store()
    store.set("k", {"a": 1})
    original = hot.inner.fetch_many

    def corrupting_read_back(keys: Sequence[str]) -> dict[str, StoredValue]:
        found = original(keys)
        return {
            k: StoredValue(k, v.value, StateMetadata(**{**v.metadata.to_dict(), "checksum": "0"}))
            for k, v in found.items()
        }

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hot.inner, "fetch_many", corrupting_read_back)
        with pytest.raises(IntegrityError, match="did not read back"):
            store.promote_to_hot("k")
    assert hot.inner.fetch("k") is None
    assert_verified(warm.inner.fetch("k"), 1)


def test_auto_promote_if_needed_follows_the_policy(make_store: Callable[..., StoreParts]) -> None:
    store, hot, _, _ = make_store(promote_after_accesses=3, auto_promote=False)
    store.set("k", 1)
    manager = store.tier_manager
    store.get("k")
    assert manager.should_promote("k") is False
    assert manager.auto_promote_if_needed("k") is False
    store.get("k"), store.get("k")
    assert manager.should_promote("k") is False  # auto_promote=False turns it off
    store2, hot2, _, _ = make_store(promote_after_accesses=3)
    store2.set("k", 1)
    for _ in range(3):
        store2.get("k")  # cache hits count as accesses
    assert store2.tier_manager.auto_promote_if_needed("k") is True
    assert hot2.inner.fetch("k") is not None
    assert hot.inner.fetch("k") is None


# --------------------------------------------------------------------------- demotion


def test_demote_moves_to_cold_carrying_the_version(make_store: Callable[..., StoreParts]) -> None:
    store, hot, warm, cold = make_store()
    for n in range(3):
        store.set("k", {"n": n})
    store.promote_to_hot("k")
    assert store.demote_to_cold("k") is True
    assert warm.inner.fetch("k") is None and hot.inner.fetch("k") is None
    assert_verified(cold.inner.fetch("k"), 3)
    store.cache.clear()
    entry = store.get_entry("k")
    assert entry is not None and entry.metadata.category is COLD
    assert store.get("k") == {"n": 2}


def test_moving_to_the_tier_the_key_is_in_changes_and_deletes_nothing(
    make_store: Callable[..., StoreParts],
) -> None:
    store, hot, warm, cold = make_store()
    store.set("k", 1, category=COLD)
    for repo in (hot, warm, cold):
        repo.reset()
    assert store.demote_to_cold("k") is False
    assert store.demote_to_cold("absent") is False
    for repo in (hot, warm, cold):
        assert not {"store", "store_many", "delete", "delete_many"} & set(repo.calls)
    assert_verified(cold.inner.fetch("k"), 1)


def test_a_crash_between_copy_and_delete_leaves_a_verified_readable_copy(
    make_store: Callable[..., StoreParts],
) -> None:
    store, _, warm, cold = make_store()
    store.set("k", {"balance": 10})
    store.set("k", {"balance": 20})
    warm.failing.add("delete_unchanged")  # the delete step of the move fails
    with pytest.raises(TierUnavailableError):
        store.demote_to_cold("k")
    assert_verified(warm.inner.fetch("k"), 2)
    assert_verified(cold.inner.fetch("k"), 2)
    store.cache.clear()
    assert store.get("k") == {"balance": 20}
    warm.failing.clear()
    assert store.demote_to_cold("k") is True  # finishing the move later works
    assert warm.inner.fetch("k") is None
    assert store.get("k") == {"balance": 20}


def test_demote_idle_moves_only_values_nobody_used(make_store: Callable[..., StoreParts]) -> None:
    store, _, warm, cold = make_store(demote_after_idle_seconds=0.05)
    store.batch_set({f"k{i}": i for i in range(4)})
    time.sleep(0.06)
    store.get("k1")  # read recently: not idle
    assert sorted(store.demote_idle("k*")) == ["k0", "k2", "k3"]
    assert warm.inner.fetch("k1") is not None
    assert sorted(cold.inner.keys()) == ["k0", "k2", "k3"]
    assert store.demote_idle("k*", limit=0) == []


def test_history_length_must_allow_promotion() -> None:
    with pytest.raises(ConfigurationError, match="history_length"):
        TieredStore(
            memory_tiers(),
            cache=StateCache(history_length=2),
            policy=TierPromotionPolicy(promote_after_accesses=3),
        )


def test_movements_are_counted_in_stats_and_metrics() -> None:
    store = TieredStore(memory_tiers(), policy=TierPromotionPolicy(promote_after_accesses=2))
    store.batch_set({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5})
    assert store.promote_to_hot("a") and not store.promote_to_hot("a")  # 2nd: nothing to do
    assert store.batch_promote(["b", "c"]) == 2
    assert store.demote_to_cold("a") and not store.demote_to_cold("a")
    for _ in range(2):  # read twice from below the cache: "d" earns a HOT copy
        store.cache.invalidate("d")
        assert store.get("d") == 4
    for _ in range(2):
        store.cache.invalidate("e")
        assert store.batch_get(["e"]) == {"e": 5}
    expected = {"promotions": 3, "auto_promotions": 2, "demotions": 1}
    assert store.movements() == expected
    assert store.stats()["movements"] == expected == store.metrics()["movements"]
    assert store.get_repositories().hot.fetch("e") is not None

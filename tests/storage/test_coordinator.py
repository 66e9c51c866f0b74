"""StateRepositoryCoordinator: the read waterfall, home writes, stale copies, a dead HOT."""

from __future__ import annotations

import pytest

from flask_tiered_state.errors import ConcurrencyError, TierUnavailableError
from flask_tiered_state.storage.base import StateCategory, StoredValue
from flask_tiered_state.storage.cache import StateCache
from flask_tiered_state.storage.coordinator import StateRepositoryCoordinator
from flask_tiered_state.storage.tiering import TierPromotionPolicy

from .store_support import FakeClock, FaultyRepository, doc, faulty_tiers, memory_tiers

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD


def make(
    promote_after: int = 3, **kwargs: object
) -> tuple[StateRepositoryCoordinator, FaultyRepository, FaultyRepository, FaultyRepository]:
    repositories, hot, warm, cold = faulty_tiers()
    coordinator = StateRepositoryCoordinator(
        repositories,
        StateCache(),
        policy=TierPromotionPolicy(promote_after_accesses=promote_after, hot_ttl_seconds=60),
        **kwargs,  # type: ignore[arg-type]
    )
    return coordinator, hot, warm, cold


def test_waterfall_finds_the_value_in_the_first_tier_and_fills_the_cache() -> None:
    coordinator, hot, warm, cold = make()
    cold.inner.store("k", doc("archived"))
    found = coordinator.read("k")
    assert found is not None and found.value == doc("archived")
    assert found.metadata.category is COLD
    assert (hot.calls["fetch"], warm.calls["fetch"], cold.calls["fetch"]) == (1, 1, 1)
    for repo in (hot, warm, cold):
        repo.reset()
    assert coordinator.read("k") == found  # now from the cache: no tier touched
    assert not (hot.calls or warm.calls or cold.calls)
    assert coordinator.read("absent") is None


def test_a_value_read_often_gets_a_hot_copy_with_the_policy_ttl() -> None:
    coordinator, hot, warm, _ = make(promote_after=2)
    warm.inner.store("k", doc(1))
    coordinator.read("k")
    assert hot.inner.fetch("k") is None  # one access: not yet
    coordinator.cache.invalidate("k")
    coordinator.read("k")
    copy = hot.inner.fetch("k")
    assert copy is not None and copy.metadata.ttl_seconds == 60
    assert copy.metadata.version == warm.inner.fetch("k").metadata.version  # type: ignore[union-attr]
    assert warm.inner.fetch("k") is not None  # the home copy stays


@pytest.mark.parametrize(
    ("home", "dropped"),
    [(WARM, {HOT}), (HOT, {WARM, COLD}), (COLD, {HOT, WARM})],
)
def test_a_home_write_drops_the_copies_that_could_shadow_or_resurface(
    home: StateCategory, dropped: set[StateCategory]
) -> None:
    coordinator, *_ = make()
    repos = coordinator.repositories
    for tier in StateCategory:
        repos.by_category(tier).store("k", doc(f"old {tier}"))
    coordinator.write("k", doc("new"), category=home)
    for tier in StateCategory:
        copy = repos.by_category(tier).fetch("k")
        if tier is home:
            assert copy is not None and copy.value == doc("new")
        elif tier in dropped:
            assert copy is None
        else:  # a shadowed COLD copy under a WARM home is left alone (no extra round trip)
            assert copy is not None
    assert coordinator.read("k").value == doc("new")  # type: ignore[union-attr]


def test_compare_and_set_follows_a_key_that_changes_home() -> None:
    coordinator, _, warm, cold = make()
    cold.inner.store("k", doc("v5"), version=5)
    with pytest.raises(ConcurrencyError) as caught:
        coordinator.write("k", doc("x"), category=WARM, expected_version=4)
    assert (caught.value.expected, caught.value.actual) == (4, 5)
    written = coordinator.write("k", doc("v6"), category=WARM, expected_version=5)
    assert written.metadata.version == 6
    assert cold.inner.fetch("k") is None  # the old home's copy is dropped
    with pytest.raises(ConcurrencyError):
        coordinator.write("k", doc("again"), category=WARM, expected_version=0)
    assert warm.inner.fetch("k").value == doc("v6")  # type: ignore[union-attr]


def test_delete_runs_bottom_up_and_reports_whether_any_tier_had_the_key() -> None:
    coordinator, hot, warm, cold = make()
    for repo in (hot, warm, cold):
        repo.inner.store("k", doc(1))
    coordinator.read("k")
    order: list[str] = []
    for repo in (hot, warm, cold):
        operation = "delete_stale" if repo is hot else "delete_many"

        def record(_keys: object, r: FaultyRepository = repo) -> None:
            order.append(r.category.value)

        repo.hooks[operation] = record
    assert coordinator.delete("k") is True
    assert order == ["cold", "warm", "hot"]
    assert coordinator.read("k") is None
    assert coordinator.delete("k") is False


def test_delete_many_counts_each_key_once_whatever_its_copies() -> None:
    coordinator, hot, warm, cold = make()
    hot.inner.store("hot-home", doc(1))
    warm.inner.store("warm-with-copy", doc(1))
    hot.inner.store("warm-with-copy", doc(1))
    cold.inner.store("cold-with-copy", doc(1))
    hot.inner.store("cold-with-copy", doc(1))
    cold.inner.store("cold", doc(1))
    warm.inner.store("stale-cold-below", doc(2))
    cold.inner.store("stale-cold-below", doc(1))
    keys = ["hot-home", "warm-with-copy", "cold-with-copy", "cold", "stale-cold-below", "none"]
    assert coordinator.delete_many(keys) == 5
    assert coordinator.keys() == []


def test_keys_are_deduplicated_and_sorted_across_tiers() -> None:
    coordinator, hot, warm, cold = make()
    hot.inner.store("b:1", doc(1))
    warm.inner.store("b:1", doc(1))
    warm.inner.store("a:1", doc(1))
    cold.inner.store("c:1", doc(1))
    cold.inner.store("a:2", doc(1))
    assert coordinator.keys() == ["a:1", "a:2", "b:1", "c:1"]
    assert coordinator.keys("a:*") == ["a:1", "a:2"]


def test_get_repositories_returns_the_raw_bundle() -> None:
    raw = memory_tiers()
    coordinator = StateRepositoryCoordinator(raw, StateCache())
    bundle = coordinator.get_repositories()
    assert bundle is raw
    assert (bundle.redis, bundle.postgres, bundle.s3) == (None, None, None)
    assert bundle.by_category(WARM) is raw.warm


# --------------------------------------------------------------------------- races


def test_a_read_racing_a_write_never_caches_or_copies_the_older_value() -> None:
    coordinator, hot, warm, _ = make(promote_after=1)
    warm.inner.store("k", doc("old"))
    # The read fetches "old"; before it fills the cache and HOT, a writer commits "new".
    original_fetch = warm.inner.fetch

    def fetch_then_write(key: str) -> StoredValue | None:
        value = original_fetch(key)
        coordinator.write(key, doc("new"), category=WARM)
        return value

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(warm.inner, "fetch", fetch_then_write)
        first = coordinator.read("k")
    assert first is not None and first.value == doc("old")  # read before the write ended
    assert hot.inner.fetch("k") is None  # no stale HOT copy was placed
    assert coordinator.read("k").value == doc("new")  # type: ignore[union-attr]


# --------------------------------------------------------------------------- a dead HOT


def test_a_failing_hot_tier_degrades_to_warm_and_recovers_with_backoff() -> None:
    clock = FakeClock()
    coordinator, hot, warm, _ = make(clock=clock, initial_backoff=1.0, max_backoff=4.0)
    warm.inner.store("k", doc("warm"))
    hot.failing.add("*")
    assert coordinator.read("k").value == doc("warm")  # type: ignore[union-attr]
    assert not coordinator.guard.health[HOT].healthy
    coordinator.cache.clear()
    hot.reset()
    assert coordinator.read("k").value == doc("warm")  # type: ignore[union-attr]
    assert hot.calls["fetch"] == 0 and hot.calls["ping"] == 0  # skipped until the backoff ends
    clock.advance(1.0)
    coordinator.cache.clear()
    coordinator.read("k")
    assert hot.calls["ping"] == 1  # checked once, still down: the next wait doubles
    assert coordinator.guard.health[HOT].next_check_at == clock.now + 2.0
    hot.failing.clear()
    clock.advance(2.0)
    coordinator.cache.clear()
    coordinator.read("k")
    assert coordinator.guard.health[HOT].healthy
    assert hot.calls["fetch"] == 1


def test_a_stale_hot_copy_is_never_served_after_a_write_made_while_hot_was_down() -> None:
    clock = FakeClock()
    coordinator, hot, _, _ = make(clock=clock)
    coordinator.write("k", doc("v1"), category=WARM)
    hot.inner.store("k", doc("v1"), version=1)  # a HOT copy, as promotion places it
    hot.failing.add("*")
    coordinator.write("k", doc("v2"), category=WARM)  # cannot drop the HOT copy now
    assert "k" in coordinator.pending[HOT]
    hot.failing.clear()  # HOT answers again, with the stale copy still in it
    coordinator.cache.clear()
    assert coordinator.read("k").value == doc("v2")  # type: ignore[union-attr]
    clock.advance(60)
    coordinator.cache.clear()
    assert coordinator.read("k").value == doc("v2")  # type: ignore[union-attr]
    assert coordinator.guard.health[HOT].healthy
    assert hot.inner.fetch("k") is None  # dropped on recovery, before HOT served reads
    assert len(coordinator.pending[HOT]) == 0


def test_deleting_while_hot_is_down_hides_the_hot_home_until_it_is_dropped() -> None:
    clock = FakeClock()
    coordinator, hot, _, _ = make(clock=clock)
    coordinator.write("session", doc("s"), category=HOT, ttl_seconds=300)
    hot.failing.add("*")
    coordinator.delete("session")
    hot.failing.clear()
    clock.advance(60)
    assert coordinator.read("session") is None
    assert hot.inner.fetch("session") is None


def test_writes_to_a_dead_hot_home_fail_fast() -> None:
    clock = FakeClock()
    coordinator, hot, _, _ = make(clock=clock)
    hot.failing.add("*")
    with pytest.raises(TierUnavailableError):
        coordinator.write("s", doc(1), category=HOT)
    hot.reset()
    with pytest.raises(TierUnavailableError, match="HOT tier is unavailable"):
        coordinator.write("s", doc(1), category=HOT)
    assert hot.calls["store"] == 0


def test_too_many_pending_hot_drops_reconcile_the_hot_tier_on_recovery() -> None:
    clock = FakeClock()
    coordinator, hot, warm, _ = make(clock=clock, max_pending_hot=3)
    for i in range(5):
        warm.inner.store(f"k{i}", doc("v1"))
        hot.inner.store(f"k{i}", doc("v1"))  # HOT copies
    hot.inner.store("session", doc("hot home"))
    hot.failing.add("*")
    coordinator.read("k0")
    for i in range(5):
        coordinator.write(f"k{i}", doc("v2"), category=WARM)
    assert coordinator.pending[HOT].overflowed
    hot.failing.clear()
    clock.advance(60)
    assert coordinator.guard.hot_usable()
    assert sorted(hot.inner.keys()) == ["session"]  # copies gone, the HOT home kept
    coordinator.cache.clear()
    assert [coordinator.read(f"k{i}").value for i in range(5)] == [doc("v2")] * 5  # type: ignore[union-attr]


def test_a_stale_lower_copy_that_could_not_be_dropped_is_skipped_then_dropped() -> None:
    clock = FakeClock()
    coordinator, _, warm, _ = make(clock=clock)
    warm.inner.store("k", doc("old warm"))
    warm.failing.add("delete_stale")
    written = coordinator.write("k", doc("new"), category=HOT, ttl_seconds=5)
    assert written.metadata.category is HOT
    assert "k" in coordinator.pending[WARM]
    coordinator.repositories.hot.delete("k")  # as if the HOT home expired
    coordinator.cache.clear()
    assert coordinator.read("k") is None  # the old WARM copy does not resurface
    warm.failing.clear()
    clock.advance(60)
    coordinator.write("other", doc(1), category=WARM)  # writes retry pending drops
    assert warm.inner.fetch("k") is None
    assert len(coordinator.pending[WARM]) == 0

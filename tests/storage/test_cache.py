"""StateCache: LRU by entries and bytes, copies on get, counters, history, fill tokens."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_tiered_state.errors import ConfigurationError
from flask_tiered_state.storage.base import StateCategory, StoredValue, make_metadata
from flask_tiered_state.storage.cache import MISSING, StateCache

from .store_support import FakeClock, doc


def stored(key: str, value: object, version: int = 1) -> StoredValue:
    text = doc(value)
    return StoredValue(key, text, make_metadata(text, version=version, category=StateCategory.WARM))


def test_get_returns_a_fresh_copy_every_time() -> None:
    cache = StateCache()
    cache.set(stored("k", {"data": {"tags": ["a"]}, "n": 1}))
    first = cache.get("k")
    first["data"]["tags"].append("mutated")
    first["n"] = 99
    second = cache.get("k")  # served from the snapshot made by the first hit
    second["data"]["tags"].clear()
    assert cache.get("k") == {"data": {"tags": ["a"]}, "n": 1}
    entry = cache.get_entry("k")
    assert entry is not None and entry.value == doc({"data": {"tags": ["a"]}, "n": 1})


def test_absent_key_returns_default_and_null_is_a_value() -> None:
    cache = StateCache()
    assert cache.get("nope") is MISSING
    assert cache.get("nope", "fallback") == "fallback"
    cache.set(stored("null", None))
    assert cache.get("null", "fallback") is None


def test_lru_bound_by_entries_evicts_least_recently_used() -> None:
    cache = StateCache(max_entries=3)
    for key in "abc":
        cache.set(stored(key, key))
    cache.get("a")  # a is now the most recent
    cache.set(stored("d", "d"))
    assert "b" not in cache
    assert {k for k in "acd" if k in cache} == {"a", "c", "d"}
    assert cache.stats().evictions == 1
    assert len(cache) == 3


def test_lru_bound_by_bytes_counts_text_and_snapshot() -> None:
    value = "x" * 100
    size = len(doc(value))
    cache = StateCache(max_entries=100, max_bytes=size * 3)
    for key in "abc":
        cache.set(stored(key, value))
    assert cache.stats().bytes == 3 * size
    cache.get("c")  # builds c's snapshot: its bytes count too, so the oldest goes
    stats = cache.stats()
    assert stats.bytes <= stats.max_bytes
    assert "a" not in cache and "c" in cache
    info = cache.info("c")
    assert info is not None and info.size > size


def test_value_larger_than_the_byte_bound_is_not_cached() -> None:
    cache = StateCache(max_bytes=50)
    cache.set(stored("small", "s"))
    cache.set(stored("big", "y" * 100))
    assert "big" not in cache and "small" in cache
    assert cache.stats().bytes == len(doc("s"))


def test_values_with_a_ttl_leave_the_cache_when_they_expire() -> None:
    clock = FakeClock()
    cache = StateCache(clock=clock)
    text = doc("session")
    metadata = make_metadata(text, version=1, category=StateCategory.HOT, ttl_seconds=10)
    cache.set(StoredValue("s", text, metadata))
    cache.set(StoredValue("t", text, metadata))
    cache.set(stored("forever", 1))
    clock.advance(9)
    assert cache.get("s") == "session"
    clock.advance(2)
    assert cache.get("s") is MISSING
    assert cache.get_entries(["t", "forever"], scan=True).keys() == {"forever"}
    stats = cache.stats()
    assert (stats.entries, stats.expirations, stats.bytes) == (1, 2, len(doc(1)))


def test_an_unsynchronised_cache_serves_an_entry_only_briefly_after_caching_it() -> None:
    """While changes of other processes may go unheard (no invalidation subscription), an
    entry is a hit for ``unsynced_max_age_seconds`` after it was cached, no longer."""
    clock = FakeClock()
    cache = StateCache(clock=clock, unsynced_max_age_seconds=1.0)
    cache.set(stored("old", 1))
    clock.advance(5)
    assert cache.get("old") == 1  # synchronised: the normal maximum age applies
    cache.synchronised = False
    assert cache.get("old") is MISSING  # cached 5 s ago: no longer served
    cache.set(stored("new", 2))
    clock.advance(0.9)
    assert cache.get("new") == 2
    assert cache.get_entries(["new"], scan=True).keys() == {"new"}
    clock.advance(0.2)
    assert cache.get("new") is MISSING
    cache.set(stored("again", 3))
    clock.advance(5)
    cache.synchronised = True
    assert cache.get("again") == 3
    with pytest.raises(ConfigurationError, match="unsynced_max_age_seconds"):
        StateCache(unsynced_max_age_seconds=0)


def test_counters_and_hit_rate() -> None:
    cache = StateCache()
    cache.set(stored("k", 1))
    cache.get("k")
    cache.get_entry("k")
    cache.get("missing")
    assert cache.invalidate("k") is True
    assert cache.invalidate("k") is False
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.invalidations) == (2, 1, 1)
    assert stats.hit_rate == pytest.approx(2 / 3)
    assert stats.to_dict()["hit_rate"] == pytest.approx(2 / 3)


def test_entry_info_carries_metadata_and_bookkeeping() -> None:
    clock = FakeClock()
    cache = StateCache(clock=clock)
    value = stored("k", {"a": 1}, version=7)
    cache.set(value)
    clock.advance(5)
    cache.get("k")
    info = cache.info("k")
    assert info is not None
    assert info.metadata == value.metadata and info.metadata.version == 7
    assert (info.cached_at, info.last_accessed, info.hits) == (1000.0, 1005.0, 1)
    assert cache.info("absent") is None


def test_access_history_is_bounded_per_key_and_in_keys() -> None:
    clock = FakeClock()
    cache = StateCache(history_length=3, max_history_keys=2, clock=clock)
    for _ in range(5):
        clock.advance(1)
        cache.get("a")  # misses count as accesses too
    assert cache.access_history("a") == (1003.0, 1004.0, 1005.0)
    cache.get("b")
    cache.get("c")  # a's history is the least recently used: dropped
    assert cache.access_history("a") == ()
    assert len(cache.access_history("c")) == 1


def test_fill_is_refused_after_a_write_or_invalidation_since_the_token() -> None:
    cache = StateCache()
    token = cache.fill_token()
    cache.set(stored("k", "new", version=2))
    assert cache.fill(stored("k", "old", version=1), token) is False
    assert cache.get("k") == "new"
    token = cache.fill_token()
    cache.invalidate("k")
    assert cache.written_since("k", token)
    assert cache.fill(stored("k", "old", version=1), token) is False
    assert "k" not in cache
    token = cache.fill_token()
    assert cache.fill(stored("k", "fresh"), token) is True
    assert not cache.written_since("other", token)


def test_forgotten_write_records_make_fills_conservative() -> None:
    cache = StateCache()
    token = cache.fill_token()
    cache.invalidate_many(f"w{i}" for i in range(5000))  # more than the tracked writes
    assert cache.fill(stored("w0", "stale"), token) is False
    assert cache.written_since("never-written", token)  # unknown: assume written
    assert cache.fill(stored("w0", "ok"), cache.fill_token()) is True


def test_refresh_drops_instead_of_overwriting_a_newer_write() -> None:
    cache = StateCache()
    token = cache.fill_token()
    cache.refresh(stored("k", "mine"), token)
    assert cache.get("k") == "mine"
    token = cache.fill_token()
    cache.set(stored("k", "newer", version=3))
    cache.refresh(stored("k", "older", version=2), token)
    assert "k" not in cache


def test_clear_drops_entries_and_history_and_refuses_pending_fills() -> None:
    cache = StateCache()
    cache.set(stored("k", 1))
    cache.get("k")
    token = cache.fill_token()
    cache.clear()
    assert len(cache) == 0 and cache.stats().bytes == 0
    assert cache.access_history("k") == ()
    assert cache.fill(stored("k", 1), token) is False


def test_entries_older_than_the_maximum_age_are_misses() -> None:
    clock = FakeClock()
    cache = StateCache(max_age_seconds=30, clock=clock)
    assert StateCache().max_age_seconds == 300.0  # the default backstop
    cache.set(stored("a", 1))
    clock.advance(20)
    cache.set(stored("b", 2))
    assert cache.get("a") == 1  # a hit does not make an entry younger
    clock.advance(10)
    assert cache.get("a") is MISSING and cache.get_entry("b") is not None
    assert "a" not in cache
    clock.advance(20)
    assert cache.get_entries(["b"], scan=True) == {}
    assert cache.get_entries(["b"]) == {}
    cache.set(stored("b", 3))  # cached again: a new age
    clock.advance(29)
    assert cache.get("b") == 3
    stats = cache.stats()
    assert (stats.expirations, stats.entries, stats.max_age_seconds) == (2, 1, 30.0)


def test_the_earlier_of_value_ttl_and_maximum_age_applies() -> None:
    clock = FakeClock()
    cache = StateCache(max_age_seconds=5, clock=clock)
    text = doc("s")
    long_ttl = make_metadata(text, version=1, category=StateCategory.HOT, ttl_seconds=60)
    cache.set(StoredValue("s", text, long_ttl))
    clock.advance(6)
    assert cache.get("s") is MISSING
    forever = StateCache(max_age_seconds=None, clock=clock)
    forever.set(stored("k", 1))
    clock.advance(10**9)
    assert forever.get("k") == 1 and forever.stats().max_age_seconds is None


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_entries": 0}, "max_entries"),
        ({"max_bytes": -1}, "max_bytes"),
        ({"max_entries": 1.5}, "max_entries"),
        ({"history_length": 0}, "history_length"),
        ({"max_age_seconds": 0}, "max_age_seconds"),
        ({"max_age_seconds": True}, "max_age_seconds"),
        ({"max_age_seconds": float("inf")}, "max_age_seconds"),
        ({"max_age_seconds": float("nan")}, "max_age_seconds"),
        ({"max_age_seconds": "300"}, "max_age_seconds"),
    ],
)
def test_bad_bounds_raise_configuration_error(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        StateCache(**kwargs)  # type: ignore[arg-type]


operations = st.lists(
    st.tuples(
        st.sampled_from(["set", "get", "get_entry", "invalidate", "fill", "clear"]),
        st.sampled_from([f"k{i}" for i in range(12)]),
        st.integers(min_value=0, max_value=300),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(
    ops=operations,
    max_entries=st.integers(min_value=1, max_value=6),
    max_bytes=st.integers(min_value=10, max_value=1500),
)
def test_bounds_are_never_exceeded_and_reads_are_never_stale(
    ops: list[tuple[str, str, int]], max_entries: int, max_bytes: int
) -> None:
    cache = StateCache(max_entries=max_entries, max_bytes=max_bytes)
    latest: dict[str, str] = {}
    for op, key, size in ops:
        value = f"{key}-" + "v" * size
        if op == "set":
            cache.set(stored(key, value))
            latest[key] = value
        elif op == "fill":
            token = cache.fill_token()
            if key not in latest:  # a read below found what was last written
                cache.fill(stored(key, "from-tier"), token)
                latest[key] = "from-tier"
        elif op == "get":
            got = cache.get(key)
            assert got is MISSING or got == latest[key]
        elif op == "get_entry":
            entry = cache.get_entry(key)
            assert entry is None or entry.value == doc(latest[key])
        elif op == "invalidate":
            cache.invalidate(key)
            latest.pop(key, None)
        else:
            cache.clear()
            latest.clear()
        stats = cache.stats()
        assert stats.entries <= max_entries
        assert stats.bytes <= max_bytes
        sizes = [info.size for k in latest if (info := cache.info(k)) is not None]
        assert stats.entries == len(sizes)
        assert stats.bytes == sum(sizes)


def test_concurrent_use_keeps_the_bounds_and_the_accounting() -> None:
    cache = StateCache(max_entries=20, max_bytes=2000)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(2000):
                key = f"k{rng.randrange(40)}"
                action = rng.random()
                if action < 0.4:
                    cache.set(stored(key, "v" * rng.randrange(200)))
                elif action < 0.8:
                    got = cache.get(key)
                    assert got is MISSING or set(got) <= {"v"}
                elif action < 0.9:
                    cache.fill(stored(key, "v"), cache.fill_token())
                else:
                    cache.invalidate(key)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    stats = cache.stats()
    assert stats.entries <= 20 and stats.bytes <= 2000
    sizes = [info.size for i in range(40) if (info := cache.info(f"k{i}")) is not None]
    assert stats.entries == len(sizes) and stats.bytes == sum(sizes)

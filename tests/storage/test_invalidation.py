"""Invariant 3 across processes: stores on one Redis and database see each other's changes.

Two :class:`TieredStore` objects with caches of their own play two processes (plus one
real second process at the end). Their caches keep values for 300 seconds, so a value
that leaves a cache within the test's short waits was dropped by an invalidation
message, not by age.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from flask_tiered_state.errors import InvalidRequestError
from flask_tiered_state.storage.base import (
    StateCategory,
    StateRepositories,
    StoredValue,
    WriteRequest,
)
from flask_tiered_state.storage.factory import build_store
from flask_tiered_state.storage.filesystem import FilesystemStateRepository
from flask_tiered_state.storage.invalidation import (
    KEYS_PER_MESSAGE,
    InvalidationPublisher,
    channel_for,
)
from flask_tiered_state.storage.redis import RedisStateRepository
from flask_tiered_state.storage.sql import SQLStateRepository
from flask_tiered_state.storage.store import TieredStore
from flask_tiered_state.storage.tiering import TierPromotionPolicy

from .store_support import FaultyRepository, doc

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD
WAIT = 2.0

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT) -> float:
    """Poll ``check`` until it holds; the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.005)
    return time.monotonic() - start


def threads_of(store: TieredStore) -> list[threading.Thread]:
    if store.invalidation is None:
        return []
    name = f"tiered-state-invalidation-{store.invalidation.sender[:8]}"
    return [t for t in threading.enumerate() if t.name == name]


@pytest.fixture
def make_store(
    redis_url: str, redis_prefix: str, postgres_engine: Any, tmp_path: Path
) -> Iterator[Callable[..., TieredStore]]:
    built: list[TieredStore] = []

    def make(**options: Any) -> TieredStore:
        store = build_store(
            hot_url=options.pop("hot_url", redis_url),
            key_prefix=redis_prefix,
            engine=postgres_engine,
            local_dir=tmp_path,  # one COLD directory, shared like a bucket
            **options,
        )
        built.append(store)
        return store

    yield make
    for store in reversed(built):
        store.close()


@pytest.fixture
def pair(make_store: Callable[..., TieredStore]) -> tuple[TieredStore, TieredStore]:
    # No automatic promotion: the tests' polling reads must not move values by themselves.
    options = {"metrics": "simple", "promote_after_accesses": 32}
    return make_store(**options), make_store(**options)


def cached_in(store: TieredStore, key: str, value: Any) -> None:
    """Read ``key`` through ``store`` until its cache holds ``value`` (a fill is refused
    while an announcement of the key arrives during the read)."""
    eventually(lambda: store.get(key) == value and key in store.cache, f"{key} cached")
    assert store.get(key) == value


def test_a_write_through_one_store_reaches_the_other_stores_cache(
    pair: tuple[TieredStore, TieredStore],
) -> None:
    a, b = pair
    assert a.invalidation is not None and b.invalidation is not None
    assert a.invalidation.subscriber.connected and b.invalidation.subscriber.connected
    a.set("k", {"v": 1})
    cached_in(b, "k", {"v": 1})
    a.set("k", {"v": 2})
    eventually(lambda: "k" not in b.cache, "B's cached k invalidated")
    assert b.get("k") == {"v": 2}
    assert b.invalidation_stats()["keys_invalidated"] >= 1
    # One round trip: the announcement rode in the pipeline that dropped the HOT copy.
    hot_ops = a.metrics()["repositories"]["hot"]["operations"]
    assert hot_ops["delete_many"]["count"] == 2 and "publish" not in hot_ops


def test_a_store_ignores_its_own_messages(pair: tuple[TieredStore, TieredStore]) -> None:
    a, _ = pair
    assert a.invalidation is not None
    a.set("k", 1)
    eventually(lambda: a.invalidation_stats()["own_messages"] >= 1, "A hears its own message")
    assert "k" in a.cache and a.invalidation_stats()["keys_invalidated"] == 0


def test_hot_home_writes_and_transactions_are_announced(
    pair: tuple[TieredStore, TieredStore],
) -> None:
    a, b = pair
    a.set("session", {"s": 1}, category=HOT, ttl_seconds=60)
    a.set("user", {"u": 1})
    # Both writes' announcements reach B first: one arriving late would evict the entries
    # cached below, which the check before the commit relies on (a late message only costs
    # a miss; seen under a loaded CI run).
    eventually(lambda: b.invalidation_stats()["keys_invalidated"] >= 2, "B heard both writes")
    cached_in(b, "session", {"s": 1})
    cached_in(b, "user", {"u": 1})
    a.set("session", {"s": 2}, category=HOT, ttl_seconds=60)
    eventually(lambda: "session" not in b.cache, "HOT-home write announced")
    assert b.get("session") == {"s": 2}
    assert a.metrics()["repositories"]["hot"]["operations"]["publish"]["count"] >= 1
    with a.transaction() as txn:
        txn.set("user", {"u": 2})
        assert "user" in b.cache  # nothing is announced before the commit
    eventually(lambda: "user" not in b.cache, "transactional write announced")
    assert b.get("user") == {"u": 2}
    cached_in(b, "session", {"s": 2})
    with a.transaction() as txn:
        txn.delete("session")
    eventually(lambda: "session" not in b.cache, "transactional delete announced")
    assert b.get("session") is None


def test_batches_and_deletes_are_announced(pair: tuple[TieredStore, TieredStore]) -> None:
    a, b = pair
    a.batch_set({f"k{i}": i for i in range(10)})
    for i in (0, 5, 9):
        cached_in(b, f"k{i}", i)
    a.batch_set({f"k{i}": -i for i in range(10)})
    eventually(lambda: all(f"k{i}" not in b.cache for i in (0, 5, 9)), "batch_set announced")
    assert b.batch_get(["k0", "k5", "k9"]) == {"k0": 0, "k5": -5, "k9": -9}
    a.delete("k0")
    eventually(lambda: "k0" not in b.cache, "delete announced")
    assert b.get("k0") is None
    assert a.batch_delete(["k5", "k9"]) == 2
    eventually(lambda: "k5" not in b.cache and "k9" not in b.cache, "batch_delete announced")
    assert b.batch_get(["k5", "k9"]) == {}


def test_a_large_batch_is_announced_in_chunks(pair: tuple[TieredStore, TieredStore]) -> None:
    a, b = pair
    count = 2 * KEYS_PER_MESSAGE + 5
    keys = [f"bulk:{i}" for i in range(count)]
    a.batch_set(dict.fromkeys(keys, 0))
    watched = [keys[0], keys[KEYS_PER_MESSAGE + 1], keys[-1]]
    for key in watched:
        cached_in(b, key, 0)
    assert a.invalidation is not None
    before = a.invalidation.publisher.published
    a.batch_set(dict.fromkeys(keys, 1))
    assert a.invalidation.publisher.published - before == 3  # 1000 + 1000 + 5 keys
    eventually(lambda: all(k not in b.cache for k in watched), "every chunk arrived")
    assert b.batch_get(watched) == dict.fromkeys(watched, 1)


def test_promotions_and_demotions_are_announced(pair: tuple[TieredStore, TieredStore]) -> None:
    a, b = pair
    a.set("k", "v")
    cached_in(b, "k", "v")
    assert a.promote_to_hot("k")
    eventually(lambda: "k" not in b.cache, "promotion announced")
    entry = b.get_entry("k")
    assert entry is not None and entry.metadata.category is HOT
    assert a.demote_to_cold("k")
    eventually(lambda: "k" not in b.cache, "demotion announced")
    entry = b.get_entry("k")
    assert entry is not None and entry.metadata.category is COLD and entry.value == '"v"'
    assert a.batch_promote(["k"]) == 1
    eventually(lambda: "k" not in b.cache, "batch promotion announced")
    assert a.movements() == {"promotions": 2, "auto_promotions": 0, "demotions": 1}


def test_a_clear_message_and_malformed_messages(
    pair: tuple[TieredStore, TieredStore], redis_url: str, redis_prefix: str
) -> None:
    _, b = pair
    b.set("x", 1)
    client = redis.Redis.from_url(redis_url)
    try:
        channel = channel_for(redis_prefix)
        client.publish(channel, b"\xff\xfe not ascii")
        client.publish(channel, b"lonely-sender")
        client.publish(channel, b"someone-else *")
    finally:
        client.close()
    eventually(lambda: "x" not in b.cache, "the clear message emptied B's cache")
    assert b.invalidation is not None and b.invalidation.subscriber.running
    assert b.invalidation_stats()["messages"] >= 3


def test_no_thread_without_redis_or_with_invalidation_off(
    make_store: Callable[..., TieredStore], tmp_path: Path
) -> None:
    embedded = build_store(local_dir=tmp_path / "embedded")
    try:
        assert embedded.invalidation is None
        assert embedded.stats()["invalidation"] == {"enabled": False}
    finally:
        embedded.close()
    off = make_store(invalidation=False)
    assert off.invalidation is None and off.coordinator.guard.publisher is None
    on = make_store()
    assert len(threads_of(on)) == 1 and threads_of(on)[0].daemon
    on.close()
    assert threads_of(on) == []


def test_the_subscriber_survives_a_redis_restart_and_clears_its_cache(
    make_store: Callable[..., TieredStore], disposable_redis: Any
) -> None:
    a = make_store(hot_url=disposable_redis.url)
    b = make_store(hot_url=disposable_redis.url)
    assert a.invalidation is not None and b.invalidation is not None
    subscriber = b.invalidation.subscriber
    subscriber.initial_backoff, subscriber.max_backoff = 0.05, 0.2
    for health in (a.coordinator.guard.health[HOT], b.coordinator.guard.health[HOT]):
        health.initial_backoff, health.max_backoff = 0.05, 0.2
    a.set("k", "v1")
    cached_in(b, "k", "v1")
    disposable_redis.stop()
    eventually(lambda: not subscriber.connected, "B notices the lost connection", timeout=5)
    a.set("k", "v2")  # acknowledged by PostgreSQL; its message cannot be sent now
    assert not b.cache.synchronised
    time.sleep(b.cache.unsynced_max_age_seconds)
    assert b.cache.get("k", None) is None  # unheard changes: old entries are not served
    assert b.get("k") == "v2"
    disposable_redis.start()
    eventually(lambda: subscriber.connected, "B subscribes again", timeout=5)
    assert subscriber.subscriptions == 2
    assert "k" not in b.cache  # cleared: messages may have been missed meanwhile
    assert b.get("k") == "v2"
    # A announces what it could not while Redis was down once its HOT tier is back (as
    # soon as its own subscriber is back: B may not be listening yet, and needs not be,
    # having cleared its cache when it subscribed again)...
    eventually(a.coordinator.hot_usable, "A's HOT recovered", timeout=5)
    assert a.invalidation.publisher.deferred == 0
    # ...and invalidations flow again.
    cached_in(b, "k", "v2")
    a.set("k", "v3")
    eventually(lambda: "k" not in b.cache, "invalidations resume after the restart")
    assert b.get("k") == "v3"


def test_deferred_announcements_are_kept_merged_and_bounded() -> None:
    publisher = InvalidationPublisher("ch", "me", max_deferred=3)
    assert publisher.take(["a"]) == ["a"]
    publisher.defer(["a", "b"])
    assert publisher.deferred == 2
    assert publisher.take(["c"]) == ["a", "b", "c"] and publisher.deferred == 0
    publisher.defer(["a", "b", "c", "d"])  # past the bound: clear everything instead
    assert publisher.take(["e"]) == ["*"]
    assert publisher.messages(["*"]) == [b"me *"]
    assert publisher.messages(["x", "y"]) == [b"me x y"]
    assert publisher.messages([]) == []


# --------------------------------------------------------------------------- placing HOT copies


class Interleaved(FaultyRepository):
    """A Redis HOT tier whose ``hooks["add_copies"]`` runs just before copies are
    placed: another store's change lands between this store's read and its placing."""


@pytest.fixture
def b_store(
    redis_url: str, redis_prefix: str, postgres_engine: Any, tmp_path: Path
) -> Iterator[tuple[TieredStore, Interleaved]]:
    hot = Interleaved(RedisStateRepository(redis_url, key_prefix=redis_prefix))
    store = TieredStore(
        StateRepositories(
            hot,
            SQLStateRepository(postgres_engine),
            FilesystemStateRepository(tmp_path),
        ),
        policy=TierPromotionPolicy(promote_after_accesses=1),  # every read from below
    )
    yield store, hot
    store.close()


def meanwhile(change: Callable[[], object]) -> Callable[[object], None]:
    """A hook running ``change``: another store's write at the hooked moment."""

    def hook(_: object) -> None:
        change()

    return hook


def settled(b: TieredStore, heard: int) -> None:
    """Wait until ``b`` heard ``heard`` keys announced (an announcement arriving during
    a read cancels that read's placing of a HOT copy, rightly)."""
    eventually(lambda: b.invalidation_stats()["keys_invalidated"] >= heard, "B heard it")


def test_a_copy_placed_while_another_store_changes_the_value_is_removed(
    make_store: Callable[..., TieredStore], b_store: tuple[TieredStore, Interleaved]
) -> None:
    a, (b, hot) = make_store(), b_store
    a.set("k", 1)
    settled(b, 1)
    hot.hooks["add_copies"] = meanwhile(lambda: a.set("k", 2))  # commits, drops HOT, announces
    assert b.get("k") == 1  # B read 1 before A's change...
    assert hot.calls["add_copies"] == 1
    assert hot.inner.fetch("k") is None  # ...but its copy of 1 did not outlive the change
    assert b.movements()["auto_promotions"] == 0
    assert make_store().get("k") == 2
    eventually(lambda: b.get("k") == 2, "B sees the change")
    # The same race on an explicit promotion.
    a.set("p", 1)
    settled(b, 3)
    hot.hooks["add_copies"] = meanwhile(lambda: a.set("p", 3))
    assert b.promote_to_hot("p") is False
    assert hot.inner.fetch("p") is None and make_store().get("p") == 3


def test_placing_a_copy_never_overwrites_a_hot_home_written_meanwhile(
    make_store: Callable[..., TieredStore], b_store: tuple[TieredStore, Interleaved]
) -> None:
    a, (b, hot) = make_store(), b_store
    a.set("k", {"warm": 1})
    settled(b, 1)
    hot.hooks["add_copies"] = meanwhile(
        lambda: a.set("k", {"hot": 2}, category=HOT, ttl_seconds=60)
    )
    assert b.get("k") == {"warm": 1}
    kept = hot.inner.fetch("k")
    assert kept is not None and kept.value == doc({"hot": 2})  # A's acknowledged write stays
    assert make_store().get("k") == {"hot": 2}
    eventually(lambda: b.get("k") == {"hot": 2}, "B sees the change")


def test_redis_store_copies_and_delete_unchanged(redis_url: str, redis_prefix: str) -> None:
    repository = RedisStateRepository(redis_url, key_prefix=redis_prefix)
    try:
        repository.store("taken", doc("theirs"), version=7)
        added = repository.store_copies(
            [
                WriteRequest("taken", doc("mine"), version=1, ttl_seconds=60),
                WriteRequest("free", doc("mine"), version=4, ttl_seconds=60),
                WriteRequest("forever", doc(0), version=2),
            ]
        )
        assert set(added) == {"free", "forever"} and added["free"].version == 4
        assert repository.fetch("taken").value == doc("theirs")  # type: ignore[union-attr]
        assert repository.client.ttl(redis_prefix + "free") > 0
        assert repository.client.ttl(redis_prefix + "forever") == -1
        free, forever = repository.fetch("free"), repository.fetch("forever")
        assert free is not None and forever is not None
        repository.store("forever", doc(1), version=3)  # changed since we placed it
        stale = StoredValue("ghost", doc(1), free.metadata)
        assert repository.delete_unchanged([free, forever, stale]) == ["free"]
        assert repository.fetch("free") is None and repository.fetch("forever") is not None
        with pytest.raises(InvalidRequestError, match="version"):
            repository.store_copies([WriteRequest("x", doc(1))])
    finally:
        repository.close()


# --------------------------------------------------------------------------- two processes

CHILD = """
import sys, time
from flask_tiered_state.storage.factory import build_store

redis_url, prefix, database, local_dir = sys.argv[1:5]
store = build_store(
    hot_url=redis_url, key_prefix=prefix, warm_url=database, local_dir=local_dir
)
try:
    assert store.get("shared") == {"v": 1} and "shared" in store.cache
    print("ready", flush=True)
    sys.stdin.readline()
    start, seen = time.monotonic(), None
    while time.monotonic() - start < 5:
        if store.get("shared") == {"v": 2}:
            seen = time.monotonic() - start
            break
        time.sleep(0.002)
    print(f"seen {seen}", flush=True)
    store.set("shared", {"v": 3})
    print("wrote", flush=True)
    sys.stdin.readline()
finally:
    store.close()
"""


def test_invalidation_across_two_real_processes(
    make_store: Callable[..., TieredStore],
    redis_url: str,
    redis_prefix: str,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    parent = make_store()
    parent.set("shared", {"v": 1})
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, redis_url, redis_prefix, postgres_url, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    lines: queue.Queue[str] = queue.Queue()
    assert child.stdout is not None and child.stdin is not None
    stdout = child.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert lines.get(timeout=60).strip() == "ready"
        parent.set("shared", {"v": 2})
        child.stdin.write("go\n")
        child.stdin.flush()
        seen = lines.get(timeout=30).split()
        assert seen[0] == "seen" and seen[1] != "None", "the child kept its stale value"
        assert float(seen[1]) < WAIT
        assert lines.get(timeout=30).strip() == "wrote"
        eventually(lambda: parent.get("shared") == {"v": 3}, "the parent sees the child's write")
        child.stdin.write("done\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        reader.join(timeout=5)
        child.stdout.close()

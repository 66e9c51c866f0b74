"""The tier directory: a HOT-home write touches WARM and COLD only for keys that may have
copies there, and an older lower copy never resurfaces after the HOT value expires.

On real Redis, PostgreSQL and S3 (moto): SQL statements are counted on the WARM engine,
S3 requests on the COLD repository's botocore client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from flask_tiered_state.errors import TierUnavailableError
from flask_tiered_state.storage.base import StateCategory
from flask_tiered_state.storage.factory import build_store
from flask_tiered_state.storage.store import TieredStore
from tests.conftest import s3_url

from .tier_directory_workers import CONTEXT, Where, hot_writer, mover

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.s3]


class Requests:
    """SQL statements on the WARM engine and S3 requests of the COLD client."""

    def __init__(self, store: TieredStore) -> None:
        self.sql: list[str] = []
        self.s3: list[str] = []
        repos: Any = store.get_repositories()

        def on_sql(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            self.sql.append(statement)

        def on_s3(model: Any, **_: Any) -> None:
            self.s3.append(model.name)

        sa.event.listen(repos.warm.engine, "before_cursor_execute", on_sql)
        repos.cold._client.meta.events.register("before-call", on_s3)

    def reset(self) -> None:
        self.sql.clear()
        self.s3.clear()


@pytest.fixture
def open_store(
    redis_url: str, redis_prefix: str, postgres_engine: Any, s3_bucket: str, s3_endpoint_url: str
) -> Iterator[Callable[..., TieredStore]]:
    built: list[TieredStore] = []

    def build(**options: Any) -> TieredStore:
        store = build_store(
            hot_url=redis_url,
            key_prefix=redis_prefix,
            engine=postgres_engine,
            cold_url=s3_url(s3_bucket, s3_endpoint_url),
            **options,
        )
        built.append(store)
        return store

    yield build
    for store in built:
        store.close()


@pytest.fixture
def store(open_store: Callable[..., TieredStore]) -> TieredStore:
    return open_store()


def copies(store: TieredStore, key: str) -> dict[StateCategory, Any]:
    repos = store.get_repositories()
    found = {}
    for tier in StateCategory:
        hit = repos.by_category(tier).fetch(key)
        if hit is not None:
            found[tier] = hit.value
    return found


def expire_hot(store: TieredStore, key: str) -> None:
    """As if the HOT home's TTL ran out (and no process had it cached)."""
    store.get_repositories().hot.delete(key)
    store.cache.clear()


# --------------------------------------------------------------------------- no looking


def test_a_hot_batch_set_of_never_moved_keys_sends_no_sql_and_no_s3(store: TieredStore) -> None:
    assert store.tier_directory is not None and store.tier_directory.ready()
    requests = Requests(store)
    keys = [f"session:{i}" for i in range(1000)]
    for round_ in (1, 2):  # new keys, then the same keys again
        requests.reset()
        written = store.batch_set({k: {"r": round_} for k in keys}, category=HOT, ttl_seconds=60)
        assert {m.version for m in written.values()} == {round_}
        assert (requests.sql, requests.s3) == ([], [])
    requests.reset()
    store.set("session:one", {"s": 1}, category=HOT, ttl_seconds=60)
    assert (requests.sql, requests.s3) == ([], [])
    assert store.get("session:7") == {"r": 2}


def test_a_transaction_writing_never_moved_keys_hot_drops_nothing_below(
    store: TieredStore,
) -> None:
    requests = Requests(store)
    with store.transaction() as txn:
        for i in range(20):
            txn.set(f"session:{i}", {"i": i}, category=HOT, ttl_seconds=60)
    assert not [s for s in requests.sql if "DELETE" in s.upper()]
    assert requests.s3 == []
    assert store.get("session:3") == {"i": 3}


def test_a_transaction_that_writes_a_key_warm_then_hot_leaves_no_warm_row(
    store: TieredStore,
) -> None:
    with store.transaction() as txn:
        txn.set("k", "old")
        txn.set("k", "new", category=HOT, ttl_seconds=60)
    assert copies(store, "k") == {HOT: '"new"'}
    expire_hot(store, "k")
    assert store.get("k") is None


def test_keys_with_lower_copies_still_get_their_drops(store: TieredStore) -> None:
    store.batch_set({"w:1": "warm", "w:2": "warm"}, category=WARM)
    store.batch_set({"c:1": "cold"}, category=WARM)
    assert store.batch_demote(["c:1"]) == 1
    requests = Requests(store)
    fresh = {f"fresh:{i}": i for i in range(100)}
    store.batch_set({**fresh, "w:1": "hot", "c:1": "hot"}, category=HOT, ttl_seconds=60)
    assert requests.sql and requests.s3  # the drops ran, for the marked keys
    assert copies(store, "w:1") == {HOT: '"hot"'}
    assert copies(store, "c:1") == {HOT: '"hot"'}
    assert copies(store, "w:2") == {WARM: '"warm"'}
    for key in ("w:1", "c:1"):
        expire_hot(store, key)
        assert store.get(key) is None


# ------------------------------------------------------------- each way a lower copy is made


def _warm_set(store: TieredStore, key: str) -> None:
    store.set(key, "old", category=WARM)


def _warm_batch_set(store: TieredStore, key: str) -> None:
    store.batch_set({key: "old"}, category=WARM)


def _cold_set(store: TieredStore, key: str) -> None:
    store.set(key, "old", category=COLD)


def _cold_batch_set(store: TieredStore, key: str) -> None:
    store.batch_set({key: "old"}, category=COLD)


def _demoted_from_warm(store: TieredStore, key: str) -> None:
    store.set(key, "old", category=WARM)
    assert store.demote_to_cold(key)


def _demoted_from_hot(store: TieredStore, key: str) -> None:
    store.set(key, "old", category=HOT, ttl_seconds=600)
    assert store.demote_to_cold(key)


def _moved_home_by_compare_and_set(store: TieredStore, key: str) -> None:
    store.set(key, "older", category=HOT, ttl_seconds=600)
    store.set(key, "old", category=WARM, expected_version=1)  # follows the key out of HOT


def _transaction_warm(store: TieredStore, key: str) -> None:
    with store.transaction() as txn:
        txn.set(key, "old")


def _transaction_cold(store: TieredStore, key: str) -> None:
    with store.transaction() as txn:
        txn.set(key, "old", category=COLD)


def _transaction_moved_home(store: TieredStore, key: str) -> None:
    store.set(key, "older", category=COLD)
    with store.transaction() as txn:
        txn.set(key, "old", category=WARM, expected_version=1)


def _mark_refused_then_hot_drop(store: TieredStore, key: str) -> None:
    """Redis refuses the mark: the WARM write goes on, and its HOT drop marks the key."""
    directory = store.tier_directory
    assert directory is not None
    original = directory.mark

    def refuse(keys: Any) -> None:
        raise TierUnavailableError("hot", "refused for the test")

    directory.mark = refuse  # type: ignore[method-assign]
    try:
        store.set(key, "old", category=WARM)
    finally:
        directory.mark = original  # type: ignore[method-assign]
    assert directory.check([key]) == {key}


def _written_while_hot_is_degraded(store: TieredStore, key: str) -> None:
    """No mark while HOT is down: the HOT drop waits, and recovery does it, marking."""
    store.coordinator.tier_failed(HOT, TierUnavailableError("hot", "down for the test"))
    store.set(key, "old", category=WARM)
    assert key in store.coordinator.pending[HOT]
    directory = store.tier_directory
    assert directory is not None and directory.check([key]) == set()
    deadline = time.monotonic() + 10
    while not store.coordinator.hot_usable():  # recovery does the drop, and marks
        assert time.monotonic() < deadline, "HOT did not recover"
        time.sleep(0.05)
    assert directory.check([key]) == {key}


def _written_before_the_directory(store: TieredStore, key: str) -> None:
    """A copy made while no directory existed is found by the rebuild's listing."""
    directory = store.tier_directory
    assert directory is not None
    store.get_repositories().warm.store(key, '"old"')
    directory.client.delete(directory.name)
    assert not directory.ready()
    assert directory.rebuild() and directory.ready()


MAKERS = [
    _warm_set,
    _warm_batch_set,
    _cold_set,
    _cold_batch_set,
    _demoted_from_warm,
    _demoted_from_hot,
    _moved_home_by_compare_and_set,
    _transaction_warm,
    _transaction_cold,
    _transaction_moved_home,
    _mark_refused_then_hot_drop,
    _written_while_hot_is_degraded,
    _written_before_the_directory,
]


@pytest.mark.parametrize("make_lower_copy", MAKERS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("how", ["set", "batch_set", "transaction"])
def test_an_older_lower_copy_never_resurfaces_after_a_hot_home_write(
    store: TieredStore, make_lower_copy: Callable[[TieredStore, str], None], how: str
) -> None:
    key = "k:1"
    make_lower_copy(store, key)
    assert set(copies(store, key)) - {HOT}  # a lower copy exists
    if how == "batch_set":
        store.batch_set({key: "new", "k:other": 1}, category=HOT, ttl_seconds=600)
    elif how == "transaction":
        with store.transaction() as txn:
            txn.set(key, "new", category=HOT, ttl_seconds=600)
    else:
        store.set(key, "new", category=HOT, ttl_seconds=600)
    assert copies(store, key) == {HOT: '"new"'}
    expire_hot(store, key)
    assert store.get(key) is None
    assert store.batch_get([key]) == {}


# ------------------------------------------------- another process's HOT write at the worst moment


def _after(target: Any, name: str, then: Callable[[], None]) -> None:
    """Run ``then`` right after every call of ``target.name`` returns (once per call)."""
    original = getattr(target, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        then()
        return result

    setattr(target, name, wrapped)


INTERLEAVINGS: dict[str, tuple[str, str, Callable[[TieredStore, str], object]]] = {
    # The lower copy is readable once the repository call returns; the writer's own HOT
    # drop comes after, too late to tell a HOT write in between about the copy.
    "warm set": ("warm", "store", lambda s, k: s.set(k, "old", category=WARM)),
    "warm batch_set": ("warm", "store_many", lambda s, k: s.batch_set({k: "old"})),
    "cold set": ("cold", "store", lambda s, k: s.set(k, "old", category=COLD)),
    "cold batch_set": (
        "cold", "store_many", lambda s, k: s.batch_set({k: "old"}, category=COLD)
    ),
    # A demotion of a HOT home: the COLD copy is the home once HOT's is deleted.
    "demotion of a HOT home": ("hot", "delete_unchanged", lambda s, k: s.demote_to_cold(k)),
}  # fmt: skip


@pytest.mark.parametrize("name", list(INTERLEAVINGS))
def test_a_hot_home_write_racing_the_making_of_a_lower_copy_leaves_none_to_resurface(
    open_store: Callable[..., TieredStore], name: str
) -> None:
    tier, method, make = INTERLEAVINGS[name]
    store, other = open_store(), open_store()  # two processes, as far as caches and locks go
    key = "k:1"
    if name.startswith("demotion"):
        store.set(key, "older", category=HOT, ttl_seconds=600)
    written: list[bool] = []

    def other_writes_hot() -> None:
        if not written:
            written.append(True)
            other.set(key, "new", category=HOT, ttl_seconds=600)

    _after(store.coordinator.repositories.by_category(StateCategory(tier)), method,
           other_writes_hot)  # fmt: skip
    make(store, key)
    assert written
    assert copies(store, key) == {HOT: '"new"'}
    expire_hot(other, key)
    store.cache.clear()
    assert other.get(key) is None and store.get(key) is None


@pytest.mark.parametrize("promotion", ["promote_to_hot", "read"])
def test_a_promotion_never_overwrites_a_hot_home_write_made_after_it_looked(
    open_store: Callable[..., TieredStore], promotion: str
) -> None:
    """A promotion finds the key absent from HOT and its copy in COLD (version 5); another
    process then writes the key HOT-home, which numbers it afresh (version 1, HOT had
    none). The copy, though of a higher version, must not replace that newer value (it
    did: the race test's lost writes)."""
    store, other = open_store(promote_after_accesses=1), open_store()
    key = "k:1"
    for round_ in range(5):
        store.set(key, {"round": round_}, category=HOT, ttl_seconds=600)
    assert store.demote_to_cold(key)
    assert store.get_repositories().cold.fetch(key).metadata.version == 5  # type: ignore[union-attr]
    written: list[int] = []

    def other_writes_hot() -> None:
        if not written:
            written.append(other.set(key, {"round": 99}, category=HOT, ttl_seconds=600).version)

    _after(store.coordinator, "locate_many" if promotion == "promote_to_hot" else "locate",
           other_writes_hot)  # fmt: skip
    store.cache.clear()
    if promotion == "promote_to_hot":
        assert not store.promote_to_hot(key)
    else:
        assert store.get(key) == {"round": 4}  # read before the write: the COLD value
    assert written == [1]
    assert copies(store, key)[HOT] == '{"round":99}'
    store.cache.clear()
    assert store.get(key) == {"round": 99} and other.get(key) == {"round": 99}


def test_a_hot_home_write_right_after_a_transaction_commits_leaves_none_to_resurface(
    open_store: Callable[..., TieredStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_tiered_state.storage.transaction import StoreTransaction

    store, other = open_store(), open_store()
    original = StoreTransaction._after_commit

    def after_commit(self: StoreTransaction) -> None:
        other.set("k:1", "new", category=HOT, ttl_seconds=600)  # before our drops
        original(self)

    monkeypatch.setattr(StoreTransaction, "_after_commit", after_commit)
    with store.transaction() as txn:
        txn.set("k:1", "old")
    assert copies(store, "k:1") == {HOT: '"new"'}
    expire_hot(other, "k:1")
    store.cache.clear()
    assert store.get("k:1") is None


def test_a_lost_directory_means_drops_everywhere_until_it_is_rebuilt(
    store: TieredStore,
) -> None:
    directory = store.tier_directory
    assert directory is not None
    store.batch_set({"w": "old", "w2": "old"}, category=WARM)
    directory.client.delete(directory.name)  # evicted, flushed...
    requests = Requests(store)
    store.set("w", "new", category=HOT, ttl_seconds=60)
    assert requests.sql and requests.s3  # no answer: today's drops
    assert copies(store, "w") == {HOT: '"new"'}
    # The write that found it lost started a rebuild, which lists WARM and COLD again.
    deadline = time.monotonic() + 20
    while not directory.ready():
        assert time.monotonic() < deadline, "the directory was not rebuilt"
        time.sleep(0.05)
    requests.reset()
    store.batch_set({"fresh": 2}, category=HOT, ttl_seconds=60)
    assert (requests.sql, requests.s3) == ([], [])
    store.set("w2", "new", category=HOT, ttl_seconds=60)
    assert copies(store, "w2") == {HOT: '"new"'}
    expire_hot(store, "w2")
    assert store.get("w2") is None


def test_a_rebuild_that_loses_the_bitmap_midway_does_not_declare_it_ready(
    store: TieredStore,
) -> None:
    directory = store.tier_directory
    assert directory is not None
    directory.client.delete(directory.name)
    real = directory.mark

    def mark_then_lose(keys: Any) -> None:
        real(keys)
        directory.client.delete(directory.name)

    store.get_repositories().warm.store("w", '"old"')
    directory.mark = mark_then_lose  # type: ignore[method-assign]
    try:
        assert not directory.rebuild()
    finally:
        directory.mark = real  # type: ignore[method-assign]
    assert not directory.ready()


def test_the_directory_is_not_listed_as_a_key(store: TieredStore) -> None:
    store.set("w", 1, category=WARM)
    store.set("h", 1, category=HOT, ttl_seconds=60)
    hot = store.get_repositories().hot
    assert sorted(hot.keys("*")) == ["h"]
    assert store.keys("*") == ["h", "w"]
    assert hot.stats().key_count == 1


# --------------------------------------------------------------------------- a race


@pytest.mark.slow
def test_moves_racing_hot_home_writers_leave_no_stale_copy(
    store: TieredStore,
    redis_url: str,
    redis_prefix: str,
    postgres_url: str,
    s3_bucket: str,
    s3_endpoint_url: str,
) -> None:
    keys = [f"r:{i}" for i in range(40)]
    where = Where(redis_url, redis_prefix, postgres_url, s3_bucket, s3_endpoint_url)
    stop = CONTEXT.Event()
    written, moved = CONTEXT.Queue(), CONTEXT.Queue()
    writer = CONTEXT.Process(target=hot_writer, args=(where, keys, 8.0, 0.05, written))
    moving = CONTEXT.Process(target=mover, args=(where, keys, stop, moved))
    moving.start()
    writer.start()
    try:
        wrote = written.get(timeout=120)
    finally:
        stop.set()
    moves = moved.get(timeout=120)
    for process in (writer, moving):
        process.join(timeout=30)
        assert process.exitcode == 0
    assert wrote["errors"] == [] and moves["errors"] == []
    assert wrote["rounds"] >= 3 and moves["demoted"] >= len(keys) // 2, (wrote["rounds"], moves)
    print(f"\nrace: {wrote['rounds']} HOT rounds of half of {len(keys)} keys, {moves}")
    last: dict[str, int] = wrote["last"]
    stale = {}
    for key in keys:
        found = copies(store, key)
        expected = {f'{{"round":{last[key]}}}'} if key in last else set()
        if set(found.values()) != expected:
            stale[key] = (last.get(key), found)
    assert stale == {}, f"{len(stale)} keys hold a copy other than their last write: {stale}"
    for key in keys:
        expire_hot(store, key)
        assert store.get(key) in (None, {"round": last.get(key)})

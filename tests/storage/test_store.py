"""TieredStore: the facade, its validation, transactions, and the whole stack on real servers."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_tiered_state.errors import (
    ConcurrencyError,
    ConfigurationError,
    InvalidKeyError,
    InvalidPatternError,
    InvalidRequestError,
    StateTooLargeError,
    TierUnavailableError,
)
from flask_tiered_state.storage.base import StateCategory, StateRepositories, checksum_of
from flask_tiered_state.storage.factory import build_store
from flask_tiered_state.storage.memory import MemoryStateRepository
from flask_tiered_state.storage.sql import SQLStateRepository
from flask_tiered_state.storage.store import TieredStore
from flask_tiered_state.storage.tiering import TierPromotionPolicy
from flask_tiered_state.storage.transaction import TransactionWrite
from tests.conftest import s3_url

from .store_support import FakeClock, memory_tiers

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD


@pytest.fixture
def store() -> TieredStore:
    return TieredStore(memory_tiers(), max_value_bytes=1000)


def test_set_and_get_round_trip_with_canonical_json(store: TieredStore) -> None:
    value = {"b": [1, 2.5, None, True], "a": {"ü": "é"}}
    metadata = store.set("user:1", value)
    text = '{"a":{"ü":"é"},"b":[1,2.5,null,true]}'
    assert metadata.checksum == checksum_of(text) and metadata.version == 1
    assert store.get("user:1") == value
    entry = store.get_entry("user:1")
    assert entry is not None and entry.value == text
    store.cache.clear()
    assert store.get("user:1") == value
    assert store.get("absent") is None and store.get_entry("absent") is None


def test_get_hands_out_copies(store: TieredStore) -> None:
    store.set("k", {"nested": {"list": [1]}})
    for _ in range(2):  # a miss (decoded from the tier), then a hit (from the cache)
        got = store.get("k")
        got["nested"]["list"].append("x")
    assert store.get("k") == {"nested": {"list": [1]}}


def test_versions_and_compare_and_set(store: TieredStore) -> None:
    assert store.set("k", 1, expected_version=0).version == 1
    assert store.set("k", 2).version == 2
    with pytest.raises(ConcurrencyError) as caught:
        store.set("k", 3, expected_version=1)
    assert caught.value.actual == 2
    assert store.set("k", 3, expected_version=2).version == 3
    assert store.get("k") == 3


def test_no_read_returns_an_older_version_after_a_write(store: TieredStore) -> None:
    store.set("k", "v1")
    store.promote_to_hot("k")  # a HOT copy of v1
    store.set("k", "v2")
    assert store.get("k") == "v2"
    store.cache.clear()
    assert store.get("k") == "v2"
    store.demote_to_cold("k")
    store.set("k", "v3", category="warm", expected_version=2)  # archived -> WARM again
    store.cache.clear()
    assert store.get("k") == "v3"
    assert store.get_entry("k").metadata.version == 3  # type: ignore[union-attr]


def test_without_redis_the_cache_maximum_age_ends_staleness_across_stores(
    tmp_path: Path,
) -> None:
    # Two stores on one SQLite file and COLD directory, as two processes of an embedded
    # app: without Redis nothing tells one about the other's writes but the max age.
    clock = FakeClock()
    a, b = (build_store(local_dir=tmp_path, cache_ttl_seconds=60) for _ in range(2))
    try:
        assert a.invalidation is None and b.invalidation is None
        b.cache.clock = clock
        a.set("k", 1)
        assert b.get("k") == 1
        a.set("k", 2)
        clock.advance(59)
        assert b.get("k") == 1  # cached 59 s ago: still served
        clock.advance(1)
        assert b.get("k") == 2  # 60 s: re-read from the database
        assert b.cache.stats().expirations == 1
    finally:
        a.close()
        b.close()


def test_an_expired_hot_home_never_uncovers_an_older_lower_copy() -> None:
    clock = FakeClock()
    repositories = StateRepositories(
        MemoryStateRepository(HOT, clock=clock),
        MemoryStateRepository(WARM),
        MemoryStateRepository(COLD),
    )
    store = TieredStore(repositories)
    store.set("session", {"v": 1})  # WARM
    store.demote_to_cold("session")
    store.set("session", {"v": 2}, category=HOT, ttl_seconds=10)
    assert store.get("session") == {"v": 2}
    clock.advance(11)
    store.cache.clear()
    assert store.get("session") is None
    assert store.keys() == []


def test_concurrent_readers_never_see_a_version_older_than_the_last_acknowledged_write() -> None:
    store = TieredStore(memory_tiers(), policy=TierPromotionPolicy(promote_after_accesses=1))
    acknowledged = [0]
    failures: list[str] = []
    stop = threading.Event()

    def writer(key: str) -> None:
        for n in range(1, 400):
            store.set(key, n)
            acknowledged[0] = n
            if n % 7 == 0:
                store.cache.invalidate(key)  # readers go below the cache again
            if n % 50 == 0:
                store.demote_to_cold(key)
        stop.set()

    def reader(key: str) -> None:
        while not stop.is_set():
            floor = acknowledged[0]
            got = store.get(key)
            if got is not None and got < floor:
                failures.append(f"read {got} after {floor} was acknowledged")

    threads = [threading.Thread(target=writer, args=("k",))]
    threads += [threading.Thread(target=reader, args=("k",)) for _ in range(3)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so the races do happen
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures[:3]
    store.cache.clear()
    assert store.get("k") == 399


def test_delete_and_keys(store: TieredStore) -> None:
    store.batch_set({"a:1": 1, "a:2": 2, "b:1": 3})
    store.set("a:3", 4, category=COLD)
    assert store.keys("a:*") == ["a:1", "a:2", "a:3"]
    assert store.delete("a:1") is True and store.delete("a:1") is False
    assert store.get("a:1") is None
    assert store.keys() == ["a:2", "a:3", "b:1"]


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda s: s.set("bad key", 1), InvalidKeyError, "bad key"),
        (lambda s: s.get(""), InvalidKeyError, "1 to 255"),
        (lambda s: s.keys("a[b]"), InvalidPatternError, "a[b]"),
        (lambda s: s.set("k", 1, category="lukewarm"), InvalidRequestError, "'hot', 'warm'"),
        (lambda s: s.set("k", 1, ttl_seconds=0), InvalidRequestError, "ttl_seconds"),
        (lambda s: s.set("k", 1, ttl_seconds=True), InvalidRequestError, "ttl_seconds"),
        (lambda s: s.set("k", 1, expected_version=-1), InvalidRequestError, "expected_version"),
        (lambda s: s.set("k", {1, 2}), InvalidRequestError, "not JSON-serialisable"),
        (lambda s: s.set("k", float("nan")), InvalidRequestError, "'k'"),
        (lambda s: s.set("k", {1: "a", "b": 2}), InvalidRequestError, "'k'"),
        (lambda s: s.promote_to_hot("k", ttl_seconds=-5), InvalidRequestError, "ttl_seconds"),
    ],
)
def test_bad_input_raises_named_errors(
    store: TieredStore, call: Callable[[TieredStore], Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as caught:
        call(store)
    assert words in str(caught.value)
    assert store.keys() == []


def test_values_larger_than_max_value_bytes_are_refused(store: TieredStore) -> None:
    store.set("fits", "x" * 990)
    with pytest.raises(StateTooLargeError) as caught:
        store.set("big", "é" * 600)  # 600 characters, 1,202 bytes
    assert (caught.value.size, caught.value.limit) == (1202, 1000)
    with pytest.raises(StateTooLargeError):
        store.batch_set({"ok": 1, "big": "y" * 2000})
    assert store.keys() == ["fits"]


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="StateRepositories"):
        TieredStore({"hot": None})  # type: ignore[arg-type]
    wrong = StateRepositories(
        MemoryStateRepository(HOT), MemoryStateRepository(HOT), MemoryStateRepository(COLD)
    )
    with pytest.raises(ConfigurationError, match="warm tier serves the hot tier"):
        TieredStore(wrong)
    with pytest.raises(ConfigurationError, match="max_value_bytes"):
        TieredStore(memory_tiers(), max_value_bytes=0)


def test_stats_metrics_and_close(store: TieredStore) -> None:
    store.set("k", {"a": 1})
    store.get("k")
    store.cache.clear()
    store.get("k")
    stats = store.stats()
    assert stats["tiers"]["warm"]["key_count"] == 1
    assert stats["tiers"]["warm"]["hit_rate"] == 1.0
    assert stats["tiers"]["hot"]["health"]["healthy"] is True
    assert stats["cache"]["hits"] == 1
    metrics = store.metrics()
    assert metrics["tiers"]["hot"] == {"hits": 0, "misses": 1, "hit_rate": 0.0}
    assert metrics["repositories"] == {}
    assert store.get_repositories().warm.backend == "memory"
    json.dumps(stats), json.dumps(metrics)
    store.close()
    store.close()


# --------------------------------------------------------------------------- transactions


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TieredStore]:
    if request.param == "sqlite":
        warm = SQLStateRepository(f"sqlite:///{tmp_path / 'warm.sqlite3'}")
    else:
        warm = SQLStateRepository(request.getfixturevalue("postgres_engine"))
    rows = sa.Table("audit", sa.MetaData(), sa.Column("note", sa.String(50), primary_key=True))
    rows.create(warm.engine)
    store = TieredStore(
        StateRepositories(MemoryStateRepository(HOT), warm, MemoryStateRepository(COLD))
    )
    store.audit = rows  # type: ignore[attr-defined]
    yield store
    store.close()
    rows.drop(warm.engine)


def audit_notes(store: TieredStore) -> list[str]:
    with store.warm.engine.connect() as connection:
        return sorted(connection.execute(sa.select(store.audit.c.note)).scalars())  # type: ignore[attr-defined]


def test_transaction_commits_values_and_own_rows_together(sql_store: TieredStore) -> None:
    sql_store.set("k", "old")
    sql_store.promote_to_hot("k")
    with sql_store.transaction() as txn:
        assert txn.set("k", "new", expected_version=1).version == 2  # type: ignore[union-attr]
        txn.set("session", {"s": 1}, category=HOT, ttl_seconds=60)
        txn.connection.execute(sa.insert(sql_store.audit).values(note="k updated"))  # type: ignore[attr-defined]
        assert sql_store.get("k") == "old"  # the cache is refreshed only after commit
    assert sql_store.get("k") == "new"
    assert sql_store.get("session") == {"s": 1}
    repos = sql_store.get_repositories()
    assert repos.hot.fetch("k") is None  # the stale HOT copy was dropped
    assert audit_notes(sql_store) == ["k updated"]


def test_transaction_rolls_back_everything_on_error(sql_store: TieredStore) -> None:
    sql_store.set("k", "old")
    with pytest.raises(RuntimeError), sql_store.transaction() as txn:
        txn.set("k", "new")
        txn.connection.execute(sa.insert(sql_store.audit).values(note="never"))  # type: ignore[attr-defined]
        raise RuntimeError("boom")
    assert sql_store.get("k") == "old"
    sql_store.cache.clear()
    assert sql_store.get("k") == "old"
    assert audit_notes(sql_store) == []


def test_a_failing_hot_write_at_commit_rolls_the_sql_back(
    sql_store: TieredStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql_store.set("k", "old")
    hot = sql_store.get_repositories().hot
    monkeypatch.setattr(hot, "store", _raise_unavailable)
    with pytest.raises(TierUnavailableError), sql_store.transaction() as txn:
        txn.set("k", "new")
        txn.set("session", 1, category=HOT)
        txn.connection.execute(sa.insert(sql_store.audit).values(note="never"))  # type: ignore[attr-defined]
    sql_store.cache.clear()
    assert sql_store.get("k") == "old"
    assert audit_notes(sql_store) == []


def _raise_unavailable(*args: object, **kwargs: object) -> None:
    raise TierUnavailableError("hot", "injected: Redis refused the connection")


def test_writes_applied_before_a_later_failure_are_undone(sql_store: TieredStore) -> None:
    sql_store.set("session", {"s": "old"}, category=HOT, ttl_seconds=60)
    hot = sql_store.get_repositories().hot
    real_store = hot.store

    def store_then_fail_on_second(key: str, value: str, **kwargs: Any) -> Any:
        if key == "second":
            raise TierUnavailableError("hot", "injected: Redis refused the connection")
        return real_store(key, value, **kwargs)

    hot.store = store_then_fail_on_second  # type: ignore[method-assign]
    with pytest.raises(TierUnavailableError), sql_store.transaction() as txn:
        txn.set("session", {"s": "new"}, category=HOT, ttl_seconds=60, expected_version=1)
        txn.set("fresh", {"f": 1}, category=HOT, ttl_seconds=60, expected_version=0)
        txn.set("second", 1, category=HOT)
        txn.connection.execute(sa.insert(sql_store.audit).values(note="never"))  # type: ignore[attr-defined]
    restored = hot.fetch("session")
    assert restored is not None and restored.metadata.version == 1
    assert json.loads(restored.value) == {"s": "old"}
    assert hot.fetch("fresh") is None
    assert audit_notes(sql_store) == []


@pytest.mark.redis
@pytest.mark.postgres
def test_a_failed_commit_undoes_the_hot_and_cold_writes(
    redis_url: str, redis_prefix: str, postgres_engine: Any, tmp_path: Path
) -> None:
    """The SQL connection is cut (its backend terminated) after the HOT and COLD writes
    were applied: the commit fails, so those writes are undone on real Redis."""
    built = build_store(
        hot_url=redis_url, key_prefix=redis_prefix + "undo:", engine=postgres_engine,
        local_dir=tmp_path,
    )  # fmt: skip
    note = sa.Column("note", sa.String(50), primary_key=True)
    audit = sa.Table("undo_audit", sa.MetaData(), note)
    audit.create(postgres_engine)
    repos = built.get_repositories()
    try:
        built.set("session", {"s": "old"}, category=HOT, ttl_seconds=60)
        built.set("archive", {"a": "old"}, category=StateCategory.COLD)
        with pytest.raises(TierUnavailableError), built.transaction() as txn:
            txn.set("session", {"s": "new"}, category=HOT, ttl_seconds=60, expected_version=1)
            txn.set("archive", {"a": "new"}, category=StateCategory.COLD, expected_version=1)
            txn.set("fresh", {"f": 1}, category=HOT, ttl_seconds=60, expected_version=0)
            txn.connection.execute(sa.insert(audit).values(note="never"))
            pid = txn.connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with postgres_engine.connect() as admin:
                admin.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        session, archive = repos.hot.fetch("session"), repos.cold.fetch("archive")
        assert session is not None and session.metadata.version == 1
        assert json.loads(session.value) == {"s": "old"}
        assert archive is not None and json.loads(archive.value) == {"a": "old"}
        assert repos.hot.fetch("fresh") is None
        built.cache.clear()
        assert built.get("session") == {"s": "old"} and built.get("fresh") is None
        with postgres_engine.connect() as connection:
            assert connection.execute(sa.select(audit.c.note)).all() == []
    finally:
        built.close()
        audit.drop(postgres_engine)


def test_transaction_compare_and_set_follows_an_archived_key(sql_store: TieredStore) -> None:
    sql_store.set("k", "v1")
    sql_store.demote_to_cold("k")
    with pytest.raises(ConcurrencyError), sql_store.transaction() as txn:
        txn.set("k", "stale", expected_version=7)
    with sql_store.transaction() as txn:
        assert txn.set("k", "v2", expected_version=1).version == 2  # type: ignore[union-attr]
        assert txn.delete("other") is False
    assert sql_store.get_repositories().cold.fetch("k") is None
    sql_store.cache.clear()
    assert sql_store.get("k") == "v2"
    with sql_store.transaction() as txn:
        assert txn.delete("k") is True
    assert sql_store.get("k") is None and sql_store.keys() == []


@contextmanager
def _statements(store: TieredStore) -> Iterator[list[str]]:
    """The SQL statements the WARM engine runs inside the block."""
    seen: list[str] = []

    def listener(*args: Any) -> None:
        seen.append(args[2])

    sa.event.listen(store.warm.engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        sa.event.remove(store.warm.engine, "before_cursor_execute", listener)


def test_set_many_writes_a_batch_of_compare_and_sets_as_set_would(sql_store: TieredStore) -> None:
    for n in range(4):
        sql_store.set(f"k{n}", {"n": n})
    sql_store.set("gone", "short", ttl_seconds=1)
    sql_store.demote_to_cold("k3")  # a key whose copy moved: set's path follows it
    clock = time.time() + 5  # "gone" has expired: an insert may take its row over
    sql_store.get_repositories().warm._clock = lambda: clock  # type: ignore[attr-defined]
    writes = [
        TransactionWrite("k2", {"n": 20}, expected_version=1),
        TransactionWrite("k0", {"n": 10}, expected_version=1),
        TransactionWrite("new", {"n": 99}, expected_version=0),
        TransactionWrite("gone", {"back": True}, expected_version=0),
        TransactionWrite("k3", {"n": 30}, expected_version=1),
        TransactionWrite("s", {"session": 1}, category=HOT, ttl_seconds=60, expected_version=0),
        TransactionWrite("k1", {"n": 11}),  # no compare-and-set: set's upsert
    ]
    with _statements(sql_store) as seen, sql_store.transaction() as txn:
        txn.set_many(writes)
    sql_store.cache.clear()
    expected = {"k0": {"n": 10}, "k1": {"n": 11}, "k2": {"n": 20}, "k3": {"n": 30},
                "new": {"n": 99}, "gone": {"back": True}, "s": {"session": 1}}  # fmt: skip
    assert {k: sql_store.get(k) for k in expected} == expected
    repos = sql_store.get_repositories()
    assert {k: repos.warm.fetch(k).metadata.version for k in ("k0", "k2", "new")} == {  # type: ignore[union-attr]
        "k0": 2,
        "k2": 2,
        "new": 1,
    }
    assert repos.cold.fetch("k3") is None
    if sql_store.warm.backend == "postgresql":
        batched = [s for s in seen if "json_to_recordset" in s]
        assert len(batched) == 2  # one UPDATE (k0, k2, k3), one INSERT (new, gone)


def test_set_many_refuses_the_whole_batch_at_a_version_conflict(sql_store: TieredStore) -> None:
    for n in range(3):
        sql_store.set(f"k{n}", {"n": n})
    sql_store.set("k1", {"n": "moved on"})  # now at version 2
    with pytest.raises(ConcurrencyError) as raised, sql_store.transaction() as txn:
        txn.set_many([TransactionWrite(f"k{n}", {"n": -n}, expected_version=1) for n in range(3)]
                     + [TransactionWrite("k9", {"n": 9}, expected_version=0)])  # fmt: skip
    assert (raised.value.key, raised.value.expected, raised.value.actual) == ("k1", 1, 2)
    sql_store.cache.clear()
    assert [sql_store.get(f"k{n}") for n in range(3)] == [{"n": 0}, {"n": "moved on"}, {"n": 2}]
    assert sql_store.get("k9") is None
    with pytest.raises(ConcurrencyError) as raised, sql_store.transaction() as txn:
        txn.set_many([TransactionWrite("k9", {}, expected_version=0),
                      TransactionWrite("k0", {}, expected_version=0)])  # fmt: skip
    assert (raised.value.key, raised.value.actual) == ("k0", 1)
    assert sql_store.get("k9") is None


def test_transaction_needs_a_sql_warm_tier(store: TieredStore) -> None:
    with pytest.raises(ConfigurationError, match="unit_of_work"), store.transaction():
        pass


# --------------------------------------------------------------------------- real servers


@pytest.fixture
def server_store(
    redis_url: str, redis_prefix: str, postgres_engine: Any, s3_bucket: str, s3_endpoint_url: str
) -> Iterator[TieredStore]:
    built = build_store(
        hot_url=redis_url,
        key_prefix=redis_prefix,
        engine=postgres_engine,
        cold_url=s3_url(s3_bucket, s3_endpoint_url),
        metrics="simple",
        promote_after_accesses=2,
    )
    yield built
    built.close()


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.s3
def test_the_whole_stack_on_redis_postgresql_and_s3(server_store: TieredStore) -> None:
    repos = server_store.get_repositories()
    assert (repos.redis, repos.postgres, repos.s3) == (repos.hot, repos.warm, repos.cold)
    server_store.batch_set({f"user:{i}": {"n": i} for i in range(300)})
    server_store.set("session:1", {"s": 1}, category=HOT, ttl_seconds=60)
    assert server_store.batch_demote([f"user:{i}" for i in range(100)]) == 100
    server_store.cache.clear()
    got = server_store.batch_get([f"user:{i}" for i in range(300)])
    assert got == {f"user:{i}": {"n": i} for i in range(300)}
    assert server_store.batch_promote(["user:1", "user:200"]) == 2
    assert repos.hot.fetch("user:1").metadata.version == 1  # type: ignore[union-attr]
    server_store.set("user:1", {"n": "new"}, expected_version=1)
    assert repos.hot.fetch("user:1") is None and repos.cold.fetch("user:1") is None
    server_store.cache.clear()
    assert server_store.get("user:1") == {"n": "new"}
    assert len(server_store.keys("user:*")) == 300
    assert server_store.batch_delete([f"user:{i}" for i in range(300)]) == 300
    assert server_store.keys() == ["session:1"]
    ops = server_store.metrics()["repositories"]
    assert ops["warm"]["operations"]["store_many"]["count"] >= 1


@pytest.mark.redis
@pytest.mark.postgres
def test_a_stopped_redis_degrades_to_warm_and_recovers_by_itself(
    disposable_redis: Any, postgres_engine: Any, tmp_path: Path
) -> None:
    built = build_store(
        hot_url=disposable_redis.url,
        engine=postgres_engine,
        local_dir=tmp_path,
        promote_after_accesses=1,
    )
    built.coordinator.guard.health[HOT].initial_backoff = 0.05
    built.coordinator.guard.health[HOT].max_backoff = 0.2
    hot = built.get_repositories().hot
    try:
        built.set("k", "v1")
        built.cache.clear()
        assert built.get("k") == "v1"
        assert hot.fetch("k") is not None  # read often: it got a Redis copy
        disposable_redis.stop()
        built.set("k", "v2")  # the Redis copy cannot be dropped now
        built.cache.clear()
        started = time.monotonic()
        assert built.get("k") == "v2"  # served from PostgreSQL
        assert not built.coordinator.guard.health[HOT].healthy
        built.cache.clear()
        assert built.get("k") == "v2"
        assert time.monotonic() - started < 5  # degraded reads do not wait on Redis
        disposable_redis.start()
        deadline = time.monotonic() + 10
        while not built.coordinator.guard.health[HOT].healthy and time.monotonic() < deadline:
            built.cache.clear()
            assert built.get("k") == "v2"
            time.sleep(0.05)
        assert built.coordinator.guard.health[HOT].healthy
        built.cache.clear()
        assert built.get("k") == "v2"
        assert hot.fetch("k").value == '"v2"'  # type: ignore[union-attr]
    finally:
        built.close()


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.parametrize("overflow", [False, True], ids=["tracked", "reconciled"])
def test_recovery_drops_stale_hot_copies_but_not_a_newer_write_of_another_process(
    disposable_redis: Any, postgres_engine: Any, tmp_path: Path, overflow: bool
) -> None:
    """While Redis is down, a WARM write cannot drop the old Redis copy. When Redis is
    back, another process may write the key to HOT (its new home) or place a fresh copy
    before this process retries the drop: those must survive; a copy stored before the
    WARM write (one that outlived the outage) must not. ``reconciled``: too many
    pending drops to track, so recovery reconciles the whole HOT tier."""
    from flask_tiered_state.storage.redis.codec import encode_write

    def open_store(name: str) -> TieredStore:
        # Recovery only from this test's own calls: no subscriber that resubscribes (and
        # recovers) the moment Redis is back, before the outdated copy is put back.
        built = build_store(
            hot_url=disposable_redis.url,
            engine=postgres_engine,
            local_dir=tmp_path / name,
            invalidation=False,
            drop_replay_interval=None,
        )
        built.coordinator.guard.health[HOT].initial_backoff = 0.05
        built.coordinator.guard.health[HOT].max_backoff = 0.1
        return built

    this, other = open_store("this"), open_store("other")
    pending = this.coordinator.pending[HOT]
    if overflow:
        pending.limit = 1
    try:
        for key in ("taken", "stale", "fresh"):
            this.set(key, {"v": 1})
        disposable_redis.stop()
        before_outage_ends = time.time()
        for key in ("taken", "stale", "fresh"):
            this.set(key, {"v": 2})  # WARM; the HOT drops are now pending
        if overflow:
            assert pending.overflowed
        else:
            assert {"taken", "stale", "fresh"} <= set(pending.snapshot())
        disposable_redis.start()  # an empty Redis: put back a copy that outlived the outage
        old = encode_write("stale", "stale", '{"v":1}', b"hot", 600, 1, before_outage_ends - 5)
        raw = other.get_repositories().hot.client  # type: ignore[attr-defined]
        raw.set(other.get_repositories().hot.key_prefix + "stale", old.payload(1))  # type: ignore[attr-defined]
        other.set("taken", {"v": "other"}, category=HOT, ttl_seconds=600)
        assert other.batch_promote(["fresh"]) == 1  # a HOT copy of the new value
        deadline = time.monotonic() + 10
        while not this.coordinator.guard.health[HOT].healthy and time.monotonic() < deadline:
            this.cache.clear()
            this.get("taken")
            time.sleep(0.05)
        assert this.coordinator.guard.health[HOT].healthy
        assert len(this.coordinator.pending[HOT]) == 0
        this.cache.clear()
        assert this.get("taken") == {"v": "other"}  # the other process's write survived
        assert this.get("stale") == {"v": 2}  # the outdated copy was dropped
        assert this.get_repositories().hot.fetch("stale") is None
        assert this.get_repositories().hot.fetch("fresh").value == '{"v":2}'  # type: ignore[union-attr]
    finally:
        this.close()
        other.close()


def test_one_health_answer_per_tier_in_stats_and_checks(tmp_path: Path) -> None:
    """``available`` and ``health["healthy"]`` never disagree: a tier that does not
    answer is down with its failures counted, before any call failed on it; a tier
    marked down that answers is up again at the next check (no pending drops kept it
    down forever)."""
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    built = build_store(hot_url=closed, local_dir=tmp_path)
    try:
        hot = built.stats()["tiers"]["hot"]
        assert hot["available"] is hot["health"]["healthy"] is False
        assert hot["health"]["failures"] >= 1 and hot["error"] and "key_count" not in hot
        assert not built.coordinator.guard.health[HOT].healthy  # the store stops using it
        checked = built.check_tiers()
        assert checked["hot"]["available"] is False and checked["hot"]["failures"] >= 2
        # A failed WARM call with nothing left to drop used to keep WARM "unhealthy".
        built.coordinator.guard.failed(WARM, TierUnavailableError("warm", "a lost reply"))
        warm = built.stats()["tiers"]["warm"]
        assert warm["available"] is warm["health"]["healthy"] is True
        assert warm["health"]["failures"] == 0 and warm["key_count"] == 0
        assert built.check_tiers()["warm"] == {
            "backend": "sqlite", "available": True, "failures": 0,
            "degraded_for_seconds": None, "next_check_in_seconds": None,
            "last_error": None, "pending_drops": 0,
        }  # fmt: skip
    finally:
        built.close()

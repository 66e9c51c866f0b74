"""SQLStateRepository (WARM tier) on the real PostgreSQL server and on SQLite files.

Faults are real: connections are cut with ``pg_terminate_backend`` and an absent server
is a closed loopback port. Stopping the PostgreSQL server itself is not done here (it is
shared with every other test run); a restart looks to the pool like the terminated
connections tested below, every pooled connection at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_tiered_state.errors import (
    ConcurrencyError,
    ConfigurationError,
    IntegrityError,
    InvalidPatternError,
    InvalidRequestError,
    TierUnavailableError,
)
from flask_tiered_state.storage.base import StateCategory, WriteRequest, checksum_of
from flask_tiered_state.storage.sql import SQLStateRepository
from tests.conftest import free_port


class Clock:
    """A wall clock the test moves by hand (TTL expiry without sleeping)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def doc(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


Factory = Callable[..., SQLStateRepository]


def _url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    if backend == "postgresql":
        request.getfixturevalue("postgres_engine")  # drops the test's tables afterwards
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'warm.sqlite3'}"


def _factory(url: str) -> tuple[Factory, list[SQLStateRepository]]:
    made: list[SQLStateRepository] = []

    def make(**options: Any) -> SQLStateRepository:
        made.append(SQLStateRepository(options.pop("url", url), **options))
        return made[-1]

    return make, made


PG = pytest.param("postgresql", marks=pytest.mark.postgres)


@pytest.fixture(params=[PG, "sqlite"])
def make_repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """Builds repositories on this backend's URL; closes them afterwards."""
    make, made = _factory(_url(request, request.param, tmp_path))
    yield make
    for repo in made:
        repo.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def repo(make_repo: Factory, clock: Clock) -> SQLStateRepository:
    return make_repo(clock=clock)


@pytest.fixture(
    params=[
        pytest.param("postgresql-copy", marks=pytest.mark.postgres),
        pytest.param("postgresql-executemany", marks=pytest.mark.postgres),
        "sqlite",
    ]
)
def batch_repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLStateRepository]:
    """Small chunks, so batches cross chunk boundaries; PostgreSQL runs both write paths."""
    backend = request.param.split("-")[0]
    repo = SQLStateRepository(
        _url(request, backend, tmp_path), batch_size=7, use_copy=request.param.endswith("copy")
    )
    yield repo
    repo.close()


def raw_sql(repo: SQLStateRepository, sql: str, **params: Any) -> Any:
    with repo.engine.begin() as connection:
        result = connection.execute(sa.text(sql), params)
        return result.all() if result.returns_rows else None


# --------------------------------------------------------------------------- construction


def test_table_shape_per_dialect(repo: SQLStateRepository) -> None:
    inspector = sa.inspect(repo.engine)
    columns = {c["name"]: c for c in inspector.get_columns("tiered_state_entries")}
    assert {"key", "value", "checksum", "size", "version", "category", "stored_at"} <= set(columns)
    assert {"last_accessed", "ttl_seconds", "expires_at"} <= set(columns)
    assert inspector.get_pk_constraint("tiered_state_entries")["constrained_columns"] == ["key"]
    if repo.backend == "postgresql":
        assert str(columns["document"]["type"]) == "JSONB"
        assert "value)::jsonb" in columns["document"]["computed"]["sqltext"]
        (indexdef,) = raw_sql(
            repo,
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_tiered_state_entries_document'",
        )[0]
        assert "gin" in indexdef and "jsonb_path_ops" in indexdef
    else:
        assert "document" not in columns
        checks = inspector.get_check_constraints("tiered_state_entries")
        assert any("json_valid" in c["sqltext"] for c in checks)


@pytest.mark.postgres
def test_plain_postgresql_url_uses_psycopg(postgres_url: str) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    variants = (plain, plain.replace("postgresql://", "postgres://"))
    for url in (*variants, postgres_url.replace("postgresql+", "postgres+")):
        repo = SQLStateRepository(url, create_tables=False)
        try:
            assert repo.engine.url.drivername == "postgresql+psycopg"
            assert repo.backend == "postgresql" and repo.ping() is True
        finally:
            repo.close()


def test_table_attaches_to_given_metadata_and_create_tables_false_creates_nothing(
    make_repo: Factory,
) -> None:
    metadata = sa.MetaData()
    repo = make_repo(metadata=metadata, table_name="app_states", create_tables=False)
    assert metadata.tables["app_states"] is repo.table
    assert not sa.inspect(repo.engine).has_table("app_states")
    with pytest.raises(TierUnavailableError) as info:
        repo.fetch("k")
    assert info.value.tier == "warm"
    # A second repository on the same MetaData reuses the table; creating is idempotent.
    again = make_repo(metadata=metadata, table_name="app_states")
    assert again.table is repo.table
    again.create_tables()
    assert repo.store("k", doc(1)).version == 1


def test_given_engine_is_used_and_left_open(make_repo: Factory) -> None:
    owner = make_repo()
    repo = make_repo(url=owner.engine)
    assert repo.engine is owner.engine
    repo.store("shared", doc(1))
    repo.close()
    assert owner.fetch("shared") is not None


def test_two_tables_share_one_engine(make_repo: Factory) -> None:
    first = make_repo()
    second = make_repo(url=first.engine, table_name="second_entries")
    for round_ in range(2):  # the second round reuses each session's load table
        for repo in (first, second, first):
            repo.store_many([WriteRequest("k", doc(round_))])
    stored = [repo.fetch("k") for repo in (first, second)]
    assert [s.metadata.version if s else None for s in stored] == [4, 2]


@pytest.mark.parametrize(
    ("argument", "options", "words"),
    [
        ("sqlite:///x.db", {"table_name": "bad name"}, "table_name"),
        ("sqlite:///x.db", {"batch_size": 0}, "batch_size"),
        ("not a url", {}, "URL"),
        ("mysql://u@h/db", {}, "supports postgresql and sqlite"),
        ("postgresql+nosuchdriver://u@h/db", {}, "not installed"),
        ("sqlite:///x.db", {"connect_timeout": 0}, "connect_timeout"),
        (42, {}, "Engine or a database URL"),
    ],
)
def test_bad_configuration_is_refused(argument: Any, options: Any, words: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        SQLStateRepository(argument, **options)
    assert words in info.value.message


def test_metadata_table_without_our_columns_is_refused() -> None:
    metadata = sa.MetaData()
    sa.Table("tiered_state_entries", metadata, sa.Column("id", sa.Integer, primary_key=True))
    with pytest.raises(ConfigurationError, match="without the columns"):
        SQLStateRepository("sqlite://", metadata=metadata, create_tables=False)


# --------------------------------------------------------------------------- values and versions


def test_round_trip_keeps_exact_text_and_metadata(repo: SQLStateRepository, clock: Clock) -> None:
    text = '{"b": 1,  "a": [1, 2.50, "ü"]}'  # whitespace and key order must survive
    written = repo.store("user:1", text, ttl_seconds=60)
    got = repo.fetch("user:1")
    assert got is not None and got.value == text
    assert got.metadata == written
    assert written.checksum == checksum_of(text) and written.size == len(text.encode())
    assert written.category is StateCategory.WARM and written.ttl_seconds == 60
    assert written.stored_at == clock.now
    (last_accessed,) = raw_sql(repo, "SELECT last_accessed FROM tiered_state_entries")[0]
    assert last_accessed == clock.now


def test_versions_increment_restart_after_expiry_and_keep_explicit(
    repo: SQLStateRepository, clock: Clock
) -> None:
    assert [repo.store("v", doc(i)).version for i in range(3)] == [1, 2, 3]
    assert repo.store("v", doc("moved"), version=40).version == 40
    assert repo.store("v", doc("next"), ttl_seconds=5).version == 41
    clock.advance(6)
    assert repo.store("v", doc("fresh")).version == 1


def test_expired_rows_read_as_absent_everywhere(repo: SQLStateRepository, clock: Clock) -> None:
    repo.store("ttl:short", doc(1), ttl_seconds=10)
    repo.store("ttl:long", doc(2), ttl_seconds=1000)
    repo.store("ttl:none", doc(3))
    clock.advance(11)
    assert repo.fetch("ttl:short") is None
    assert set(repo.fetch_many(["ttl:short", "ttl:long", "ttl:none"])) == {"ttl:long", "ttl:none"}
    assert sorted(repo.keys("ttl:*")) == ["ttl:long", "ttl:none"]
    stats = repo.stats()
    assert (stats.key_count, stats.extra["expired_rows"]) == (2, 1)
    assert stats.bytes == len(doc(2)) + len(doc(3))
    assert repo.delete("ttl:short") is False
    repo.store("ttl:short", doc(1), ttl_seconds=10)
    clock.advance(11)
    assert repo.store("ttl:short", doc("again"), expected_version=0).version == 1
    repo.store("ttl:gone", doc(1), ttl_seconds=1)
    repo.store("ttl:purged", doc(1), ttl_seconds=1)
    clock.advance(2)
    assert repo.delete_many(["ttl:gone", "ttl:long"]) == 1
    assert repo.purge_expired() == 1
    assert raw_sql(repo, "SELECT count(*) FROM tiered_state_entries")[0][0] == 2


def test_compare_and_set(repo: SQLStateRepository) -> None:
    assert repo.store("cas", doc("a"), expected_version=0).version == 1
    with pytest.raises(ConcurrencyError) as info:
        repo.store("cas", doc("b"), expected_version=0)
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert repo.store("cas", doc("b"), expected_version=1).version == 2
    assert repo.store("cas", doc("c"), expected_version=2, version=9).version == 9
    with pytest.raises(ConcurrencyError) as info:
        repo.store("cas", doc("d"), expected_version=2)
    assert info.value.actual == 9
    with pytest.raises(ConcurrencyError) as info:
        repo.store("absent", doc("d"), expected_version=3)
    assert info.value.actual == 0
    got = repo.fetch("cas")
    assert got is not None and got.value == doc("c")


def test_concurrent_compare_and_set_has_one_winner(repo: SQLStateRepository) -> None:
    repo.store("race", doc(0))
    outcomes: list[object] = []
    barrier = threading.Barrier(6)

    def contender(n: int) -> None:
        barrier.wait()
        try:
            outcomes.append(repo.store("race", doc(n), expected_version=1).version)
        except ConcurrencyError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=contender, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(2) == 1
    losers = [o for o in outcomes if isinstance(o, ConcurrencyError)]
    assert len(losers) == 5 and all(e.actual == 2 for e in losers)


def test_values_must_be_json_text_on_both_dialects(repo: SQLStateRepository) -> None:
    with pytest.raises(InvalidRequestError, match="refused the write"):
        repo.store("bad", "not json")
    with pytest.raises(InvalidRequestError):
        repo.store("bad", 12)  # type: ignore[arg-type]
    # The JSON escape of U+0000 is valid JSON text; jsonb cannot hold it, the tier can.
    text = doc({"name": "a\x00b"})
    assert "\\u0000" in text
    repo.store("nul", text)
    got = repo.fetch("nul")
    assert got is not None and got.value == text


def test_corrupted_value_raises_integrity_error(repo: SQLStateRepository) -> None:
    repo.store("victim", doc({"balance": 10}))
    repo.store("bystander", doc(1))
    raw_sql(
        repo,
        "UPDATE tiered_state_entries SET value = :v WHERE key = 'victim'",
        v=doc({"balance": 1_000_000}),
    )
    with pytest.raises(IntegrityError) as info:
        repo.fetch("victim")
    assert info.value.key == "victim"
    with pytest.raises(IntegrityError):
        repo.fetch_many(["bystander", "victim"])
    with repo.unit_of_work() as work, pytest.raises(IntegrityError):
        work.fetch("victim")
    assert repo.fetch("bystander") is not None


# --------------------------------------------------------------------------- batches


def test_store_many_across_chunks_with_mixed_versions(batch_repo: SQLStateRepository) -> None:
    batch_repo.store("k:03", doc("old"))
    items = [WriteRequest(f"k:{i:02}", doc(i)) for i in range(20)]
    items += [WriteRequest("k:05", doc("explicit"), version=50), WriteRequest("k:07", doc("last"))]
    written = batch_repo.store_many(items)
    assert len(written) == 20
    assert written["k:00"].version == 1 and written["k:03"].version == 2
    assert written["k:05"].version == 50 and written["k:05"].checksum == checksum_of(
        doc("explicit")
    )
    got = batch_repo.fetch_many([f"k:{i:02}" for i in range(20)] + ["k:00", "nope"])
    assert len(got) == 20 and got["k:07"].value == doc("last") and got["k:19"].value == doc(19)
    assert {k: v.metadata.version for k, v in got.items()} == {
        k: m.version for k, m in written.items()
    }
    again = batch_repo.store_many([WriteRequest(f"k:{i:02}", doc("x")) for i in range(20)])
    assert again["k:05"].version == 51 and again["k:19"].version == 2
    assert batch_repo.store_many([]) == {}
    moved = batch_repo.store_many(
        [WriteRequest(f"m:{i:02}", doc(i), version=i + 3) for i in range(9)]
    )
    assert [m.version for m in moved.values()] == list(range(3, 12))
    got = batch_repo.fetch_many(list(moved))
    assert {k: v.metadata.version for k, v in got.items()} == {
        k: m.version for k, m in moved.items()
    }


def test_store_many_is_all_or_nothing(batch_repo: SQLStateRepository) -> None:
    batch_repo.store("keep", doc("before"))
    items = [WriteRequest(f"a:{i:02}", doc(i)) for i in range(15)] + [WriteRequest("keep", doc(2))]
    items.append(WriteRequest("z:bad", "{broken"))  # sorts last: fails in the last chunk
    with pytest.raises(InvalidRequestError):
        batch_repo.store_many(items)
    assert batch_repo.fetch_many([i.key for i in items]).keys() == {"keep"}
    kept = batch_repo.fetch("keep")
    assert kept is not None and kept.value == doc("before") and kept.metadata.version == 1
    # The connection is healthy afterwards and the same batch minus the bad item works.
    assert len(batch_repo.store_many(items[:-1])) == 16


def test_store_many_validates_before_writing(repo: SQLStateRepository) -> None:
    with pytest.raises(InvalidRequestError, match="item 1"):
        repo.store_many([WriteRequest("ok", doc(1)), ("k", doc(2))])  # type: ignore[list-item]
    with pytest.raises(InvalidRequestError, match="ttl_seconds"):
        repo.store_many([WriteRequest("ok", doc(1)), WriteRequest("t", doc(1), ttl_seconds=0)])
    assert repo.fetch("ok") is None


def test_delete_and_delete_many(batch_repo: SQLStateRepository) -> None:
    keys = [f"d:{i:02}" for i in range(20)]
    batch_repo.store_many([WriteRequest(k, doc(k)) for k in keys])
    assert batch_repo.delete("d:00") is True and batch_repo.delete("d:00") is False
    assert batch_repo.delete_many([*keys, "d:01", "missing"]) == 19
    assert list(batch_repo.keys("d:*")) == [] and batch_repo.delete_many([]) == 0


def test_delete_many_within_one_chunk(batch_repo: SQLStateRepository) -> None:
    """The autocommit single-statement path (at most ``batch_size`` distinct keys)."""
    batch_repo.store_many([WriteRequest(k, doc(k)) for k in ("s:1", "s:2", "s:3")])
    assert batch_repo.delete_many(["s:1", "s:2", "s:2", "missing"]) == 2
    assert list(batch_repo.keys("s:*")) == ["s:3"]
    assert batch_repo.fetch("s:1") is None and batch_repo.fetch("s:3") is not None


def test_keys_are_paged_exact_and_case_sensitive(batch_repo: SQLStateRepository) -> None:
    keys = [f"page:{i:02}" for i in range(23)] + ["page_x", "PAGE:01", "pageAx", "p.x", "pXx"]
    batch_repo.store_many([WriteRequest(k, doc(1)) for k in keys])
    assert list(batch_repo.keys("page:*")) == [f"page:{i:02}" for i in range(23)]
    assert list(batch_repo.keys("page_*")) == ["page_x"]
    assert list(batch_repo.keys("PAGE:*")) == ["PAGE:01"]
    assert list(batch_repo.keys("p.x")) == ["p.x"]
    assert sorted(batch_repo.keys("page:?1")) == ["page:01", "page:11", "page:21"]
    assert len(list(batch_repo.keys())) == len(keys)


def test_keys_validates_the_pattern_at_the_call(repo: SQLStateRepository) -> None:
    with pytest.raises(InvalidPatternError):
        repo.keys("a b")


def test_touch_many_records_accesses(repo: SQLStateRepository, clock: Clock) -> None:
    repo.store_many([WriteRequest("t:1", doc(1)), WriteRequest("t:2", doc(2))])
    assert repo.touch_many(["t:1", "missing"], at=clock.now + 100) == 1
    rows = dict(raw_sql(repo, "SELECT key, last_accessed FROM tiered_state_entries"))
    assert rows == {"t:1": clock.now + 100, "t:2": clock.now}


# --------------------------------------------------------------------------- unit of work


def history_table(repo: SQLStateRepository) -> sa.Table:
    table = sa.Table(
        "history",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(255), nullable=False),
    )
    table.create(repo.engine)
    return table


def test_unit_of_work_commits_values_and_own_rows_together(repo: SQLStateRepository) -> None:
    history = history_table(repo)
    repo.store("gone", doc(0))
    with repo.unit_of_work() as work:
        assert work.store("acct:1", doc({"balance": 5})).version == 1
        work.connection.execute(history.insert().values(key="acct:1"))
        assert work.store_many([WriteRequest("acct:2", doc(2)), WriteRequest("acct:3", doc(3))])
        assert work.delete("gone") is True
        seen = work.fetch("acct:1")
        assert seen is not None and seen.value == doc({"balance": 5})
        assert repo.fetch("acct:1") is None  # not visible outside before commit
    assert repo.fetch("acct:1") is not None and repo.fetch("gone") is None
    assert set(repo.fetch_many(["acct:2", "acct:3"])) == {"acct:2", "acct:3"}
    assert raw_sql(repo, "SELECT key FROM history") == [("acct:1",)]


def test_unit_of_work_rolls_back_everything_on_error(repo: SQLStateRepository) -> None:
    history = history_table(repo)
    repo.store("acct:1", doc("before"))
    with pytest.raises(RuntimeError, match="boom"), repo.unit_of_work() as work:
        work.store("acct:1", doc("after"), expected_version=1)
        work.store_many([WriteRequest("acct:2", doc(2))])
        work.connection.execute(history.insert().values(key="acct:1"))
        raise RuntimeError("boom")
    got = repo.fetch("acct:1")
    assert got is not None and got.value == doc("before") and got.metadata.version == 1
    assert repo.fetch("acct:2") is None
    assert raw_sql(repo, "SELECT count(*) FROM history")[0][0] == 0
    # Batches work again on the same pooled connection after the rollback.
    assert repo.store_many([WriteRequest("acct:2", doc(2))])["acct:2"].version == 1
    assert repo.store_many([WriteRequest("acct:2", doc(3))])["acct:2"].version == 2


def test_unit_of_work_survives_a_lost_compare_and_set(repo: SQLStateRepository) -> None:
    repo.store("cas", doc(1))
    with repo.unit_of_work() as work:
        with pytest.raises(ConcurrencyError):
            work.store("cas", doc(2), expected_version=5)
        work.store("other", doc(1))
        work.store_many([WriteRequest("b:1", doc(1))])
        work.store_many([WriteRequest("b:1", doc(2)), WriteRequest("b:2", doc(2))])
    assert repo.fetch("other") is not None
    assert {k: v.metadata.version for k, v in repo.fetch_many(["b:1", "b:2"]).items()} == {
        "b:1": 2,
        "b:2": 1,
    }


def test_concurrent_units_of_work_serialise(repo: SQLStateRepository) -> None:
    repo.store("counter", doc(0))
    errors: list[BaseException] = []

    def add_one() -> None:
        for _ in range(5):
            try:
                while True:
                    with repo.unit_of_work() as work:
                        current = work.fetch("counter")
                        assert current is not None
                        try:
                            work.store(
                                "counter",
                                doc(json.loads(current.value) + 1),
                                expected_version=current.metadata.version,
                            )
                            break
                        except ConcurrencyError:
                            continue
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=add_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    got = repo.fetch("counter")
    assert got is not None and got.value == doc(20) and got.metadata.version == 21


def test_an_open_search_does_not_hold_up_writes(make_repo: Factory) -> None:
    repo = make_repo(connect_timeout=1)
    repo.store("k", doc(1))
    with repo.engine.connect() as search:
        assert search.execute(sa.select(repo.table.c.key)).scalars().all() == ["k"]
        assert repo.store_many([WriteRequest("k", doc(2))])["k"].version == 2
        with repo.unit_of_work() as work:
            work.store("j", doc(1))
        assert repo.store("k", doc(3)).version == 3


# --------------------------------------------------------------------------- documents


def test_document_expression_filters_on_dotted_paths(
    repo: SQLStateRepository, clock: Clock
) -> None:
    repo.store("u:1", doc({"profile": {"tier": "gold", "age": 40}}))
    repo.store("u:2", doc({"profile": {"tier": "silver", "age": 30}}))
    repo.store("u:3", doc({"profile": {"tier": "gold", "age": 20}}), ttl_seconds=1)
    clock.advance(2)
    document = repo.document_expression()
    query = (
        sa.select(repo.table.c.key)
        .where(document["profile"]["tier"].as_string() == "gold")
        .where(repo.live_condition())
    )
    by_path = sa.select(repo.table.c.key).where(
        document[("profile", "age")].as_integer() < 35, repo.live_condition(clock.now)
    )
    with repo.engine.connect() as connection:
        assert connection.execute(query).scalars().all() == ["u:1"]
        assert connection.execute(by_path).scalars().all() == ["u:2"]
        if repo.backend == "postgresql":
            contains = sa.select(repo.table.c.key).where(
                document.contains({"profile": {"tier": "silver"}})
            )
            assert connection.execute(contains).scalars().all() == ["u:2"]


# --------------------------------------------------------------------------- faults


def test_unreachable_database_raises_tier_unavailable() -> None:
    pytest.importorskip("psycopg")
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    with pytest.raises(TierUnavailableError) as info:
        SQLStateRepository(dead, connect_timeout=1)
    assert info.value.tier == "warm" and isinstance(info.value.__cause__, Exception)
    repo = SQLStateRepository(dead, create_tables=False, connect_timeout=1)
    try:
        assert repo.ping() is False
        calls: list[Callable[[], object]] = [
            lambda: repo.fetch("k"),
            lambda: repo.fetch_many(["k"]),
            lambda: repo.store("k", doc(1)),
            lambda: repo.store_many([WriteRequest("k", doc(1))]),
            lambda: repo.delete("k"),
            lambda: repo.delete_many(["k"]),
            lambda: list(repo.keys()),
            lambda: list(repo.scan_keys()),
            lambda: repo.stats(),
        ]
        for call in calls:
            with pytest.raises(TierUnavailableError):
                call()
        with pytest.raises(TierUnavailableError), repo.unit_of_work():
            pass  # pragma: no cover
    finally:
        repo.close()


def test_missing_table_raises_tier_unavailable(repo: SQLStateRepository) -> None:
    raw_sql(repo, "DROP TABLE tiered_state_entries")
    with pytest.raises(TierUnavailableError) as info:
        repo.fetch("k")
    assert "tiered_state_entries" in info.value.message
    with pytest.raises(TierUnavailableError):
        repo.store_many([WriteRequest("k", doc(1))])


def _backend_pid(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def _terminate(postgres_url: str, pid: int) -> None:
    import psycopg

    admin_url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        deadline = time.monotonic() + 5
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "the backend did not exit"
            time.sleep(0.02)


@pytest.mark.postgres
@pytest.mark.parametrize("pool_pre_ping", [False, True])
def test_built_engine_replaces_a_terminated_connection(
    postgres_url: str, postgres_engine: sa.Engine, pool_pre_ping: bool
) -> None:
    repo = SQLStateRepository(postgres_url, pool_pre_ping=pool_pre_ping)
    try:
        repo.store("k", doc(1))
        pid = _backend_pid(repo.engine)
        _terminate(postgres_url, pid)
        assert repo.store("k", doc(2)).version == 2  # a write, checked out after the cut
        got = repo.fetch("k")
        assert got is not None and got.value == doc(2)
        assert _backend_pid(repo.engine) != pid
    finally:
        repo.close()


@pytest.mark.postgres
def test_given_engine_without_pre_ping_recovers_after_a_cut(
    postgres_url: str, postgres_engine: sa.Engine
) -> None:
    engine = sa.create_engine(postgres_url, pool_size=1, max_overflow=0)
    repo = SQLStateRepository(engine)
    try:
        repo.store("k", doc(1))
        _terminate(postgres_url, _backend_pid(engine))
        got = repo.fetch("k")  # a read retries on a fresh connection
        assert got is not None and got.value == doc(1)
        _terminate(postgres_url, _backend_pid(engine))
        with pytest.raises(TierUnavailableError) as info:
            repo.store("k", doc(2))  # a write may have run: it is reported, not retried
        assert not isinstance(info.value.__cause__, TierUnavailableError)
        assert repo.store("k", doc(2)).version == 2
        _terminate(postgres_url, _backend_pid(engine))
        with pytest.raises(TierUnavailableError), repo.unit_of_work() as work:
            work.store("k", doc(3))
        assert repo.store_many([WriteRequest("k", doc(3))])["k"].version == 3
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- Flask-SQLAlchemy


def test_flask_sqlalchemy_engine_and_metadata(tmp_path: Path) -> None:
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'app.db'}"
    db = SQLAlchemy(app)
    with app.app_context():
        repo = SQLStateRepository(db.engine, metadata=db.metadata, create_tables=False)
        assert "tiered_state_entries" in db.metadata.tables
        db.create_all()
        repo.store("k", doc(1))
        assert repo.store_many([WriteRequest("k", doc(2))])["k"].version == 2
        with repo.unit_of_work() as work:
            work.store("j", doc(1))
        with pytest.raises(RuntimeError), repo.unit_of_work() as work:
            work.store("rolled", doc(1))
            raise RuntimeError
        assert sorted(repo.keys()) == ["j", "k"] and repo.delete("j") is True
        repo.close()
        db.engine.dispose()

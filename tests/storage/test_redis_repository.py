"""RedisStateRepository against the real Redis: layout, TTLs, prefixes, batching, faults.

Command counts come from ``INFO commandstats`` of a private redis-server (the
``disposable_redis`` fixture), so they measure what really reached the server.
"""

from __future__ import annotations

import json
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from flask_tiered_state.errors import (
    ConcurrencyError,
    ConfigurationError,
    IntegrityError,
    InvalidRequestError,
    TierUnavailableError,
)
from flask_tiered_state.storage.base import StaleCopy, StateCategory, WriteRequest, checksum_of
from flask_tiered_state.storage.redis import RedisStateRepository
from flask_tiered_state.testing import RepositoryContract

pytestmark = pytest.mark.redis


def doc(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def make_repo(redis_url: str, redis_prefix: str) -> Iterator[Callable[..., RedisStateRepository]]:
    made: list[RedisStateRepository] = []

    def make(**options: Any) -> RedisStateRepository:
        options.setdefault("key_prefix", redis_prefix)
        made.append(RedisStateRepository(options.pop("url", redis_url), **options))
        return made[-1]

    yield make
    for repo in made:
        repo.close()


@pytest.fixture
def repo(make_repo: Callable[..., RedisStateRepository]) -> RedisStateRepository:
    return make_repo()


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


# --------------------------------------------------------------------------- layout


def test_value_and_metadata_live_in_one_string(
    repo: RedisStateRepository, raw: redis.Redis, redis_prefix: str
) -> None:
    value = doc({"name": "zoë", "n": [1, 2]})
    written = repo.store("user:1", value, ttl_seconds=30)
    assert list(raw.scan_iter(match=redis_prefix + "*")) == [f"{redis_prefix}user:1".encode()]
    assert raw.type(redis_prefix + "user:1") == b"string"
    stored = raw.get(redis_prefix + "user:1")
    assert isinstance(stored, bytes)
    header, body = stored.split(b"\n", 1)
    assert body.decode() == value
    assert header.split(b" ") == [
        b"TS1",
        checksum_of(value).encode(),
        b"hot",
        repr(written.stored_at).encode(),
        b"30",
        b"1",
    ]
    fetched = repo.fetch("user:1")
    assert fetched is not None and fetched.metadata == written
    assert written.ttl_seconds == 30 and written.size == len(value.encode())


def test_client_from_url_has_timeouts_and_is_closed(redis_url: str) -> None:
    repo = RedisStateRepository(redis_url, socket_timeout=1.5, connect_timeout=0.5)
    kwargs = repo.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 1.5
    assert kwargs["socket_connect_timeout"] == 0.5
    assert repo.ping() is True
    repo.close()


def test_client_passed_in_is_used_and_left_open(raw: redis.Redis, redis_prefix: str) -> None:
    repo = RedisStateRepository(raw, key_prefix=redis_prefix)
    repo.store("a", doc(1), version=3)
    repo.close()
    assert raw.ping() is True
    assert raw.exists(redis_prefix + "a") == 1


def test_client_with_decode_responses_round_trips(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    repo = RedisStateRepository(client, key_prefix=redis_prefix)
    try:
        repo.store("u", doc({"ü": 1}))
        repo.store_many([WriteRequest("v", doc(2)), WriteRequest("w", doc(3), version=9)])
        assert repo.fetch("u") is not None
        assert {k: v.metadata.version for k, v in repo.fetch_many(["u", "v", "w"]).items()} == {
            "u": 1,
            "v": 1,
            "w": 9,
        }
        assert sorted(repo.keys()) == ["u", "v", "w"]
    finally:
        client.close()


@pytest.mark.redis
class TestTheContractOnAnApplicationsClient(RepositoryContract):
    """An application's own client, decoding responses or not, or its connection pool."""

    @pytest.fixture(params=["decoding client", "connection pool"])
    def repository(
        self, request: pytest.FixtureRequest, redis_url: str, redis_prefix: str
    ) -> Iterator[RedisStateRepository]:
        if request.param == "decoding client":
            given: Any = redis.Redis.from_url(redis_url, decode_responses=True)
        else:
            given = redis.ConnectionPool.from_url(redis_url)
        repo = RedisStateRepository(given, key_prefix=redis_prefix)
        yield repo
        repo.close()
        assert repo.client.ping()  # the application's: left open
        if isinstance(given, redis.Redis):
            given.close()
        else:
            given.disconnect()


@pytest.mark.parametrize(
    ("target", "options"),
    [
        ("http://127.0.0.1:6379", {}),
        (42, {}),
        ("redis://127.0.0.1:6379/0", {"default_ttl_seconds": 0}),
        ("redis://127.0.0.1:6379/0", {"key_prefix": None}),
    ],
)
def test_bad_configuration_is_refused(target: Any, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RedisStateRepository(target, **options)


def test_bad_write_arguments_are_refused(repo: RedisStateRepository) -> None:
    with pytest.raises(InvalidRequestError, match="ttl_seconds"):
        repo.store("a", doc(1), ttl_seconds=0)
    with pytest.raises(InvalidRequestError, match="version"):
        repo.store("a", doc(1), version=0)
    with pytest.raises(InvalidRequestError, match="expected_version"):
        repo.store("a", doc(1), expected_version=-1)
    with pytest.raises(InvalidRequestError, match="JSON text"):
        repo.store("a", {"not": "text"})  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="ttl_seconds"):
        repo.store_many([WriteRequest("ok", doc(1)), WriteRequest("b", doc(2), ttl_seconds=-5)])
    assert repo.fetch("ok") is None  # nothing of a refused batch was written


# --------------------------------------------------------------------------- TTL


def test_ttl_really_expires(repo: RedisStateRepository) -> None:
    repo.store("short", doc("x"), ttl_seconds=1)
    repo.store("kept", doc("y"))
    assert repo.fetch("short") is not None
    deadline = time.monotonic() + 3
    while repo.fetch("short") is not None:
        assert time.monotonic() < deadline, "a 1 s TTL did not expire within 3 s"
        time.sleep(0.1)
    assert repo.fetch("kept") is not None
    assert list(repo.keys()) == ["kept"]


def test_default_and_per_key_ttl(
    make_repo: Callable[..., RedisStateRepository], raw: redis.Redis, redis_prefix: str
) -> None:
    repo = make_repo(default_ttl_seconds=100)
    assert repo.store("default", doc(1)).ttl_seconds == 100
    assert repo.store("own", doc(1), ttl_seconds=7).ttl_seconds == 7
    repo.store_many([WriteRequest("b-default", doc(1)), WriteRequest("b-own", doc(1), None, 9)])
    assert 90 < raw.ttl(redis_prefix + "default") <= 100
    assert 0 < raw.ttl(redis_prefix + "own") <= 7
    assert 90 < raw.ttl(redis_prefix + "b-default") <= 100
    assert 0 < raw.ttl(redis_prefix + "b-own") <= 9
    forever = make_repo()
    forever.store("forever", doc(1))
    assert raw.ttl(redis_prefix + "forever") == -1


def test_store_many_groups_by_ttl_into_few_commands(disposable_redis: Any) -> None:
    repo = RedisStateRepository(disposable_redis.url, key_prefix="g:")
    admin = redis.Redis.from_url(disposable_redis.url)
    try:
        items = [WriteRequest(f"none:{i}", doc(i), version=1) for i in range(1500)]
        items += [WriteRequest(f"t60:{i}", doc(i), version=2, ttl_seconds=60) for i in range(1200)]
        items += [WriteRequest(f"t5:{i}", doc(i), version=3, ttl_seconds=5) for i in range(10)]
        items += [WriteRequest(f"auto:{i}", doc(i), ttl_seconds=60) for i in range(20)]
        admin.config_resetstat()
        written = repo.store_many(items)
        calls = command_calls(admin)
        # one command per (TTL, versioning) group and chunk of 1,000: 2 MSET, 2 + 1 + 1 EVALSHA
        assert calls.get("mset") == 2
        assert calls.get("evalsha", 0) + calls.get("eval", 0) == 4
        assert calls.get("set") == 1230  # inside the scripts: the TTL groups and "auto"
        assert len(written) == 2730
        assert written["auto:3"].version == 1 and written["t5:0"].version == 3
        assert admin.ttl("g:none:0") == -1
        assert 0 < admin.ttl("g:t60:1199") <= 60
        assert 0 < admin.ttl("g:t5:9") <= 5
        got = repo.fetch_many([i.key for i in items])
        assert {k: v.value for k, v in got.items()} == {i.key: i.value for i in items}
    finally:
        repo.close()
        admin.close()


# --------------------------------------------------------------------------- versions


def test_explicit_version_is_a_plain_set(disposable_redis: Any) -> None:
    repo = RedisStateRepository(disposable_redis.url)
    admin = redis.Redis.from_url(disposable_redis.url)
    try:
        repo.store("warm-up", doc(0))  # loads the script once
        admin.config_resetstat()
        repo.store("k", doc(1), version=5)
        repo.store("k", doc(2), version=6, ttl_seconds=30)
        calls = command_calls(admin)
        assert calls.get("set") == 2 and "evalsha" not in calls and "eval" not in calls
        admin.config_resetstat()
        assert repo.store("k", doc(3)).version == 7
        calls = command_calls(admin)
        calls.pop("config|resetstat", None)
        assert calls == {"evalsha": 1, "get": 1, "set": 1}  # GET and SET inside the script
    finally:
        repo.close()
        admin.close()


def test_store_many_keeps_the_order_of_writes_to_one_key(
    repo: RedisStateRepository, raw: redis.Redis, redis_prefix: str
) -> None:
    repo.store("dup", doc(0))
    written = repo.store_many(
        [
            WriteRequest("dup", doc(1)),
            WriteRequest("other", doc("o"), version=4),
            WriteRequest("dup", doc(2), ttl_seconds=50),
            WriteRequest("dup", doc(3), version=10),
            WriteRequest("dup", doc(4), ttl_seconds=40),
        ]
    )
    assert written["dup"].version == 11
    fetched = repo.fetch("dup")
    assert fetched is not None and fetched.value == doc(4) and fetched.metadata.version == 11
    assert 30 < raw.ttl(redis_prefix + "dup") <= 40


def test_concurrent_writers_never_lose_a_version(
    make_repo: Callable[..., RedisStateRepository],
) -> None:
    repos = [make_repo() for _ in range(4)]

    def bump(repo: RedisStateRepository) -> None:
        for i in range(25):
            repo.store("counter", doc(i))

    threads = [threading.Thread(target=bump, args=(r,)) for r in repos]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fetched = repos[0].fetch("counter")
    assert fetched is not None and fetched.metadata.version == 100


def test_compare_and_set_has_exactly_one_winner(
    make_repo: Callable[..., RedisStateRepository],
) -> None:
    repos = [make_repo() for _ in range(6)]
    repos[0].store("cas", doc("start"))
    winners: list[int] = []
    conflicts: list[ConcurrencyError] = []
    barrier = threading.Barrier(len(repos))

    def attempt(index: int) -> None:
        barrier.wait()
        try:
            repos[index].store("cas", doc(index), expected_version=1)
            winners.append(index)
        except ConcurrencyError as exc:
            conflicts.append(exc)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(repos))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1 and len(conflicts) == len(repos) - 1
    assert all(c.actual == 2 and c.expected == 1 for c in conflicts)
    fetched = repos[0].fetch("cas")
    assert fetched is not None and fetched.value == doc(winners[0])


def test_compare_and_set_with_explicit_version(repo: RedisStateRepository) -> None:
    repo.store("m", doc(1), version=41)
    assert repo.store("m", doc(2), version=50, expected_version=41).version == 50
    with pytest.raises(ConcurrencyError):
        repo.store("m", doc(3), version=60, expected_version=41)
    assert repo.store("fresh", doc(1), version=8, expected_version=0).version == 8


# --------------------------------------------------------------------------- prefixes and patterns


def test_prefixes_isolate_repositories(
    make_repo: Callable[..., RedisStateRepository], redis_prefix: str
) -> None:
    a = make_repo(key_prefix=redis_prefix + "a:")
    b = make_repo(key_prefix=redis_prefix + "b:")
    a.store("k", doc("from a"))
    b.store("k", doc("from b"))
    b.store("only-b", doc(1))
    fetched = a.fetch("k")
    assert fetched is not None and fetched.value == doc("from a")
    assert sorted(a.keys()) == ["k"] and sorted(b.keys()) == ["k", "only-b"]
    assert a.stats().key_count == 1 and b.stats().key_count == 2
    assert a.delete_many(["k", "only-b"]) == 1
    assert sorted(b.keys()) == ["k", "only-b"]


def test_prefix_glob_characters_are_literal(
    make_repo: Callable[..., RedisStateRepository], redis_prefix: str
) -> None:
    # Unescaped, MATCH "x*:" would also scan "xy:..." and "[ab]:" would scan "a:...".
    star = make_repo(key_prefix=redis_prefix + "x*:")
    other = make_repo(key_prefix=redis_prefix + "xy:")
    bracket = make_repo(key_prefix=redis_prefix + "[ab]:")
    plain = make_repo(key_prefix=redis_prefix + "a:")
    star.store("s", doc(1))
    other.store("o", doc(1))
    bracket.store("b", doc(1))
    plain.store("p", doc(1))
    assert list(star.keys()) == ["s"] and star.stats().key_count == 1
    assert list(bracket.keys("*")) == ["b"] and bracket.stats().key_count == 1
    assert list(other.keys()) == ["o"] and list(plain.keys()) == ["p"]


def test_pattern_characters_are_literal(repo: RedisStateRepository) -> None:
    keys = ["a.b", "axb", "a_b", "a+b", "a=b", "a@b", "a-b", "a:b", "a/b", "ab", "a.bc"]
    repo.store_many([WriteRequest(k, doc(k)) for k in keys])
    for key in keys:
        assert list(repo.keys(key)) == [key]
    assert sorted(repo.keys("a?b")) == sorted(k for k in keys if len(k) == 3)
    assert sorted(repo.keys("a.*")) == ["a.b", "a.bc"]


def test_keys_uses_scan_never_keys(disposable_redis: Any) -> None:
    repo = RedisStateRepository(disposable_redis.url, key_prefix="s:")
    admin = redis.Redis.from_url(disposable_redis.url)
    try:
        repo.store_many([WriteRequest(f"k{i}", doc(i), version=1) for i in range(2500)])
        admin.config_resetstat()
        assert len(list(repo.keys("k1*"))) == 1111
        calls = command_calls(admin)
        assert calls.get("scan", 0) >= 2 and "keys" not in calls
    finally:
        repo.close()
        admin.close()


def _peak_while_counting(keys: Callable[[], Iterator[str]]) -> tuple[int, int]:
    """(keys counted, tracemalloc's peak in bytes while listing and counting them)."""
    tracemalloc.start()
    try:
        count = sum(1 for _ in keys())
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_scan_keys_memory_does_not_grow_with_the_key_count(
    repo: RedisStateRepository, raw: redis.Redis
) -> None:
    # 50,000 keys: keys() holds them all (5.6 MB measured), scan_keys one SCAN reply
    # (0.17 MB); the bound sits between them with margin on both sides.
    pipe = raw.pipeline(transaction=False)
    for i in range(50_000):
        pipe.set(f"{repo.key_prefix}mem:{i:06d}", b"1")
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    listed, listed_peak = _peak_while_counting(lambda: repo.keys("*"))
    streamed, streamed_peak = _peak_while_counting(lambda: repo.scan_keys("*"))
    assert listed == 50_000 and streamed >= 50_000  # SCAN may repeat a key
    assert listed_peak > 3_000_000, "keys() is no longer a measure to compare with"
    assert streamed_peak < 1_500_000, f"scan_keys peaked at {streamed_peak} bytes"


def test_scan_keys_raises_tier_unavailable_when_the_server_stops_midway(
    disposable_redis: Any,
) -> None:
    repo = RedisStateRepository(disposable_redis.url, connect_timeout=0.5, socket_timeout=0.5)
    try:
        repo.store_many([WriteRequest(f"k{i}", doc(i), version=1) for i in range(2500)])
        keys = repo.scan_keys("k*")
        first = next(keys)  # one SCAN reply read; the rest is asked for later
        disposable_redis.stop()
        with pytest.raises(TierUnavailableError) as info:
            list(keys)
        assert first.startswith("k") and info.value.tier == "hot"
        assert isinstance(info.value.__cause__, redis.RedisError)
    finally:
        repo.close()


def test_stats_reports_prefix_count_and_server_memory(repo: RedisStateRepository) -> None:
    repo.store_many([WriteRequest(f"s{i}", doc(i)) for i in range(3)])
    stats = repo.stats().to_dict()
    assert stats["key_count"] == 3 and stats["key_count_scope"] == "prefix"
    assert stats["backend"] == "redis" and stats["category"] == "hot"
    assert isinstance(stats["server_used_memory"], int) and stats["server_used_memory"] > 0


def test_category_is_recorded(make_repo: Callable[..., RedisStateRepository]) -> None:
    repo = make_repo(category=StateCategory.WARM)
    repo.store("c", doc(1))
    fetched = repo.fetch("c")
    assert fetched is not None and fetched.metadata.category is StateCategory.WARM


# --------------------------------------------------------------------------- integrity


def test_corrupted_value_raises_integrity_error(
    repo: RedisStateRepository, raw: redis.Redis, redis_prefix: str
) -> None:
    repo.store("ok", doc("fine"))
    repo.store("bad", doc({"balance": 100}))
    name = redis_prefix + "bad"
    stored = raw.get(name)
    assert isinstance(stored, bytes)
    # same length, different bytes, in the value (after the header line, whose times or
    # checksum may hold "100" too)
    raw.setrange(name, stored.index(b"100", stored.index(b"\n")), b"900")
    with pytest.raises(IntegrityError) as info:
        repo.fetch("bad")
    assert info.value.key == "bad" and "corrupt" in info.value.message
    with pytest.raises(IntegrityError):
        repo.fetch_many(["ok", "bad"])
    ok = repo.fetch("ok")
    assert ok is not None and ok.value == doc("fine")


@pytest.mark.parametrize(
    ("garbage", "version_readable"),
    [
        (b"", False),
        (b"just text", False),
        (b"TS1 x y z\n{}", False),
        (b"\xff\xfe\n\x00", False),
        (b"TS1 abc hot 1.0 - 1\n{}", True),  # checksum wrong, version header intact
    ],
)
def test_foreign_values_raise_integrity_error(
    repo: RedisStateRepository,
    raw: redis.Redis,
    redis_prefix: str,
    garbage: bytes,
    version_readable: bool,
) -> None:
    raw.set(redis_prefix + "foreign", garbage)
    with pytest.raises(IntegrityError):
        repo.fetch("foreign")
    if version_readable:
        assert repo.store("foreign", doc(0), expected_version=1).version == 2
    else:  # compare-and-set cannot compare an unknown version
        with pytest.raises(IntegrityError):
            repo.store("foreign", doc(0), expected_version=1)
        assert repo.store("foreign", doc(0)).version == 1  # a plain write repairs it
    fetched = repo.fetch("foreign")
    assert fetched is not None and fetched.value == doc(0)


def test_damaged_header_fields_raise_integrity_error(
    repo: RedisStateRepository, raw: redis.Redis, redis_prefix: str
) -> None:
    value = doc(1)
    raw.set(
        redis_prefix + "h",
        b"TS1 %s lukewarm 1.0 - 1\n%s" % (checksum_of(value).encode(), value.encode()),
    )
    with pytest.raises(IntegrityError):
        repo.fetch("h")


# --------------------------------------------------------------------------- faults


def test_stopped_server_raises_tier_unavailable(disposable_redis: Any) -> None:
    repo = RedisStateRepository(disposable_redis.url, connect_timeout=0.5, socket_timeout=0.5)
    try:
        repo.store("k", doc(1))
        disposable_redis.stop()
        port = str(disposable_redis.port)
        operations: list[Callable[[], object]] = [
            lambda: repo.fetch("k"),
            lambda: repo.fetch_many(["k", "j"]),
            lambda: repo.store("k", doc(2)),
            lambda: repo.store("k", doc(2), version=9),
            lambda: repo.store_many([WriteRequest("k", doc(3))]),
            lambda: repo.delete("k"),
            lambda: repo.delete_many(["k"]),
            lambda: list(repo.keys()),
            lambda: list(repo.scan_keys()),
            lambda: repo.stats(),
        ]
        for operation in operations:
            started = time.monotonic()
            with pytest.raises(TierUnavailableError) as info:
                operation()
            assert time.monotonic() - started < 2, "a dead Redis must fail fast"
            assert info.value.tier == "hot"
            assert port in info.value.message and "127.0.0.1" in info.value.message
            assert isinstance(info.value.__cause__, redis.RedisError)
        assert repo.ping() is False
        disposable_redis.start()
        # the pooled connection broke with the server; one retry replaces it
        assert repo.store("k", doc(4), version=1).version == 1
        assert repo.ping() is True
    finally:
        repo.close()


def test_delete_stale_keeps_copies_the_fence_calls_current(
    repo: RedisStateRepository, raw: redis.Redis
) -> None:
    repo.store("old", '"old"', version=3)
    repo.store("new", '"new"', version=5)
    raw.set(repo.key_prefix + "garbled", b"not a stored value")
    fence = StaleCopy(5)
    stale = {"old": fence, "new": fence, "garbled": fence, "absent": fence}
    assert repo.delete_stale(stale) == 2  # a damaged header counts as stale
    assert repo.fetch("old") is None and raw.get(repo.key_prefix + "garbled") is None
    assert repo.fetch("new").value == '"new"'  # type: ignore[union-attr]

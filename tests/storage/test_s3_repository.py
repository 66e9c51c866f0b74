"""S3StateRepository against moto's standalone server, reached by boto3 over HTTP.

Faults a server can't show on demand (one key failing inside a batch, a writer racing
between our HEAD and PUT) are injected with botocore event hooks on a real client.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from flask_tiered_state.errors import (
    ConcurrencyError,
    ConfigurationError,
    IntegrityError,
    InvalidRequestError,
    TierUnavailableError,
)
from flask_tiered_state.storage.base import StateCategory, WriteRequest, checksum_of
from flask_tiered_state.storage.s3 import S3StateRepository
from flask_tiered_state.storage.s3 import repository as s3_repository_module
from flask_tiered_state.storage.s3.versions import VersionMemory
from tests.conftest import free_port, s3_client, unique_name

pytestmark = pytest.mark.s3


def doc(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@pytest.fixture
def client(s3_endpoint_url: str) -> Any:
    return s3_client(s3_endpoint_url)


@pytest.fixture
def make_repo(s3_bucket: str, client: Any) -> Iterator[Callable[..., S3StateRepository]]:
    """Repositories on the test's bucket that share ``client`` (so tests can hook it)."""
    made: list[S3StateRepository] = []

    def make(**options: Any) -> S3StateRepository:
        options.setdefault("prefix", "app/")
        options.setdefault("client", client)
        made.append(S3StateRepository(s3_bucket, **options))
        return made[-1]

    yield make
    for repo in made:
        repo.close()


@pytest.fixture
def repo(make_repo: Callable[..., S3StateRepository]) -> S3StateRepository:
    return make_repo()


def count_calls(client: Any, operation: str) -> list[dict[str, Any]]:
    """Record the parameters of every ``operation`` call the client makes."""
    calls: list[dict[str, Any]] = []
    client.meta.events.register(
        f"before-parameter-build.s3.{operation}", lambda params, **_: calls.append(dict(params))
    )
    return calls


# --------------------------------------------------------------------------- round trips


def test_round_trip_records_metadata_on_the_object(
    repo: S3StateRepository, client: Any, s3_bucket: str
) -> None:
    value = doc({"name": "ada", "balance": 10})
    written = repo.store("user:1", value, ttl_seconds=60)
    fetched = repo.fetch("user:1")

    assert fetched is not None and fetched.value == value
    assert fetched.metadata == written
    assert written.checksum == checksum_of(value) and written.version == 1
    assert written.category is StateCategory.COLD and written.ttl_seconds == 60
    head = client.head_object(Bucket=s3_bucket, Key="app/user:1")
    assert head["ContentType"] == "application/json"
    assert head["Metadata"] == {
        "checksum-sha256": checksum_of(value),
        "version": "1",
        "category": "cold",
        "stored-at": repr(written.stored_at),
        "ttl-seconds": "60",
    }
    assert repo.store("user:1", doc(2)).version == 2  # If-Match the ETag it wrote, no HEAD
    assert repo.fetch("absent") is None


def test_explicit_versions_skip_the_head(
    make_repo: Callable[..., S3StateRepository], client: Any
) -> None:
    repo = make_repo(remembered_versions=0)
    heads = count_calls(client, "HeadObject")
    assert repo.store("moved", doc(1), version=9).version == 9
    assert heads == []
    assert repo.store("moved", doc(2)).version == 10  # nothing remembered: a HEAD
    assert len(heads) == 1


@pytest.mark.parametrize("storage_class", ["STANDARD_IA", "ONEZONE_IA", "STANDARD"])
def test_storage_class_is_recorded(
    make_repo: Callable[..., S3StateRepository], client: Any, s3_bucket: str, storage_class: str
) -> None:
    repo = make_repo(storage_class=storage_class)
    repo.store("archived", doc(1))
    head = client.head_object(Bucket=s3_bucket, Key="app/archived")
    # S3 leaves StorageClass out of the answer for STANDARD objects
    assert head.get("StorageClass", "STANDARD") == storage_class


def test_default_storage_class_is_standard_ia(s3_bucket: str, s3_endpoint_url: str) -> None:
    repo = S3StateRepository(s3_bucket, endpoint_url=s3_endpoint_url, region_name="us-east-1")
    try:
        repo.store("k", doc(1))
    finally:
        repo.close()
    head = s3_client(s3_endpoint_url).head_object(Bucket=s3_bucket, Key="k")
    assert head["StorageClass"] == "STANDARD_IA"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"storage_class": "GLACIER"}, "GLACIER"),
        ({"storage_class": "standard_ia"}, "standard_ia"),
        ({"max_workers": 0}, "max_workers"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"prefix": 5}, "prefix"),
        ({"remembered_versions": -1}, "remembered_versions"),
        ({"remembered_versions": 1.5}, "remembered_versions"),
    ],
)
def test_bad_options_raise_configuration_error(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        S3StateRepository("some-bucket", endpoint_url="http://127.0.0.1:9", **options)


def test_bad_write_arguments_are_refused_before_any_request(
    repo: S3StateRepository, client: Any
) -> None:
    puts = count_calls(client, "PutObject")
    with pytest.raises(InvalidRequestError, match="str"):
        repo.store("k", {"not": "text"})  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="ttl_seconds"):
        repo.store_many([WriteRequest("a", "1"), WriteRequest("b", "1", ttl_seconds=0)])
    with pytest.raises(InvalidRequestError, match="expected_version"):
        repo.store("k", "1", expected_version=-1)
    assert puts == []


# --------------------------------------------------------------------------- integrity


def test_overwritten_object_raises_integrity_error(
    repo: S3StateRepository, client: Any, s3_bucket: str
) -> None:
    repo.store("acct:1", doc({"balance": 10}))
    head = client.head_object(Bucket=s3_bucket, Key="app/acct:1")
    client.put_object(
        Bucket=s3_bucket, Key="app/acct:1", Body=b'{"balance":1000000}', Metadata=head["Metadata"]
    )
    with pytest.raises(IntegrityError) as info:
        repo.fetch("acct:1")
    assert info.value.key == "acct:1" and "1000000" not in info.value.message
    with pytest.raises(IntegrityError):
        repo.fetch_many(["acct:1", "acct:2"])


def test_object_without_checksum_metadata_is_not_returned(
    repo: S3StateRepository, client: Any, s3_bucket: str
) -> None:
    client.put_object(Bucket=s3_bucket, Key="app/foreign", Body=b"{}")
    with pytest.raises(IntegrityError):
        repo.fetch("foreign")


# --------------------------------------------------------------------------- compare-and-set


def test_if_match_catches_a_writer_between_head_and_put(
    repo: S3StateRepository, client: Any, s3_bucket: str, s3_endpoint_url: str
) -> None:
    repo.store("cas", doc("a"))
    other = s3_client(s3_endpoint_url)

    def racing_writer(params: dict[str, Any], **_: Any) -> None:
        if "IfMatch" in params:
            other.put_object(
                Bucket=s3_bucket, Key="app/cas", Body=b'"z"', Metadata={"version": "7"}
            )

    client.meta.events.register("before-parameter-build.s3.PutObject", racing_writer)
    with pytest.raises(ConcurrencyError) as info:
        repo.store("cas", doc("b"), expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 7)


def test_if_none_match_catches_a_concurrent_create(
    repo: S3StateRepository, client: Any, s3_bucket: str, s3_endpoint_url: str
) -> None:
    other = s3_client(s3_endpoint_url)

    def racing_creator(params: dict[str, Any], **_: Any) -> None:
        if params.get("IfNoneMatch") == "*":
            other.put_object(Bucket=s3_bucket, Key="app/new", Body=b"1", Metadata={"version": "1"})

    client.meta.events.register("before-parameter-build.s3.PutObject", racing_creator)
    with pytest.raises(ConcurrencyError) as info:
        repo.store("new", doc("mine"), expected_version=0)
    assert info.value.actual == 1
    assert client.get_object(Bucket=s3_bucket, Key="app/new")["Body"].read() == b"1"


# --------------------------------------------------------------------------- remembered versions


@pytest.fixture
def other(s3_endpoint_url: str) -> Any:
    """A second client: another writer, and a reader the counters on ``client`` miss."""
    return s3_client(s3_endpoint_url)


def versions_on_s3(other: Any, bucket: str, keys: list[str]) -> dict[str, int]:
    return {
        k: int(other.head_object(Bucket=bucket, Key=f"app/{k}")["Metadata"]["version"])
        for k in keys
    }


def test_rewriting_a_remembered_key_is_one_if_match_put(
    repo: S3StateRepository, client: Any, other: Any, s3_bucket: str
) -> None:
    assert repo.store("r", doc(0)).version == 1  # unknown: a HEAD found nothing
    heads, puts = count_calls(client, "HeadObject"), count_calls(client, "PutObject")
    for expected in (2, 3, 4):
        assert repo.store("r", doc(expected)).version == expected
    assert heads == []
    assert len(puts) == 3 and all("IfMatch" in p for p in puts)
    assert [p["Metadata"]["version"] for p in puts] == ["2", "3", "4"]
    assert versions_on_s3(other, s3_bucket, ["r"]) == {"r": 4}
    assert repo.fetch("r").value == doc(4)  # type: ignore[union-attr]


def test_a_rewrite_after_another_writer_changed_the_object_reads_its_version(
    repo: S3StateRepository, client: Any, other: Any, s3_bucket: str
) -> None:
    repo.store("r", doc("mine"))
    other.put_object(Bucket=s3_bucket, Key="app/r", Body=b'"theirs"', Metadata={"version": "7"})
    heads, puts = count_calls(client, "HeadObject"), count_calls(client, "PutObject")
    assert repo.store("r", doc("again")).version == 8
    assert versions_on_s3(other, s3_bucket, ["r"]) == {"r": 8}
    assert repo.fetch("r").value == doc("again")  # type: ignore[union-attr]
    # the If-Match PUT was refused (412), then a HEAD read version 7
    assert ["IfMatch" in p for p in puts] == [True, False] and len(heads) == 1
    heads.clear()
    assert repo.store("r", doc("more")).version == 9  # remembered again
    assert heads == []


def test_a_rewrite_after_another_writer_deleted_the_object_writes_version_1(
    repo: S3StateRepository, client: Any, other: Any, s3_bucket: str
) -> None:
    repo.store("r", doc(1))
    repo.store("r", doc(2))
    other.delete_object(Bucket=s3_bucket, Key="app/r")
    heads, puts = count_calls(client, "HeadObject"), count_calls(client, "PutObject")
    assert repo.store("r", doc(3)).version == 1
    assert versions_on_s3(other, s3_bucket, ["r"]) == {"r": 1}
    # the If-Match PUT found no object (404): written as new, If-None-Match, no HEAD
    assert [("IfMatch" in p, p.get("IfNoneMatch")) for p in puts] == [(True, None), (False, "*")]
    assert heads == []


def test_store_many_rewrites_remembered_keys_without_heads_or_listings(
    repo: S3StateRepository, client: Any, other: Any, s3_bucket: str
) -> None:
    keys = [f"m:{i:02}" for i in range(50)]
    assert {
        m.version for m in repo.store_many([WriteRequest(k, doc(0)) for k in keys]).values()
    } == {1}
    heads, lists = count_calls(client, "HeadObject"), count_calls(client, "ListObjectsV2")
    puts = count_calls(client, "PutObject")
    for round_ in (2, 3):
        written = repo.store_many([WriteRequest(k, doc(round_)) for k in keys])
        assert {k: m.version for k, m in written.items()} == dict.fromkeys(keys, round_)
    assert heads == [] and lists == []
    assert len(puts) == 100 and all("IfMatch" in p for p in puts)
    assert versions_on_s3(other, s3_bucket, keys) == dict.fromkeys(keys, 3)


def test_reads_and_explicit_versions_are_remembered(
    make_repo: Callable[..., S3StateRepository], client: Any, s3_bucket: str
) -> None:
    make_repo().store_many([WriteRequest(k, doc(k), version=4) for k in ("a", "b", "c")])
    repo = make_repo()
    repo.fetch("a")
    repo.fetch_many(["b"])
    repo.store("c", doc(1), version=9)
    repo.store("d", doc(1), expected_version=0)
    heads = count_calls(client, "HeadObject")
    assert repo.store("a", doc(2)).version == 5
    assert repo.store("b", doc(2)).version == 5
    assert repo.store("c", doc(2)).version == 10
    assert repo.store("d", doc(2)).version == 2
    assert repo.store("d", doc(3), expected_version=2).version == 3  # a CAS still HEADs
    assert repo.store("d", doc(4)).version == 4
    assert [h["Key"] for h in heads] == ["app/d"]


@pytest.mark.parametrize("how", ["delete", "delete_many"])
def test_deletes_forget_the_keys(
    repo: S3StateRepository, client: Any, other: Any, s3_bucket: str, how: str
) -> None:
    repo.store("r", doc("same"))
    getattr(repo, how)("r" if how == "delete" else ["r", "never"])
    # The very same bytes written again by another writer: same ETag, other version.
    # A remembered (1, etag) would match it and write version 2.
    other.put_object(
        Bucket=s3_bucket, Key="app/r", Body=doc("same").encode(), Metadata={"version": "5"}
    )
    assert repo.store("r", doc("next")).version == 6


def test_a_put_whose_answer_is_lost_forgets_the_key(
    repo: S3StateRepository, client: Any, other: Any, s3_bucket: str, s3_endpoint_url: str
) -> None:
    repo.store("r", doc("same"))

    def lose_the_answer(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url=s3_endpoint_url)

    # The PUT of the same bytes as version 2 is applied, but its answer never arrives;
    # the ETag is unchanged, so a remembered version 1 would write version 2 again.
    client.meta.events.register("after-call.s3.PutObject", lose_the_answer)
    with pytest.raises(TierUnavailableError):
        repo.store("r", doc("same"))
    client.meta.events.unregister("after-call.s3.PutObject", lose_the_answer)
    assert versions_on_s3(other, s3_bucket, ["r"]) == {"r": 2}
    assert repo.store("r", doc("next")).version == 3


def test_the_memory_keeps_the_most_recently_used_keys(
    make_repo: Callable[..., S3StateRepository], client: Any
) -> None:
    repo = make_repo(remembered_versions=3)
    for key in ("a", "b", "c", "d"):
        repo.store(key, doc(key), version=1)
    repo.fetch("b")  # used: "c" is now the least recently used
    repo.store("e", doc("e"), version=1)
    assert repo._versions.known("abcde") == {"b", "d", "e"}
    heads = count_calls(client, "HeadObject")
    for key in ("b", "d", "e", "a", "c"):
        assert repo.store(key, doc(2)).version == 2
    assert [h["Key"] for h in heads] == ["app/a", "app/c"]
    assert len(repo._versions) == 3


def test_without_a_memory_every_unversioned_rewrite_heads(
    make_repo: Callable[..., S3StateRepository], client: Any
) -> None:
    repo = make_repo(remembered_versions=0)
    repo.store("r", doc(1))
    heads, puts = count_calls(client, "HeadObject"), count_calls(client, "PutObject")
    assert [repo.store("r", doc(i)).version for i in (2, 3)] == [2, 3]
    assert len(heads) == 2 and not any("IfMatch" in p for p in puts)
    assert len(repo._versions) == 0


def test_the_memory_stays_bounded_under_concurrent_use() -> None:
    memory = VersionMemory(100)

    def work(start: int) -> None:
        for i in range(start, start + 2000):
            memory.remember(f"k{i % 300}", i, f'"{i}"')
            memory.get(f"k{(i * 7) % 300}")
            if i % 5 == 0:
                memory.forget(f"k{(i * 3) % 300}")

    threads = [threading.Thread(target=work, args=(n * 2000,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(memory) <= 100
    assert all(memory.get(k) is not None for k in memory.known(f"k{i}" for i in range(300)))


# --------------------------------------------------------------------------- batches


def test_store_many_and_fetch_many_run_concurrently_on_the_bounded_pool(
    make_repo: Callable[..., S3StateRepository], client: Any
) -> None:
    repo = make_repo(max_workers=4)
    lock = threading.Lock()
    seen: dict[str, Any] = {"now": 0, "peak": 0, "threads": set()}

    def started(**_: Any) -> None:
        with lock:
            seen["now"] += 1
            seen["peak"] = max(seen["peak"], seen["now"])
            seen["threads"].add(threading.current_thread().name)

    def finished(**_: Any) -> None:
        with lock:
            seen["now"] -= 1

    for operation in ("PutObject", "GetObject"):
        client.meta.events.register(f"before-call.s3.{operation}", started)
        client.meta.events.register(f"after-call.s3.{operation}", finished)

    items = [WriteRequest(f"c:{i:02}", doc({"i": i}), version=1) for i in range(40)]
    written = repo.store_many(items)
    assert set(written) == {item.key for item in items}
    assert 1 < seen["peak"] <= 4

    seen["peak"] = 0
    got = repo.fetch_many([*written, "c:missing", "c:00"])
    assert {k: v.value for k, v in got.items()} == {item.key: item.value for item in items}
    assert 1 < seen["peak"] <= 4
    assert all(name.startswith("tiered-state-s3") for name in seen["threads"])


def test_store_many_partial_failure_names_the_failed_keys(
    repo: S3StateRepository, client: Any, s3_endpoint_url: str
) -> None:
    def refuse_bad_keys(params: dict[str, Any], **_: Any) -> None:
        if "bad" in params["Key"]:
            raise EndpointConnectionError(endpoint_url=s3_endpoint_url)

    client.meta.events.register("before-parameter-build.s3.PutObject", refuse_bad_keys)
    items = [WriteRequest(k, doc(k), version=1) for k in ("ok:1", "bad:1", "ok:2", "bad:2")]
    with pytest.raises(TierUnavailableError) as info:
        repo.store_many(items)
    assert set(info.value.details["failed"]) == {"bad:1", "bad:2"}
    assert info.value.details["stored"] == ["ok:1", "ok:2"]
    assert "bad:1, bad:2" in info.value.message
    assert set(repo.fetch_many(["ok:1", "ok:2", "bad:1", "bad:2"])) == {"ok:1", "ok:2"}


def test_store_many_writes_keys_its_listing_did_not_find_without_a_head(
    make_repo: Callable[..., S3StateRepository], client: Any, s3_bucket: str, s3_endpoint_url: str
) -> None:
    # written by another repository, so that this one does not remember them
    earlier = [WriteRequest("n:03", doc(0), version=4), WriteRequest("n:07", doc(0))]
    make_repo().store_many(earlier)
    repo = make_repo()
    keys = [f"n:{i:02}" for i in range(12)]
    heads, puts = count_calls(client, "HeadObject"), count_calls(client, "PutObject")
    other = s3_client(s3_endpoint_url)

    def appear_meanwhile(params: dict[str, Any], **_: Any) -> None:
        # Another writer creates n:10 between our listing and our PUT.
        if params["Key"] == "app/n:10" and params.get("IfNoneMatch") == "*":
            other.put_object(Bucket=s3_bucket, Key="app/n:10", Body=b"9",
                             Metadata={"version": "5"})  # fmt: skip

    client.meta.events.register("before-parameter-build.s3.PutObject", appear_meanwhile)
    written = repo.store_many([WriteRequest(k, doc(k)) for k in keys])

    expected = {k: 1 for k in keys} | {"n:03": 5, "n:07": 2, "n:10": 6}
    assert {k: m.version for k, m in written.items()} == expected
    assert {k: v.metadata.version for k, v in repo.fetch_many(keys).items()} == expected
    assert {k: v.value for k, v in repo.fetch_many(keys).items()} == {k: doc(k) for k in keys}
    # HEADs only for the keys that existed (n:03, n:07) and the one that appeared (n:10)
    assert sorted(h["Key"] for h in heads) == ["app/n:03", "app/n:07", "app/n:10"]
    assert len(puts) == 13  # the refused conditional PUT of n:10 and its retry


def test_delete_reports_existence(repo: S3StateRepository) -> None:
    repo.store("gone", doc(1))
    assert repo.delete("gone") is True
    assert repo.delete("gone") is False
    assert repo.fetch("gone") is None


def test_delete_many_uses_one_delete_objects_call_per_1000_keys(
    repo: S3StateRepository, client: Any
) -> None:
    keys = [f"bulk:{i:05}" for i in range(2500)]
    present = keys[::9]  # 278 objects spread over the whole range
    repo.store_many([WriteRequest(k, "1", version=1) for k in present])
    deletes = count_calls(client, "DeleteObjects")
    heads = count_calls(client, "HeadObject")

    assert repo.delete_many([*keys, *present]) == len(present)
    assert len(deletes) == math.ceil(2500 / 1000) == 3
    # each chunk's request names only the objects its listing found
    named = [[o["Key"] for o in c["Delete"]["Objects"]] for c in deletes]
    assert [len(n) for n in named] == [len(present[:112]), len(present[112:223]), 55]
    assert sorted(k for n in named for k in n) == sorted(f"app/{k}" for k in present)
    assert all(c["Delete"]["Quiet"] is True for c in deletes)
    assert heads == []  # counted from one listing per chunk
    assert list(repo.keys("bulk:*")) == []
    assert repo.delete_many(keys[:10]) == 0
    assert len(deletes) == 3  # nothing existed: no delete request at all


def test_delete_many_counts_with_heads_past_a_long_listing(
    repo: S3StateRepository, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_repository_module, "LIST_PAGE_SIZE", 2)
    repo.store_many([WriteRequest(k, "1", version=1) for k in ["a", "b1", "b2", "b3", "b4", "c"]])
    heads = count_calls(client, "HeadObject")
    # the listing of a..z stops after two pages (a, b1, b2, b3): c and z are HEADed
    assert repo.delete_many(["a", "c", "z"]) == 2
    assert sorted(h["Key"] for h in heads) == ["app/c", "app/z"]
    assert sorted(repo.keys()) == ["b1", "b2", "b3", "b4"]


# --------------------------------------------------------------------------- scans


def test_keys_lists_under_the_literal_prefix_of_the_pattern(
    make_repo: Callable[..., S3StateRepository], client: Any
) -> None:
    repo, other = make_repo(prefix="t1/"), make_repo(prefix="t2/")
    repo.store_many([WriteRequest(k, "1", version=1) for k in ["user:1", "user:22", "user.x", "u"]])
    other.store("user:3", "1", version=1)
    listings = count_calls(client, "ListObjectsV2")

    assert sorted(repo.keys("user:?")) == ["user:1"]
    assert sorted(repo.keys("user?*")) == ["user.x", "user:1", "user:22"]
    assert sorted(repo.keys("*")) == ["u", "user.x", "user:1", "user:22"]
    assert [c["Prefix"] for c in listings] == ["t1/user:", "t1/user", "t1/"]
    assert sorted(other.keys()) == ["user:3"]


def test_stats_counts_objects_and_bytes_of_the_prefix(
    make_repo: Callable[..., S3StateRepository],
) -> None:
    repo, other = make_repo(prefix="s1/"), make_repo(prefix="s2/")
    repo.store_many([WriteRequest(f"k{i}", "x" * i, version=1) for i in range(1, 5)])
    other.store("k", "ignored", version=1)
    stats = repo.stats()
    assert (stats.key_count, stats.bytes) == (4, 1 + 2 + 3 + 4)
    assert stats.backend == "s3" and stats.category is StateCategory.COLD
    assert stats.extra["prefix"] == "s1/" and stats.extra["storage_class"] == "STANDARD_IA"


# --------------------------------------------------------------------------- faults


def test_nothing_listening_raises_tier_unavailable_quickly(s3_endpoint_url: str) -> None:
    # s3_endpoint_url only provides the credentials: nothing listens on this endpoint
    endpoint = f"http://127.0.0.1:{free_port()}"
    repo = S3StateRepository(
        "cold-bucket",
        endpoint_url=endpoint,
        region_name="us-east-1",
        connect_timeout=0.5,
        read_timeout=0.5,
        max_attempts=1,
    )
    started = time.monotonic()
    try:
        for call in (
            lambda: repo.fetch("k"),
            lambda: repo.store("k", doc(1), version=1),
            lambda: list(repo.keys()),
            lambda: list(repo.scan_keys()),
            lambda: repo.delete_many(["k"]),
        ):
            with pytest.raises(TierUnavailableError) as info:
                call()
            assert info.value.tier == "cold"
            assert "cold-bucket" in info.value.message and endpoint in info.value.message
        assert repo.ping() is False
    finally:
        repo.close()
    assert time.monotonic() - started < 5


def test_missing_bucket_says_to_create_it(s3_endpoint_url: str) -> None:
    repo = S3StateRepository(
        unique_name("nobucket-"), endpoint_url=s3_endpoint_url, region_name="us-east-1"
    )
    try:
        for call in (lambda: repo.fetch("k"), lambda: repo.store("k", doc(1))):
            with pytest.raises(TierUnavailableError, match="create the bucket"):
                call()
        assert repo.ping() is False
    finally:
        repo.close()


def test_stopped_server_mid_use_raises_tier_unavailable(s3_endpoint_url: str) -> None:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    bucket = unique_name("stop-")
    repo = S3StateRepository(
        bucket, endpoint_url=endpoint, region_name="us-east-1", connect_timeout=1, max_attempts=1
    )
    running = True
    try:
        s3_client(endpoint).create_bucket(Bucket=bucket)
        repo.store_many([WriteRequest(f"k{i}", doc(i), version=1) for i in range(3)])
        assert repo.fetch("k1") is not None and repo.ping() is True
        server.stop()
        running = False
        with pytest.raises(TierUnavailableError, match=endpoint):
            repo.fetch("k1")
        with pytest.raises(TierUnavailableError) as info:
            repo.store_many([WriteRequest(f"k{i}", doc(i), version=2) for i in range(3)])
        assert set(info.value.details["failed"]) == {"k0", "k1", "k2"}
        with pytest.raises(TierUnavailableError):
            repo.fetch_many(["k0", "k1"])
        assert repo.ping() is False
    finally:
        repo.close()
        if running:
            server.stop()
        # moto keeps one backend per process: clean the bucket through the session server
        session = s3_client(s3_endpoint_url)
        session.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": f"k{i}"} for i in range(3)]}
        )
        session.delete_bucket(Bucket=bucket)


def test_closed_repository_refuses_batches(repo: S3StateRepository) -> None:
    repo.close()
    with pytest.raises(TierUnavailableError, match="closed"):
        repo.fetch_many(["a", "b"])

"""FilesystemStateRepository on a real directory: name mapping, containment, atomic
writes, integrity, locking across threads and processes, faults."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_tiered_state.errors import (
    ConcurrencyError,
    ConfigurationError,
    IntegrityError,
    InvalidKeyError,
    InvalidRequestError,
    TierUnavailableError,
)
from flask_tiered_state.storage.base import StateCategory, WriteRequest, checksum_of
from flask_tiered_state.storage.filesystem import FilesystemStateRepository
from flask_tiered_state.storage.filesystem.names import (
    SEGMENT,
    decode_key,
    encode_key,
    relative_parts,
)
from flask_tiered_state.storage.keys import validate_key

KEY_CHARS = "abcXYZ019_-.:/@+="
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_%")


def doc(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "sandbox" / "cold"


@pytest.fixture
def repo(root: Path) -> Any:
    repository = FilesystemStateRepository(root)
    yield repository
    repository.close()


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- names


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(KEY_CHARS), min_size=1, max_size=255))
def test_encoding_is_reversible_and_safe(key: str) -> None:
    encoded = encode_key(key)
    assert decode_key(encoded) == key
    assert set(encoded) <= NAME_CHARS and encoded.lower() == encoded
    parts = relative_parts(key)
    assert all(0 < len(p.encode()) <= SEGMENT + 3 for p in parts)
    assert not {".", ".."} & set(parts) and all(os.sep not in p for p in parts)


def test_every_key_character_is_covered() -> None:
    allowed = [chr(c) for c in range(1, 256) if _is_key(chr(c))]
    assert len(allowed) == 26 + 26 + 10 + 8
    for char in allowed:
        assert set(encode_key(char)) <= NAME_CHARS
        assert decode_key(encode_key(char)) == char


def _is_key(text: str) -> bool:
    try:
        validate_key(text)
    except InvalidKeyError:
        return False
    return True


@pytest.mark.parametrize("name", ["%2", "%zz", "_1", "%41", "ABC", "a%2fb%", "a..b", ""])
def test_non_canonical_names_decode_to_none(name: str) -> None:
    assert decode_key(name) is None


def test_path_traversal_keys_stay_inside_root(repo: FilesystemStateRepository, root: Path) -> None:
    keys = ["..", "../x", "../../etc/passwd", "a/../../b", "/abs", "./.", "..:..", "x/..", ".lock"]
    outside_before = files_under(root.parent.parent)
    for key in keys:
        repo.store(key, doc(key))
    created = files_under(root.parent.parent) - outside_before
    assert created and all(root in p.parents for p in created)
    assert all(p.parent == root for p in created)  # short keys: one flat directory
    assert sorted(repo.keys()) == sorted(keys)
    for key in keys:
        fetched = repo.fetch(key)
        assert fetched is not None and fetched.value == doc(key)
    assert (root / ".lock").stat().st_size == 0  # the key ".lock" did not touch the lock file


def test_keys_differing_in_case_get_distinct_files(
    repo: FilesystemStateRepository, root: Path
) -> None:
    repo.store("User:Alice", doc(1))
    repo.store("user:alice", doc(2))
    names = {p.name for p in files_under(root)} - {".lock"}
    assert len(names) == 2 and all(n == n.lower() for n in names)
    assert {k: v.value for k, v in repo.fetch_many(["User:Alice", "user:alice"]).items()} == {
        "User:Alice": doc(1),
        "user:alice": doc(2),
    }


def test_long_keys_are_split_into_directories(repo: FilesystemStateRepository, root: Path) -> None:
    longest = "/" * 255  # every character escaped: 765 encoded characters
    long_keys = [longest, "a" * 255, "a" * 200, "a" * 199, "a" * 201, "Z" * 150 + "x"]
    for key in long_keys:
        repo.store(key, doc(len(key)))
    for path in files_under(root):
        assert all(len(part.encode()) < 255 for part in path.relative_to(root).parts)
    assert (root / ("%2f" * 66 + "%2")).is_dir()
    assert sorted(repo.keys()) == sorted(long_keys)
    assert sorted(repo.keys("a" * 200 + "*")) == ["a" * 200, "a" * 201, "a" * 255]
    assert sorted(repo.keys("a" * 201 + "*")) == ["a" * 201, "a" * 255]
    assert list(repo.keys("a" * 199 + "?")) == ["a" * 200]
    assert list(repo.keys("/" * 254 + "?")) == [longest]
    assert repo.stats().key_count == len(long_keys)
    assert repo.delete_many(long_keys) == len(long_keys)
    assert list(repo.keys()) == []


def test_foreign_files_are_ignored(repo: FilesystemStateRepository, root: Path) -> None:
    repo.store("real", doc(1))
    (root / "README.txt").write_text("notes")
    (root / "UPPER.st").write_text("x")
    (root / ".tmp-leftover").write_text("a crashed write")
    (root / "sub").mkdir()
    assert list(repo.keys()) == ["real"]
    assert repo.stats().key_count == 1


# --------------------------------------------------------------------------- writes


def test_file_holds_header_and_value(repo: FilesystemStateRepository) -> None:
    value = doc({"name": "zoë"})
    written = repo.store("user:1", value, ttl_seconds=60)
    header, body = repo.path_of("user:1").read_bytes().split(b"\n", 1)
    assert body.decode() == value
    meta = json.loads(header)
    assert meta["key"] == "user:1" and meta["checksum"] == checksum_of(value)
    assert meta["version"] == 1 and meta["category"] == "cold"
    assert written.ttl_seconds is None  # the COLD directory has no expiry
    fetched = repo.fetch("user:1")
    assert fetched is not None and fetched.metadata == written


def test_writes_leave_no_temporary_files(repo: FilesystemStateRepository, root: Path) -> None:
    repo.store_many([WriteRequest(f"k{i}", doc(i)) for i in range(20)])
    repo.store("/" * 255, doc("long"))
    repo.store("k1", doc("again"))
    assert not [p for p in files_under(root) if p.name.startswith(".tmp")]


def test_a_failed_write_keeps_the_old_file(
    repo: FilesystemStateRepository, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.store("k", doc("old"))

    def crash(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)  # the disk cannot show this on demand
    with pytest.raises(TierUnavailableError, match="No space left"):
        repo.store("k", doc("new"))
    monkeypatch.undo()
    fetched = repo.fetch("k")
    assert fetched is not None and fetched.value == doc("old")
    assert not [p for p in files_under(root) if p.name.startswith(".tmp")]


def test_versions_and_compare_and_set(repo: FilesystemStateRepository) -> None:
    assert repo.store("v", doc(1), version=41).version == 41
    assert repo.store("v", doc(2)).version == 42
    with pytest.raises(ConcurrencyError) as info:
        repo.store("v", doc(3), expected_version=41)
    assert info.value.actual == 42
    assert repo.store("v", doc(3), expected_version=42, version=50).version == 50
    written = repo.store_many([WriteRequest("v", doc(4)), WriteRequest("v", doc(5))])
    assert written["v"].version == 52


def test_concurrent_writers_of_different_and_same_keys(repo: FilesystemStateRepository) -> None:
    def work(worker: int) -> None:
        for i in range(15):
            repo.store(f"own:{worker}", doc(i))
            repo.store("shared", doc([worker, i]))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = repo.fetch_many([f"own:{w}" for w in range(6)] + ["shared"])
    assert all(got[f"own:{w}"].metadata.version == 15 for w in range(6))
    assert got["shared"].metadata.version == 90


def test_compare_and_set_has_one_winner(repo: FilesystemStateRepository) -> None:
    repo.store("cas", doc("start"))
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def attempt(index: int) -> None:
        barrier.wait()
        try:
            repo.store("cas", doc(index), expected_version=1)
            outcomes.append("won")
        except ConcurrencyError:
            outcomes.append("lost")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["lost"] * 5 + ["won"]


def _bump(root: str, count: int) -> None:
    repository = FilesystemStateRepository(root, fsync=False)
    for i in range(count):
        repository.store("across", doc(i))
    repository.close()


@pytest.mark.skipif(os.name != "posix", reason="cross-process locking uses fcntl")
def test_processes_sharing_the_directory_never_lose_a_version(root: Path) -> None:
    FilesystemStateRepository(root).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_bump, args=(str(root), 40)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    fetched = FilesystemStateRepository(root).fetch("across")
    assert fetched is not None and fetched.metadata.version == 120


# --------------------------------------------------------------------------- integrity


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data.replace(b'"balance":100', b'"balance":900'),  # value changed
        lambda data: data[:-3],  # truncated
        lambda data: b"not json" + data[data.index(b"\n") :],  # header destroyed
        lambda data: data.replace(b'"version":1', b'"version":"x"'),  # header field damaged
        lambda data: data.replace(b"\n", b" "),  # no header line
    ],
)
def test_corrupted_file_raises_integrity_error(
    repo: FilesystemStateRepository, damage: Any
) -> None:
    repo.store("acct", doc({"balance": 100}))
    path = repo.path_of("acct")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(IntegrityError) as info:
        repo.fetch("acct")
    assert info.value.key == "acct" and str(path) in info.value.message
    with pytest.raises(IntegrityError):
        repo.fetch_many(["acct"])


def test_file_moved_to_another_key_raises_integrity_error(repo: FilesystemStateRepository) -> None:
    repo.store("a", doc("for a"))
    shutil.copy(repo.path_of("a"), repo.path_of("b"))
    with pytest.raises(IntegrityError):
        repo.fetch("b")


def test_damaged_header_blocks_compare_and_set_but_not_a_plain_write(
    repo: FilesystemStateRepository,
) -> None:
    repo.store("h", doc(1))
    repo.path_of("h").write_bytes(b"garbage\n{}")
    with pytest.raises(IntegrityError):
        repo.store("h", doc(2), expected_version=1)
    assert repo.store("h", doc(2)).version == 1
    fetched = repo.fetch("h")
    assert fetched is not None and fetched.value == doc(2)


# --------------------------------------------------------------------------- faults and setup


def test_root_replaced_by_a_file_raises_tier_unavailable(
    repo: FilesystemStateRepository, root: Path
) -> None:
    repo.store("k", doc(1))
    shutil.rmtree(root)
    root.write_text("not a directory")
    for operation in (
        lambda: repo.fetch("k"),
        lambda: repo.store("k", doc(2)),
        lambda: repo.store_many([WriteRequest("k", doc(2))]),
        lambda: repo.delete("k"),
        lambda: list(repo.keys()),
        lambda: list(repo.scan_keys()),
        lambda: repo.stats(),
    ):
        with pytest.raises(TierUnavailableError) as info:
            operation()
        assert info.value.tier == "cold" and str(root) in info.value.message
        assert isinstance(info.value.__cause__, OSError)
    assert repo.ping() is False


def test_unusable_root_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigurationError, match="cannot be used"):
        FilesystemStateRepository(blocker / "cold")


def test_bad_input_is_refused_before_writing(repo: FilesystemStateRepository, root: Path) -> None:
    with pytest.raises(InvalidKeyError):
        repo.store_many([WriteRequest("ok", doc(1)), WriteRequest("bad key", doc(2))])
    with pytest.raises(InvalidRequestError, match="ttl_seconds"):
        repo.store_many([WriteRequest("ok", doc(1)), WriteRequest("b", doc(2), ttl_seconds=0)])
    assert repo.fetch("ok") is None and list(repo.keys()) == []


def test_stats_counts_files_and_bytes(repo: FilesystemStateRepository, root: Path) -> None:
    repo.store_many([WriteRequest(f"s{i}", doc("x" * 100)) for i in range(4)])
    stats = repo.stats()
    on_disk = sum(p.stat().st_size for p in files_under(root) if p.name != ".lock")
    assert stats.key_count == 4 and stats.bytes == on_disk > 400
    assert stats.category is StateCategory.COLD and stats.backend == "filesystem"


def test_closed_repository_keeps_working(root: Path) -> None:
    repository = FilesystemStateRepository(root, category=StateCategory.WARM)
    repository.close()
    assert repository.store("k", doc(1)).category is StateCategory.WARM
    assert repository.store("k", doc(2)).version == 2
    repository.close()

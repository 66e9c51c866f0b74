"""Checkpoints (flask_tiered_state.ops.capture): captures of the tiers, a consistent cut
under concurrent writes, verification of damaged archives, and restores.

Every test runs on the embedded backends (SQLite, memory, a directory) and on the
servers (PostgreSQL, Redis, S3 on moto's server).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import (
    ArchiveCorruptError,
    ArchiveNotFoundError,
    ConfigurationError,
    InvalidPatternError,
    InvalidRequestError,
)
from flask_tiered_state.json_codec import loads
from flask_tiered_state.ops.archive import ArchiveReader
from flask_tiered_state.ops.capture import RECORDS, StateCapture
from flask_tiered_state.storage.base import StateCategory
from tests.conftest import unique_name
from tests.domain.conftest import build_test_store

GROUPS = 4
PER_GROUP = 25


@pytest.fixture(autouse=True)
def _no_default_manager() -> Iterator[None]:
    StateManager.set_context_resolver(None)
    StateManager.reset_instance()
    yield
    StateManager.reset_instance()


@pytest.fixture
def manager(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateManager]:
    created = StateManager.create(store=build_test_store(backend, request, tmp_path))
    try:
        yield created
    finally:
        created.close()


def records_of(capture: StateCapture, checkpoint_id: str) -> dict[str, dict[str, Any]]:
    reader = ArchiveReader(capture.destination, checkpoint_id)
    return {item["key"]: item for item in reader.items(RECORDS)}


def test_captures_hot_full_and_consistent(manager: StateManager, destination: str) -> None:
    for i in range(30):
        manager.register_state(f"u{i}", "user", {"data": {"n": i}})
    for i in range(3):
        manager.register_state(f"s{i}", "session", {"data": {"n": i}})
    manager.store.set("position:eur", {"qty": 3})
    manager.store.set("risk_limits", {"max": 10}, category=StateCategory.HOT, ttl_seconds=600)
    manager.store.batch_promote([f"state:u{i}" for i in range(5)])
    manager.demote_to_cold("u7")
    capture = StateCapture.for_manager(manager, destination, chunk_size=7)

    hot = capture.capture_hot_state()
    assert hot["scope"] == "hot"
    hot_keys = set(records_of(capture, hot["archive_id"]))
    assert hot_keys == {*(f"state:u{i}" for i in range(5)), *(f"state:s{i}" for i in range(3)),
                        "risk_limits"}  # fmt: skip

    everything = {f"state:u{i}" for i in range(30)} | {f"state:s{i}" for i in range(3)}
    everything |= {"position:eur", "risk_limits"}
    for consistent in (False, True):
        manifest = capture.capture_full_state(consistent=consistent)
        items = records_of(capture, manifest["archive_id"])
        assert set(items) == everything
        # One item per key, from the record's home: WARM, the archived one from COLD.
        assert items["state:u1"]["tier"] == "warm"
        assert items["state:u7"]["tier"] == "cold"
        assert items["state:s1"]["tier"] == "hot"
        assert items["risk_limits"]["tier"] == "hot"
        assert manifest["counts"]["by_tier"] == {"warm": 30, "cold": 1, "hot": 4}
        # The stored form, byte for byte, with its version.
        stored = manager.store.get_entry("state:u2")
        assert stored is not None
        assert items["state:u2"]["value"] == stored.value
        assert items["state:u2"]["version"] == stored.metadata.version
    assert manifest["scope"] == "consistent"
    assert manifest["cut"]["history"] is True
    assert manifest["cut"]["taken_at"] > 0

    listed = [m["archive_id"] for m in capture.list_checkpoints()]
    assert listed[0] == manifest["archive_id"] and len(listed) == 3
    report = capture.verify_checkpoint(manifest["archive_id"])
    assert report["ok"] and report["records"] == len(everything)

    # A pattern narrows every capture.
    assert capture.capture_full_state("u1*")["counts"]["records"] == 0  # patterns are over keys
    narrow = capture.capture_full_state("state:u1*")
    assert set(records_of(capture, narrow["archive_id"])) == {
        f"state:u{i}" for i in (1, *range(10, 20))
    }


def _writers(
    manager: StateManager,
    groups: list[list[str]],
    stop: threading.Event,
    committed: list[set[int]],
    failures: list[BaseException],
) -> list[threading.Thread]:
    """4 threads; each update sets the counter of every state of one group to the
    group's next value, in ONE batch_update_state chunk (one transaction)."""
    locks = [threading.Lock() for _ in groups]
    values = [0 for _ in groups]

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                g = rng.randrange(len(groups))
                with locks[g]:
                    n = values[g] + 1
                    manager.batch_update_state(
                        {i: {"data": {"count": n}} for i in groups[g]}, chunk_size=500
                    )
                    values[g] = n
                    committed[g].add(n)
        except BaseException as exc:  # reported by the test
            failures.append(exc)

    return [threading.Thread(target=work, args=(seed,), daemon=True) for seed in range(4)]


@pytest.mark.parametrize("with_sessions", [False, True], ids=["warm-home", "hot-home-too"])
def test_a_checkpoint_under_concurrent_batches_is_one_instant(
    manager: StateManager, destination: str, with_sessions: bool
) -> None:
    # Each group's states are spread over the key order, so a capture reading chunk by
    # chunk meets every group in several chunks.
    groups = [[f"c{n:03d}" for n in range(g, GROUPS * PER_GROUP, GROUPS)] for g in range(GROUPS)]
    types = ["user"] * GROUPS
    if with_sessions:
        types[-1] = "session"  # HOT home: cut through the history
    for g, ids in enumerate(groups):
        manager.batch_set_state(
            {i: {"type": types[g], "data": {"count": 0}} for i in ids}, state_type=types[g]
        )
    manager.store.batch_promote([f"state:{i}" for i in groups[0]])  # cached copies too
    capture = StateCapture.for_manager(manager, destination, chunk_size=9)
    committed: list[set[int]] = [{0} for _ in groups]
    failures: list[BaseException] = []
    stop = threading.Event()
    threads = _writers(manager, groups, stop, committed, failures)
    for thread in threads:
        thread.start()
    checkpoints = []
    try:
        time.sleep(0.3)
        for _ in range(3):
            checkpoints.append(capture.capture_full_state())
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not failures, failures
    assert all(len(values) > 3 for values in committed), "the writers barely ran"

    for manifest in checkpoints:
        items = records_of(capture, manifest["archive_id"])
        for g, ids in enumerate(groups):
            counts = {loads(items[f"state:{i}"]["value"])["data"]["count"] for i in ids}
            assert len(counts) == 1, f"group {g} mixes counters {sorted(counts)}"
            (count,) = counts
            assert count in committed[g]
            # Version = count + 1 (registration, then one update per increment).
            versions = {items[f"state:{i}"]["version"] for i in ids}
            assert versions == {count + 1}
        if with_sessions:
            assert manifest["counts"]["by_tier"]["hot"] == PER_GROUP

    # The history shows the captured counters as committed together: each group's rows of
    # that version were written by the same batch (one correlation id, one event each).
    manifest = checkpoints[-1]
    items = records_of(capture, manifest["archive_id"])
    for ids in groups:
        count = loads(items[f"state:{ids[0]}"]["value"])["data"]["count"]
        if count == 0:
            continue
        rows = [
            next(r for r in manager.get_state_history(i) if r["version"] == count + 1) for i in ids
        ]
        assert {r["new_record"]["data"]["count"] for r in rows} == {count}
        assert len({r["correlation_id"] for r in rows}) == 1

    # Restoring it brings every state back to the cut, as new versions with history rows.
    before = {i: manager.get_state(i) for ids in groups for i in ids}
    result = capture.restore_checkpoint(manifest["archive_id"], dry_run=False, actor="ops")
    assert result["counts"]["failed"] == 0
    for ids in groups:
        expected = loads(items[f"state:{ids[0]}"]["value"])["data"]["count"]
        for i in ids:
            record = manager.get_state(i)
            assert record is not None
            assert record["data"]["count"] == expected
            old = before[i]
            assert old is not None
            if old["data"]["count"] != expected:
                assert record["version"] == old["version"] + 1
                assert manager.get_state_history(i)[-1]["transition"] == "restore"


def test_a_capture_without_the_cut_can_mix_instants(
    manager: StateManager, destination: str
) -> None:
    """The control of the test above: reading chunk by chunk without a snapshot, a
    capture under the same load soon catches a group half-written."""
    groups = [[f"c{n:03d}" for n in range(g, GROUPS * PER_GROUP, GROUPS)] for g in range(GROUPS)]
    for ids in groups:
        manager.batch_set_state({i: {"data": {"count": 0}} for i in ids}, state_type="user")
    capture = StateCapture.for_manager(manager, destination, chunk_size=3)
    committed: list[set[int]] = [{0} for _ in groups]
    failures: list[BaseException] = []
    stop = threading.Event()
    threads = _writers(manager, groups, stop, committed, failures)
    for thread in threads:
        thread.start()
    mixed = False
    try:
        deadline = time.monotonic() + 20
        while not mixed and time.monotonic() < deadline:
            items = records_of(capture, capture.capture_full_state(consistent=False)["archive_id"])
            mixed = any(
                len({loads(items[f"state:{i}"]["value"])["data"]["count"] for i in ids}) > 1
                for ids in groups
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not failures, failures
    assert mixed, "20 s of captures without a snapshot never caught a batch half-read"


def _corrupt_one_byte(capture: StateCapture, checkpoint_id: str, tmp_path: Path) -> tuple[str, int]:
    """Flip one byte in the middle of the first records chunk; its name and the offset."""
    reader = ArchiveReader(capture.destination, checkpoint_id)
    chunk = reader.manifest["sections"][RECORDS]["chunks"][0]
    name = chunk["file"]
    where = reader.destination
    data = bytearray(where.read(checkpoint_id, name) or b"")
    offset = len(data) // 2
    data[offset] ^= 0x01
    where.write(checkpoint_id, name, bytes(data))
    return name, offset


def test_a_one_byte_corrupt_checkpoint_is_refused_with_file_and_offset(
    manager: StateManager, destination: str, tmp_path: Path
) -> None:
    for i in range(400):
        manager.register_state(f"u{i}", "user", {"data": {"text": f"value {i} " * 20}})
    capture = StateCapture.for_manager(manager, destination)
    manifest = capture.capture_full_state()
    checkpoint_id = manifest["archive_id"]
    for i in range(5):
        manager.update_state(f"u{i}", {"data": {"text": "changed"}})
    name, offset = _corrupt_one_byte(capture, checkpoint_id, tmp_path)

    with pytest.raises(ArchiveCorruptError) as caught:
        capture.verify_checkpoint(checkpoint_id)
    error = caught.value
    assert error.file == name
    assert error.offset is not None and error.offset <= offset < error.offset + 4096
    assert name in error.message and str(error.offset) in error.message

    # The restore refuses before writing anything.
    with pytest.raises(ArchiveCorruptError):
        capture.restore_checkpoint(checkpoint_id, dry_run=False)
    for i in range(5):
        record = manager.get_state(f"u{i}")
        assert record is not None and record["data"]["text"] == "changed"


def test_a_record_whose_value_was_altered_is_refused(manager: StateManager, tmp_path: Path) -> None:
    """A chunk rewritten whole (its checksums redone) still has each value's own sha256."""
    from flask_tiered_state.ops.archive import ArchiveWriter

    manager.register_state("u1", "user", {"data": {"n": 1}})
    capture = StateCapture.for_manager(manager, tmp_path / "ck")
    with ArchiveWriter(tmp_path / "ck", "forged-1", "checkpoint") as writer:
        stored = manager.store.get_entry("state:u1")
        assert stored is not None
        writer.add(
            RECORDS,
            [{"key": "state:u1", "value": stored.value.replace("1", "2"), "version": 1,
              "checksum": stored.metadata.checksum, "tier": "warm", "ttl_seconds": None,
              "stored_at": 0.0}],
        )  # fmt: skip
        writer.close({"scope": "full"})
    with pytest.raises(ArchiveCorruptError, match="does not match its checksum") as caught:
        capture.verify_checkpoint("forged-1")
    assert caught.value.file.startswith("records-")


def test_restore_modes_and_keys_that_are_not_records(
    manager: StateManager, destination: str
) -> None:
    manager.register_state("u1", "user", {"data": {"n": 1}})
    manager.register_state("u2", "user", {"data": {"n": 2}})
    manager.store.set("position:eur", {"qty": 3})
    capture = StateCapture.for_manager(manager, destination)
    checkpoint_id = capture.capture_full_state()["archive_id"]
    manager.update_state("u1", {"data": {"n": 10}})
    manager.store.set("position:eur", {"qty": 4})
    manager.store.delete("state:u2")  # lost: its history remains
    manager.store.set("position:usd", {"qty": 1})  # written after the cut: left alone

    dry = capture.restore_checkpoint(checkpoint_id)  # dry run by default
    assert dry["dry_run"] and dry["counts"]["restored"] == 2 and dry["counts"]["recreated"] == 1
    assert manager.get_state("u1")["data"] == {"n": 10}  # type: ignore[index]

    missing = capture.restore_checkpoint(checkpoint_id, mode="missing", dry_run=False)
    assert missing["counts"]["recreated"] == 1 and missing["counts"]["skipped_present"] == 2
    assert manager.get_state("u2")["data"] == {"n": 2}  # type: ignore[index]
    assert manager.get_state("u1")["data"] == {"n": 10}  # type: ignore[index]

    replaced = capture.restore_checkpoint(checkpoint_id, mode="replace", dry_run=False)
    assert replaced["counts"]["restored"] == 2 and replaced["counts"]["unchanged"] == 1
    assert manager.get_state("u1")["data"] == {"n": 1}  # type: ignore[index]
    assert manager.get_state("u1")["version"] == 3  # type: ignore[index]
    assert manager.store.get("position:eur") == {"qty": 3}
    assert manager.store.get("position:usd") == {"qty": 1}
    again = capture.restore_checkpoint(checkpoint_id, mode="replace", dry_run=False)
    assert again["counts"]["unchanged"] == 3

    only_hot = capture.restore_checkpoint(checkpoint_id, tiers=["hot"], dry_run=False)
    assert sum(only_hot["counts"].values()) == 0


def test_bad_arguments_are_refused(manager: StateManager, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="StateRepositories"):
        StateCapture(manager)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="chunk_size"):
        StateCapture(manager.get_repositories(), chunk_size=0)
    with pytest.raises(ConfigurationError, match="destination"):
        StateCapture(manager.get_repositories()).capture_hot_state()
    capture = StateCapture.for_manager(manager, tmp_path / "ck")
    with pytest.raises(InvalidPatternError, match="1 to 255"):
        capture.capture_full_state("")
    with pytest.raises(InvalidRequestError, match="consistent"):
        capture.capture_full_state(consistent="yes")  # type: ignore[arg-type]
    with pytest.raises(ArchiveNotFoundError):
        capture.verify_checkpoint("20990101T000000000000Z-abcdef")
    checkpoint_id = capture.capture_hot_state()["archive_id"]
    with pytest.raises(InvalidRequestError, match="mode"):
        capture.restore_checkpoint(checkpoint_id, mode="all")
    with pytest.raises(InvalidRequestError, match="tiers"):
        capture.restore_checkpoint(checkpoint_id, tiers=["warm", "lukewarm"])
    with pytest.raises(InvalidRequestError, match="dry_run"):
        capture.restore_checkpoint(checkpoint_id, dry_run="no")  # type: ignore[arg-type]


def test_the_checkpoint_commands(tmp_path: Path) -> None:
    import json

    from flask import Flask

    from flask_tiered_state.extension import TieredState, get_app_state

    app = Flask(unique_name("ckpt_app_"), instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True)
    TieredState(app)
    state = get_app_state(app)
    try:
        manager = state.manager
        for i in range(30):
            manager.register_state(f"u{i}", "user", {"data": {"n": i}})
        runner = app.test_cli_runner()

        def run(*args: str) -> Any:
            return runner.invoke(args=["state", "checkpoint", *args])

        created = run("create", "--label", "before the migration")
        assert created.exit_code == 0, created.output
        assert "30 records (warm 30, cold 0, hot 0)" in created.output
        assert str(tmp_path / "instance" / "backups") in created.output
        made = json.loads(run("create", "--scope", "hot", "--json").stdout)
        assert made["scope"] == "hot" and made["counts"]["records"] == 0
        listed = json.loads(run("list", "--json").stdout)
        assert [m["archive_id"] for m in listed][1] in created.output
        first = listed[1]["archive_id"]
        text = run("list")
        assert "before the migration" in text.output and "consistent" in text.output

        verified = run("verify", first)
        assert verified.exit_code == 0 and "OK, 30 records" in verified.output

        manager.update_state("u4", {"data": {"n": 40}})
        dry = json.loads(run("restore", first, "--json").stdout)
        assert dry["dry_run"] and dry["counts"]["restored"] == 1
        applied = run("restore", first, "--apply", "--actor", "ops", "--reason", "drill")
        assert applied.exit_code == 0, applied.output
        assert f"Checkpoint {first} (replace), restored: 1 restored" in applied.output
        assert manager.get_state("u4")["data"] == {"n": 4}  # type: ignore[index]
        last = manager.get_state_history("u4")[-1]
        assert (last["transition"], last["actor"], last["reason"]) == ("restore", "ops", "drill")

        capture = StateCapture.for_manager(manager, tmp_path / "instance" / "backups")
        _corrupt_one_byte(capture, first, tmp_path)
        broken = run("verify", first)
        assert broken.exit_code == 1
        assert "records-000000.jsonl.gz" in broken.output and "byte offset" in broken.output
        assert run("restore", first, "--apply").exit_code == 1
        assert run("verify", "no-such-checkpoint").exit_code == 1
    finally:
        state.close()


def test_hot_home_states_lost_with_hot_come_back_from_a_checkpoint(
    manager: StateManager, destination: str
) -> None:
    """HOT is the only copy of a session: after losing HOT, a checkpoint's HOT records are
    written back through the write path, as new versions with a 'restore' row."""
    for i in range(10):
        manager.register_state(f"s{i}", "session", {"data": {"cart": i}})
    manager.update_state("s1", {"data": {"cart": 100}})
    capture = StateCapture.for_manager(manager, destination)
    checkpoint_id = capture.capture_full_state()["archive_id"]
    hot = manager.get_repositories().hot
    hot.delete_many([f"state:s{i}" for i in range(10)])  # HOT lost (a restart, empty)
    manager.store.cache.clear()
    assert manager.get_state("s1") is None

    result = capture.restore_checkpoint(checkpoint_id, tiers=["hot"], mode="missing", dry_run=False)
    assert result["counts"]["recreated"] == 10
    record = manager.get_state("s1")
    assert record is not None and record["data"] == {"cart": 100} and record["version"] == 3
    assert [r["transition"] for r in manager.get_state_history("s1")] == [
        "create", "update", "restore"
    ]  # fmt: skip
    stored = hot.fetch("state:s1")
    assert stored is not None and stored.metadata.ttl_seconds == 3600


def test_acting_as_a_role_checks_the_checkpoint_actions(
    manager: StateManager, tmp_path: Path
) -> None:
    from flask_tiered_state.errors import AccessDeniedError
    from flask_tiered_state.roles import RoleBasedAccess

    manager.set_roles(
        RoleBasedAccess(
            {"support": ["states.read", "checkpoints.list"], "ops": ["*"]},
            identity="header:X-Roles",
        )
    )
    capture = StateCapture.for_manager(manager, tmp_path / "ck")
    with manager.acting_as("ops"):
        checkpoint_id = capture.capture_full_state()["archive_id"]
    with manager.acting_as("support"):
        assert capture.list_checkpoints()[0]["archive_id"] == checkpoint_id
        with pytest.raises(AccessDeniedError, match=r"checkpoints\.create"):
            capture.capture_hot_state()
        with pytest.raises(AccessDeniedError, match=r"checkpoints\.verify"):
            capture.verify_checkpoint(checkpoint_id)
        with pytest.raises(AccessDeniedError, match=r"backups\.restore"):
            capture.restore_checkpoint(checkpoint_id, dry_run=False)

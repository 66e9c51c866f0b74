"""Backups (flask_tiered_state.ops.backup): backup -> wipe -> restore round trips, restore
modes, dry runs, damaged and incomplete archives, incremental backups, the encryption
check, and the ``flask state backup`` commands.

Every test of the round trip runs on the embedded backends (SQLite, memory, a directory;
backups in a directory) and on the servers (PostgreSQL, Redis, S3 on moto's server;
backups in a bucket of their own). Wiping only ever touches the test's own database
schema, Redis prefix and buckets.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_tiered_state import TieredState
from flask_tiered_state.domain.audit import AuditVerifier
from flask_tiered_state.domain.encryption import generate_master_key
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import (
    AccessDeniedError,
    ArchiveCorruptError,
    ArchiveNotFoundError,
    ConfigurationError,
    InvalidRequestError,
    InvalidStateTypeError,
)
from flask_tiered_state.extension import get_app_state
from flask_tiered_state.json_codec import loads
from flask_tiered_state.ops import backup as backup_module
from flask_tiered_state.ops.archive import (
    MANIFEST,
    ArchiveReader,
    LocalDestination,
    S3Destination,
    open_destination,
)
from flask_tiered_state.ops.backup import BackupManager
from tests.conftest import s3_client
from tests.domain.conftest import build_test_store

MASTER_KEY = generate_master_key()
AUDIT_KEY = "backup-tests-audit-key-" + "a" * 32
SECRET = "SECRETVALUE"


@pytest.fixture(autouse=True)
def _no_default_manager() -> Iterator[None]:
    StateManager.set_context_resolver(None)
    StateManager.reset_instance()
    yield
    StateManager.reset_instance()


def new_manager(store: Any, *, master_key: str = MASTER_KEY) -> StateManager:
    manager = StateManager.create(
        store=store, encryption_keys=[master_key], audit_keys=[AUDIT_KEY], close_store=False
    )
    manager.register_state_type("secret", encrypted_fields=["data.pin"])
    return manager


@pytest.fixture
def store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    built = build_test_store(backend, request, tmp_path)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def manager(store: Any) -> Iterator[StateManager]:
    created = new_manager(store)
    try:
        yield created
    finally:
        created.close()


@pytest.fixture
def backups(manager: StateManager, destination: str) -> BackupManager:
    return BackupManager(manager=manager, destination=destination, chunk_keys=7, chunk_items=11)


def pending(state_id: str, old: Any, new: Any, transition: Any, event_id: str = "") -> None:
    """An asynchronous callback nobody dispatches in these tests: its deliveries stay."""


def seed(manager: StateManager) -> None:
    manager.register_callback("secret_created", pending, asynchronous=True)
    for number in range(20):
        manager.register_state(f"user-{number}", "user", {"data": {"n": number}})
        manager.update_state(f"user-{number}", {"data": {"n": number, "plan": "pro"}})
    manager.update_state("user-1", None, "activate", actor="ops", reason="welcome")
    for number in range(3):
        manager.register_state(f"s-{number}", "secret", {"data": {"pin": f"{SECRET}-{number}"}})
    manager.register_state("sess-1", "session", {"data": {"cart": [1, 2]}})
    manager.delete_state("user-4")  # a tombstone
    manager.erase_state("s-2", reason="asked to be forgotten")
    assert manager.demote_to_cold("user-3")  # archived in COLD


def state(manager: StateManager, state_id: str, **options: Any) -> dict[str, Any]:
    record = manager.get_state(state_id, **options)
    assert record is not None, state_id
    return record


def stored_records(manager: StateManager) -> dict[str, dict[str, Any]]:
    """Every state's stored record: the newest copy in any tier (tiers read directly)."""
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    for repository in manager.get_repositories():
        keys = list(repository.keys("state:*"))
        for key, value in repository.fetch_many(keys).items():
            record = loads(value.value)
            if key not in found or record["version"] > found[key][0]:
                found[key] = (record["version"], record)
    return {key[len("state:") :]: record for key, (_, record) in sorted(found.items())}


def history_rows(manager: StateManager) -> list[dict[str, Any]]:
    t = manager.history.table
    with manager.history.engine.connect() as connection:
        rows = connection.execute(sa.select(t).order_by(t.c.state_id, t.c.version)).mappings()
        out = []
        for row in rows:
            item = {k: v for k, v in row.items() if k != "id"}
            for name in ("old_record", "new_record"):
                if isinstance(item[name], str):
                    item[name] = json.loads(item[name])
            moment = item["created_at"]
            item["created_at"] = moment.replace(tzinfo=None) if moment.tzinfo else moment
            out.append(item)
        return out


def deliveries(manager: StateManager) -> list[tuple[Any, ...]]:
    t = manager.outbox.table
    with manager.outbox.engine.connect() as connection:
        rows = connection.execute(
            sa.select(t.c.event_id, t.c.callback, t.c.state_id, t.c.version, t.c.status)
        )
        return sorted(tuple(row) for row in rows)


def snapshot(manager: StateManager) -> tuple[Any, ...]:
    """What a restore may change."""
    tiers = {
        repository.category.value: {
            k: v.value for k, v in repository.fetch_many(list(repository.keys("*"))).items()
        }
        for repository in manager.get_repositories()
    }
    return tiers, history_rows(manager), deliveries(manager)


def wipe(manager: StateManager, *, history: bool = True) -> None:
    """Lose every tier's records (and the history and deliveries): this test's own."""
    for repository in manager.get_repositories():
        repository.delete_many(list(repository.keys("*")))
    if history:
        with manager.history.engine.begin() as connection:
            connection.execute(manager.history.table.delete())
            connection.execute(manager.outbox.table.delete())
    manager.store.cache.clear()


def audit_statuses(manager: StateManager) -> dict[str, str]:
    verifier = AuditVerifier.for_manager(manager)
    return {audit.state_id: audit.summary() for audit in verifier.verify()}


def archived_text(destination: str, backup_id: str) -> str:
    reader = ArchiveReader(destination, backup_id)
    return "\n".join(json.dumps(i) for s in reader.sections for i in reader.items(s))


# --------------------------------------------------------------------------- round trips


def test_backup_wipe_restore_gives_back_every_record_and_history_row(
    manager: StateManager, backups: BackupManager, destination: str
) -> None:
    seed(manager)
    records = stored_records(manager)
    rows = history_rows(manager)
    events = deliveries(manager)
    assert len(events) == 3  # one per secret: the asynchronous callback's

    summary = backups.create_backup(include_history=True, include_events=True)
    counts = summary["counts"]
    assert counts["records"] == len(records) == 24
    assert counts["by_tier"] == {"hot": 1, "warm": 22, "cold": 1}
    assert counts["tombstones"] == 2 and counts["history"] == len(rows) and counts["events"] == 3
    assert counts["max_version"] == max(r["version"] for r in records.values())
    assert summary["source"]["warm"]["backend"] in ("sqlite", "postgresql")
    assert "password" not in json.dumps(summary["source"]).lower()
    assert [b["backup_id"] for b in backups.list_backups()] == [summary["backup_id"]]
    text = archived_text(destination, summary["backup_id"])
    assert SECRET not in text and "tsenc1:" in text  # encrypted fields stay encrypted

    wipe(manager)
    assert stored_records(manager) == {} and history_rows(manager) == []
    report = backups.restore_backup(
        summary["backup_id"], dry_run=False, actor="ops", restore_history=True,
        restore_events=True,
    )  # fmt: skip
    assert report["history"] == {"archived": len(rows), "inserted": len(rows), "present": 0}
    assert report["events"] == {"archived": 3, "inserted": 3, "present": 0}
    assert report["counts"]["recreated"] == 23
    assert report["counts"]["skipped_erased"] == 1  # s-2 was erased: it stays gone
    assert report["errors"] == {}

    restored = stored_records(manager)
    assert set(restored) == set(records) - {"s-2"}
    for state_id, record in restored.items():
        before = records[state_id]
        assert record["version"] == before["version"] + 1
        assert {**record, "version": 0, "updated_at": ""} == {
            **before,
            "version": 0,
            "updated_at": "",
        }  # every other field, ciphertext included, byte for byte
    after_rows = history_rows(manager)
    assert [r for r in after_rows if r["transition"] != "restore"] == rows
    restores = [r for r in after_rows if r["transition"] == "restore"]
    assert len(restores) == 23
    for row in restores:
        assert row["actor"] == "ops"
        assert row["reason"] == f"restore from backup {summary['backup_id']}"
        assert row["old_record"] == records[row["state_id"]]
    assert deliveries(manager) == events
    assert set(audit_statuses(manager).values()) == {f"verified ({n} rows)" for n in range(2, 5)}
    assert state(manager, "s-1")["data"]["pin"] == f"{SECRET}-1"
    assert state(manager, "user-1")["status"] == "active"
    assert state(manager, "user-4", include_deleted=True)["status"] == "deleted"
    repositories = manager.get_repositories()
    assert repositories.hot.fetch("state:sess-1") is not None  # a session goes home to HOT
    assert repositories.warm.fetch("state:user-3") is not None  # its home, not COLD

    again = backups.restore_backup(summary["backup_id"], dry_run=False, mode="replace")
    assert again["counts"]["unchanged"] == 23  # restoring twice changes nothing


def test_records_lost_with_the_history_kept_continue_their_history(
    manager: StateManager, backups: BackupManager
) -> None:
    seed(manager)
    backup_id = backups.create_backup()["backup_id"]
    rows = history_rows(manager)
    wipe(manager, history=False)
    report = backups.restore_backup(backup_id, dry_run=False)
    assert report["counts"]["recreated"] == 23 and report["history"] is None
    assert [r for r in history_rows(manager) if r["transition"] != "restore"] == rows
    assert all(s.startswith("verified") for s in audit_statuses(manager).values())


def test_without_the_history_the_audit_says_what_is_missing(
    manager: StateManager, backups: BackupManager
) -> None:
    seed(manager)
    backup_id = backups.create_backup(include_history=True)["backup_id"]
    wipe(manager)
    backups.restore_backup(backup_id, dry_run=False)  # records only
    statuses = audit_statuses(manager)
    assert statuses["user-0"] == "broken at version 1: missing version"
    assert state(manager, "user-0")["version"] == 3  # versions are never reused
    report = backups.restore_backup(backup_id, dry_run=False, restore_history=True)
    assert report["history"]["inserted"] == report["history"]["archived"]
    assert report["counts"]["unchanged"] == 23
    assert all(s.startswith("verified") for s in audit_statuses(manager).values())


# --------------------------------------------------------------------------- modes


def test_modes_with_newer_older_missing_and_equal_records(
    manager: StateManager, backups: BackupManager
) -> None:
    for name in ("newer", "older", "missing", "same"):
        manager.register_state(name, "user", {"data": {"v": 1}})
    manager.update_state("older", {"data": {"v": 2}})
    older_v2 = manager.get_repositories().warm.fetch("state:older")
    assert older_v2 is not None
    manager.update_state("older", {"data": {"v": 3}})
    backup_id = backups.create_backup(include_history=True)["backup_id"]

    manager.update_state("newer", {"data": {"v": "after the backup"}})
    warm = manager.get_repositories().warm
    warm.delete("state:missing")
    manager.get_repositories().hot.delete("state:missing")
    # the WARM database put back from an older snapshot: the record is at version 2
    warm.delete("state:older")
    warm.store("state:older", older_v2.value, version=older_v2.metadata.version)
    manager.store.cache.clear()
    before = snapshot(manager)

    expected = {
        "missing": {"recreated": 1, "unchanged": 1, "skipped_present": 2},
        "overwrite-older": {"recreated": 1, "restored": 1, "unchanged": 1, "skipped_newer": 1},
        "replace": {"recreated": 1, "restored": 2, "unchanged": 1},
    }
    for mode, counts in expected.items():
        report = backups.restore_backup(backup_id, mode=mode)  # a dry run by default
        assert report["dry_run"] is True
        assert {k: v for k, v in report["counts"].items() if v} == counts, mode
    assert snapshot(manager) == before  # dry runs changed nothing

    backups.restore_backup(backup_id, mode="missing", dry_run=False, actor="ops")
    assert state(manager, "missing")["data"] == {"v": 1}
    assert state(manager, "newer")["data"] == {"v": "after the backup"}
    backups.restore_backup(backup_id, mode="overwrite-older", dry_run=False)
    older = state(manager, "older")
    assert (older["data"], older["version"]) == ({"v": 3}, 4)
    assert state(manager, "newer")["data"] == {"v": "after the backup"}
    backups.restore_backup(backup_id, mode="replace", dry_run=False)
    newer = state(manager, "newer")
    assert (newer["data"], newer["version"]) == ({"v": 1}, 3)
    history = manager.get_state_history("newer")
    assert [h["transition"] for h in history] == ["create", "update", "restore"]
    assert history[-1]["old_record"]["data"] == {"v": "after the backup"}
    assert all(s.startswith("verified") for s in audit_statuses(manager).values())


def test_a_restore_only_of_chosen_tiers_and_unknown_types(
    store: Any, manager: StateManager, backups: BackupManager, destination: str
) -> None:
    seed(manager)
    backup_id = backups.create_backup()["backup_id"]
    wipe(manager)
    report = backups.restore_backup(backup_id, tiers=["hot"], dry_run=False)
    assert report["counts"]["recreated"] == 1 and set(stored_records(manager)) == {"sess-1"}

    other = StateManager.create(store=store, close_store=False, encryption_keys=[MASTER_KEY])
    try:  # an app that does not register 'secret'
        report = BackupManager(manager=other, destination=destination).restore_backup(backup_id)
        assert report["counts"]["skipped_unknown_type"] == 3
    finally:
        other.close()


# --------------------------------------------------------------------------- damage


def test_a_corrupt_backup_is_refused_naming_file_and_offset(
    manager: StateManager, backups: BackupManager, destination: str
) -> None:
    seed(manager)
    backup_id = backups.create_backup()["backup_id"]
    where = open_destination(destination)
    name = "records-000001.jsonl.gz"
    data = bytearray(where.read(backup_id, name) or b"")
    data[len(data) // 2] ^= 0x01
    where.write(backup_id, name, bytes(data))
    report = backups.verify_backup(backup_id)
    assert not report["ok"]
    problem = report["problems"][0]
    assert problem["file"] == name and problem["offset"] <= len(data) // 2
    wipe(manager, history=False)
    before = snapshot(manager)
    with pytest.raises(ArchiveCorruptError) as caught:
        backups.restore_backup(backup_id, dry_run=False)
    assert (caught.value.file, caught.value.offset) == (name, problem["offset"])
    assert snapshot(manager) == before  # refused before anything was written


def test_an_unfinished_backup_is_not_listed(
    manager: StateManager,
    backups: BackupManager,
    destination: str,
    monkeypatch: Any,
    request: pytest.FixtureRequest,
) -> None:
    seed(manager)
    done = backups.create_backup()["backup_id"]
    warm = manager.get_repositories().warm
    calls = []
    real = warm.fetch_many

    def failing(keys: Any) -> Any:
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("the database went away mid-backup")
        return real(keys)

    monkeypatch.setattr(warm, "fetch_many", failing)
    with pytest.raises(RuntimeError):
        backups.create_backup()
    monkeypatch.undo()
    assert [b["backup_id"] for b in backups.list_backups()] == [done]
    assert list(open_destination(destination).archive_ids()) == [done]  # cleaned up

    where = open_destination(destination)  # a crash that left chunks but no manifest
    if isinstance(where, LocalDestination):
        (where.root / done / MANIFEST).unlink()
    else:
        assert isinstance(where, S3Destination)
        s3_client(request.getfixturevalue("s3_endpoint_url")).delete_object(
            Bucket=where.bucket, Key=f"{where.prefix}{done}/{MANIFEST}"
        )
    assert backups.list_backups() == []
    assert list(where.archive_ids()) == [done]
    with pytest.raises(ArchiveNotFoundError, match="without its manifest"):
        backups.restore_backup(done)


# --------------------------------------------------------------------------- incremental


def test_incremental_backups_hold_the_changes_and_restore_with_their_chain(
    manager: StateManager, backups: BackupManager, monkeypatch: Any
) -> None:
    monkeypatch.setattr(backup_module, "INCREMENTAL_OVERLAP_SECONDS", 0)
    seed(manager)
    full = backups.create_backup(include_history=True)
    time.sleep(0.01)
    manager.update_state("user-0", {"data": {"n": "changed"}})
    manager.delete_state("user-5")
    manager.register_state("late", "user", {"data": {"n": 99}})
    first = backups.create_backup(include_history=True, incremental=True)
    assert first["parent_id"] == full["backup_id"] and first["incremental"]
    assert first["counts"]["records"] == 3 and first["counts"]["history"] == 3
    time.sleep(0.01)
    manager.update_state("late", {"data": {"n": 100}})
    second = backups.create_backup(include_history=True, incremental=first["backup_id"])
    assert second["counts"]["records"] == 1
    with pytest.raises(InvalidRequestError, match="True, False or a backup id"):
        backups.create_backup(incremental=3)  # type: ignore[arg-type]

    expected = stored_records(manager)
    rows = history_rows(manager)
    wipe(manager)
    report = backups.restore_backup(second["backup_id"], dry_run=False, restore_history=True)
    assert report["chain"] == [full["backup_id"], first["backup_id"], second["backup_id"]]
    assert report["history"]["inserted"] == len(rows)
    restored = stored_records(manager)
    assert set(restored) == set(expected) - {"s-2"}
    assert restored["late"]["data"] == {"n": 100} and restored["late"]["version"] == 3
    assert restored["user-0"]["data"] == {"n": "changed"}
    assert restored["user-5"]["status"] == "deleted"
    assert all(s.startswith("verified") for s in audit_statuses(manager).values())

    backups.delete_backup(first["backup_id"])
    with pytest.raises(ArchiveNotFoundError, match="builds on"):
        backups.restore_backup(second["backup_id"])
    assert not backups.verify_backup(second["backup_id"])["ok"]


# --------------------------------------------------------------------------- verification


def test_verify_checks_the_keys_and_reports_erased_states(
    store: Any, manager: StateManager, backups: BackupManager, destination: str
) -> None:
    seed(manager)
    backup_id = backups.create_backup()["backup_id"]
    report = backups.verify_backup(backup_id)
    assert report["ok"], report["problems"]
    assert report["records"] == 24
    encryption = report["encryption"]
    assert (encryption["states"], encryption["readable"], encryption["erased"]) == (3, 2, 1)
    assert encryption["erased_ids"] == ["s-2"]

    t = manager.data_keys.table  # type: ignore[union-attr]
    with manager.history.engine.begin() as connection:  # a data key lost
        connection.execute(t.delete().where(t.c.state_id == "s-0"))
    report = backups.verify_backup(backup_id)
    assert not report["ok"] and report["encryption"]["missing_key_ids"] == ["s-0"]
    assert "no data key" in report["problems"][0]["message"]

    other = new_manager(store, master_key=generate_master_key())
    try:  # other master keys: the data keys do not unwrap
        report = BackupManager(manager=other, destination=destination).verify_backup(backup_id)
        assert not report["ok"] and report["encryption"]["unreadable_ids"] == ["s-1"]
    finally:
        other.close()


def test_states_written_before_their_type_encrypted_fields_are_no_problem(
    store: Any, manager: StateManager, backups: BackupManager
) -> None:
    """A type that starts encrypting a field: its older states stay plaintext, with no
    data key, until written again. Verify counts them as plaintext (not "no data key"),
    and a restore does not warn that they come back without one."""
    manager.register_state_type("member")  # encrypts nothing yet
    for number in range(3):
        manager.register_state(f"m-{number}", "member", {"data": {"pin": f"{number}"}})
    manager.register_state_type("member", encrypted_fields=["data.pin"])
    manager.update_state("m-0", {"data": {"pin": "sealed now"}})  # gets a data key
    backup_id = backups.create_backup()["backup_id"]

    report = backups.verify_backup(backup_id)
    assert report["ok"], report["problems"]
    encryption = report["encryption"]
    assert (encryption["states"], encryption["readable"], encryption["plaintext"]) == (1, 1, 2)

    wipe(manager, history=False)
    restored = backups.restore_backup(backup_id, dry_run=False)
    assert restored["missing_keys"] == 0 and not restored["errors"]
    assert [state(manager, f"m-{n}")["data"]["pin"] for n in range(3)] == ["sealed now", "1", "2"]


def test_bad_arguments_are_refused(manager: StateManager, tmp_path: Path) -> None:
    backups = BackupManager(manager=manager, destination=tmp_path)
    with pytest.raises(InvalidRequestError, match="Unknown tier 'lukewarm'"):
        backups.create_backup(tiers=["lukewarm"])
    with pytest.raises(InvalidStateTypeError):
        backups.create_backup(types=["nope"])
    with pytest.raises(InvalidRequestError, match=r"No backup in .* to build an incremental"):
        backups.create_backup(incremental=True)
    with pytest.raises(InvalidRequestError, match="Restore mode 'all'"):
        backups.restore_backup("x", mode="all")
    with pytest.raises(ConfigurationError, match="needs the repositories"):
        BackupManager(destination=tmp_path)
    records_only = BackupManager(manager.get_repositories(), destination=tmp_path)
    with pytest.raises(ConfigurationError, match="needs the manager"):
        records_only.create_backup(include_history=True)
    with pytest.raises(ConfigurationError, match="needs the manager"):
        records_only.restore_backup("x")
    with pytest.raises(InvalidRequestError, match="at most 5000"):
        manager.restore_records([{"state_id": f"x{i}", "name": "", "type": "user",
                                  "status": "created", "data": {}, "metadata": {},
                                  "version": 1} for i in range(5001)])  # fmt: skip


def test_each_call_checks_its_action_when_acting_as_a_role(
    manager: StateManager, backups: BackupManager
) -> None:
    from flask_tiered_state.roles import RoleBasedAccess

    manager.register_state("u1", "user")
    manager.set_roles(
        RoleBasedAccess(
            {"support": ["backups.list", "backups.verify"], "ops": ["*"]},
            identity="header:X-Roles",
        )
    )
    with manager.acting_as("ops"):
        backup_id = backups.create_backup()["backup_id"]
    with manager.acting_as("support"):
        assert backups.list_backups()[0]["backup_id"] == backup_id
        assert backups.verify_backup(backup_id)["ok"]
        with pytest.raises(AccessDeniedError, match=r"backups\.create"):
            backups.create_backup()
        with pytest.raises(AccessDeniedError, match=r"backups\.restore"):
            backups.restore_backup(backup_id)
    with manager.acting_as("ops", actor="alice"):
        manager.get_repositories().warm.delete("state:u1")
        manager.store.cache.clear()
        backups.restore_backup(backup_id, dry_run=False)
    assert manager.get_state_history("u1")[-1]["actor"] == "alice"


# --------------------------------------------------------------------------- memory


def test_memory_stays_flat_as_the_states_grow(tmp_path: Path) -> None:
    """Peak memory (tracemalloc) of a backup of 4x the states is about the same."""
    peaks = []
    for count in (1000, 4000):
        store = build_test_store("embedded", None, tmp_path / str(count))  # type: ignore[arg-type]
        manager = StateManager.create(store=store)
        try:
            items = {f"u{i:06d}": {"type": "user", "data": {"n": i, "pad": "x" * 200}}
                     for i in range(count)}  # fmt: skip
            manager.batch_set_state(items)
            backups = BackupManager(manager=manager, destination=tmp_path / f"b{count}",
                                    chunk_keys=250, chunk_items=500)  # fmt: skip
            tracemalloc.start()
            summary = backups.create_backup()
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            assert summary["counts"]["records"] == count
        finally:
            manager.close()
    assert peaks[1] < peaks[0] * 1.5, peaks


# --------------------------------------------------------------------------- the commands


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = Flask("backup_cli_app", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, TIERED_STATE_ENCRYPTION_KEYS=[MASTER_KEY],
                      TIERED_STATE_AUDIT_KEYS=[AUDIT_KEY])  # fmt: skip
    TieredState(app)
    yield app
    get_app_state(app).close()


def test_the_backup_commands(app: Flask) -> None:
    manager = get_app_state(app).manager
    manager.register_state_type("secret", encrypted_fields=["data.pin"])
    seed(manager)
    runner = app.test_cli_runner()

    created = runner.invoke(args=["state", "backup", "create", "--history", "--events"])
    assert created.exit_code == 0, created.output
    assert "records (hot 1, warm 22, cold 1)" in created.stdout
    assert "Backing up records" in created.stderr  # the progress bar
    listed = json.loads(runner.invoke(args=["state", "backup", "list", "--json"]).stdout)
    backup_id = listed[0]["backup_id"]
    assert listed[0]["sections"] == {
        "records": 24,
        "history": 47,
        "history_archive": 0,
        "events": 3,
    }
    assert (Path(app.instance_path) / "backups" / backup_id / MANIFEST).exists()
    table = runner.invoke(args=["state", "backup", "list"]).stdout
    assert backup_id in table and "full" in table

    verified = runner.invoke(args=["state", "backup", "verify", backup_id])
    assert verified.exit_code == 0, verified.output
    assert "OK, 24 records checked; 2 of 3 encrypted states readable, 1 erased" in verified.stdout

    wipe(manager)
    dry = runner.invoke(args=["state", "backup", "restore", backup_id])
    assert dry.exit_code == 0, dry.output
    assert "dry run, nothing changed" in dry.stdout and stored_records(manager) == {}
    applied = runner.invoke(args=["state", "backup", "restore", backup_id, "--history",
                                  "--events", "--actor", "ops", "--apply", "--json"])  # fmt: skip
    assert applied.exit_code == 0, applied.output
    report = json.loads(applied.stdout)
    assert report["counts"]["recreated"] == 23 and report["dry_run"] is False
    assert state(manager, "s-0")["data"]["pin"] == f"{SECRET}-0"

    missing = runner.invoke(args=["state", "backup", "verify", "20990101T000000000000Z-000000"])
    assert missing.exit_code == 1 and "No complete archive" in missing.output
    bad = runner.invoke(args=["state", "backup", "list", "--from", "ftp://x/y"])
    assert bad.exit_code == 1 and "--to/--from" in bad.output


def test_history_archived_by_gc_is_backed_up_and_restored(
    manager: StateManager, backups: BackupManager
) -> None:
    from flask_tiered_state.domain.history_archive import HISTORY_KEY_PREFIX
    from flask_tiered_state.ops.retention import GarbageCollector

    manager.register_state("long", "user", {"data": {"n": 0}})
    for n in range(1, 12):
        manager.update_state("long", {"data": {"n": n}})
    GarbageCollector(manager, history={"*": {"versions": 3}}).run(dry_run=False)
    cold = manager.get_repositories().cold
    chunks = list(cold.keys(f"{HISTORY_KEY_PREFIX}long:*"))
    assert chunks, "gc archived nothing: the test needs archived rows"
    everything = manager.get_state_history("long", include_archived=True)
    assert [r["version"] for r in everything] == list(range(1, 13))

    made = backups.create_backup(include_history=True)
    wipe(manager)  # the COLD chunks too
    assert not cold.fetch_many(chunks)
    backups.restore_backup(made["backup_id"], mode="missing", dry_run=False, restore_history=True)
    restored = manager.get_state_history("long", include_archived=True)
    assert [r["version"] for r in restored][:12] == list(range(1, 13))
    assert [r["new_record"]["data"]["n"] for r in restored][:12] == list(range(12))

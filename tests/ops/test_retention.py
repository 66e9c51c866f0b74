"""Retention and ``flask state gc``: what stays in the history table, what goes to COLD
and reads back from there, on the embedded backends and on the servers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_tiered_state import TieredState, generate_master_key
from flask_tiered_state.domain import records
from flask_tiered_state.domain.audit import AuditVerifier
from flask_tiered_state.domain.dispatcher import EventDispatcher
from flask_tiered_state.domain.history_archive import (
    HISTORY_KEY_PREFIX,
    chunk_key,
    decode_chunk,
    encode_chunk,
)
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import ConfigurationError, IntegrityError, InvalidRequestError
from flask_tiered_state.extension import get_app_state
from flask_tiered_state.ops.retention import (
    BackupPolicy,
    GarbageCollector,
    HistoryPolicy,
    backups_to_remove,
)
from flask_tiered_state.roles import RoleBasedAccess
from flask_tiered_state.storage.base import StateCategory, WriteRequest
from tests.conftest import SERVICES, services_config
from tests.domain.conftest import SERVERS, build_test_store

KEY = "retention-audit-key-" + "r" * 32
DAY = 86400.0


@pytest.fixture(params=["embedded", SERVERS])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    built = build_test_store(request.param, request, tmp_path)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def manager(store: Any) -> Iterator[StateManager]:
    created = StateManager.create(store=store, audit_keys=KEY)
    try:
        yield created
    finally:
        created.close()


class Clock:
    """The time the records (and so the history rows) are stamped with."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> str:
        return self.now.isoformat(timespec="microseconds")

    def days_ago(self, days: float) -> None:
        self.now = datetime.now(timezone.utc) - timedelta(days=days)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    stamp = Clock()
    monkeypatch.setattr(records, "utc_now_iso", stamp)
    return stamp


def write(manager: StateManager, state_id: str, versions: int, state_type: str = "user") -> None:
    """A state with ``versions`` versions (a registration, then updates)."""
    manager.register_state(state_id, state_type, {"data": {"n": 1}})
    for n in range(2, versions + 1):
        manager.update_state(state_id, {"data": {"n": n, "pad": "x" * (n % 7)}})


def live(manager: StateManager, state_id: str) -> list[int]:
    return [row["version"] for row in manager.get_state_history(state_id)]


def cold_keys(manager: StateManager) -> list[str]:
    return sorted(manager.get_repositories().cold.keys(HISTORY_KEY_PREFIX + "*"))


def gc(manager: StateManager, *, apply: bool = True, **options: Any) -> Any:
    return GarbageCollector(manager, **options).run(dry_run=not apply)


def plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "archived"} for row in rows]


def verify(manager: StateManager) -> list[str]:
    return [a.summary() for a in AuditVerifier.for_manager(manager).verify()]


# --------------------------------------------------------------------------- what stays


def test_keep_n_versions_keeps_exactly_them_and_version_1(manager: StateManager) -> None:
    write(manager, "long", 30)
    write(manager, "short", 4)
    write(manager, "flag", 20, "feature")  # no policy for features: every row stays
    report = gc(manager, history={"user": {"versions": 5}})
    assert live(manager, "long") == [1, 26, 27, 28, 29, 30]
    assert live(manager, "short") == [1, 2, 3, 4]
    assert live(manager, "flag") == list(range(1, 21))
    user = report.history["user"]
    assert (user.states, user.states_archived, user.rows_archived, user.chunks) == (2, 1, 24, 1)
    assert report.history["feature"].policy is None and report.history["feature"].rows_archived == 0
    assert cold_keys(manager) == [chunk_key("long", 25)]


def test_the_star_policy_covers_the_types_not_named(manager: StateManager) -> None:
    write(manager, "u", 10)
    write(manager, "f", 10, "feature")
    gc(manager, history={"user": {"versions": 8}, "*": {"versions": 2}})
    assert live(manager, "u") == [1, 3, 4, 5, 6, 7, 8, 9, 10]
    assert live(manager, "f") == [1, 9, 10]


def test_keep_d_days_keeps_the_versions_of_those_days(manager: StateManager, clock: Clock) -> None:
    for version in range(1, 13):
        clock.days_ago(50 - version)  # versions 1-10: 49 to 40 days ago; 11: 39, 12: 38
        if version == 1:
            manager.register_state("s", "user")
        else:
            manager.update_state("s", {"data": {"v": version}})
    for version in range(13, 16):
        clock.days_ago(2)
        manager.update_state("s", {"data": {"v": version}})
    report = gc(manager, history={"user": {"days": 30}}, apply=False)
    assert report.history["user"].rows_archived == 11  # 2 to 12
    gc(manager, history={"user": {"days": 30}})
    assert live(manager, "s") == [1, 13, 14, 15]


def test_versions_and_days_keep_what_either_keeps(manager: StateManager, clock: Clock) -> None:
    clock.days_ago(100)
    write(manager, "s", 10)
    clock.days_ago(1)
    manager.update_state("s", {"data": {"v": 11}})
    manager.update_state("s", {"data": {"v": 12}})
    gc(manager, history={"user": {"versions": 5, "days": 30}})
    assert live(manager, "s") == [1, 8, 9, 10, 11, 12]  # the newest 5 (the 2 recent among them)
    gc(manager, history={"user": {"versions": 1, "days": 30}})
    assert live(manager, "s") == [1, 11, 12]  # the 30 days keep two


def test_the_last_version_always_stays(manager: StateManager, clock: Clock) -> None:
    clock.days_ago(400)
    write(manager, "old", 6)
    gc(manager, history={"user": {"days": 1}})
    assert live(manager, "old") == [1, 6]


def test_chunks_are_bounded_and_read_back_in_order(manager: StateManager) -> None:
    write(manager, "s", 40)
    before = manager.get_state_history("s")
    report = gc(manager, history={"user": {"versions": 3}}, chunk_rows=7)
    assert report.history["user"].chunks == 6  # versions 2-37: 36 rows, 7 a chunk
    assert cold_keys(manager) == [chunk_key("s", v) for v in (8, 15, 22, 29, 36, 37)]
    assert plain(manager.get_state_history("s", include_archived=True)) == before
    report = gc(manager, history={"user": {"versions": 3}}, chunk_bytes=1)  # a row a chunk
    assert report.rows_archived == 0


# --------------------------------------------------------------------------- reading back


def test_archived_rows_read_back_identical_with_include_archived(manager: StateManager) -> None:
    write(manager, "s", 25)
    manager.update_state("s", None, "suspend", actor="ops", reason="fraud check")
    before = manager.get_state_history("s")
    gc(manager, history={"*": {"versions": 4}})
    assert len(manager.get_state_history("s")) == 5
    after = manager.get_state_history("s", include_archived=True)
    assert plain(after) == before
    assert [row.get("archived", False) for row in after] == [False] + [True] * 21 + [False] * 4
    assert "seal" not in after[3]
    assert manager.get_state_history("nobody", include_archived=True) == []
    with pytest.raises(InvalidRequestError, match="include_archived must be True or False"):
        manager.get_state_history("s", include_archived="yes")  # type: ignore[arg-type]


def test_as_of_reads_each_version_live_or_archived(manager: StateManager, clock: Clock) -> None:
    start = datetime.now(timezone.utc) - timedelta(days=30)
    for version in range(1, 21):
        clock.now = start + timedelta(hours=version)
        if version == 1:
            manager.register_state("s", "user", {"data": {"v": 1}})
        else:
            manager.update_state("s", {"data": {"v": version}})
    clock.now = start + timedelta(hours=21)
    manager.delete_state("s")
    gc(manager, history={"user": {"versions": 3}})
    assert live(manager, "s") == [1, 19, 20, 21]
    for version in range(1, 21):
        moment = start + timedelta(hours=version, minutes=30)
        found = manager.get_state("s", as_of=moment)
        assert found is not None and (found["version"], found["data"]) == (version, {"v": version})
        exact = manager.get_state("s", as_of=start + timedelta(hours=version))
        assert exact is not None and exact["version"] == version
    assert manager.get_state("s", as_of=start) is None  # before it existed
    later = start + timedelta(hours=22)
    assert manager.get_state("s", as_of=later) is None  # deleted then
    tombstone = manager.get_state("s", as_of=later, include_deleted=True)
    assert tombstone is not None and tombstone["status"] == "deleted"
    with pytest.raises(InvalidRequestError, match="timezone-aware"):
        manager.get_state("s", as_of=datetime(2026, 1, 1))


def test_rollback_and_diff_reach_archived_versions(manager: StateManager) -> None:
    write(manager, "s", 12)
    gc(manager, history={"user": {"versions": 2}})
    assert manager.diff_versions("s", 3, 5)["changed"]["data.n"] == {"from": 3, "to": 5}
    restored = manager.rollback_state("s", 4)
    assert restored["version"] == 13 and restored["data"] == {"n": 4, "pad": "xxxx"}


def test_encrypted_fields_stay_sealed_in_cold_and_open_on_reading(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = build_test_store("embedded", request, tmp_path)
    manager = StateManager.create(
        store=store, encryption_keys=[generate_master_key()], audit_keys=KEY
    )
    try:
        manager.register_state_type("card", encrypted_fields=["data.number"])
        manager.register_state("c", "card", {"data": {"number": "4111-0"}})
        for n in range(1, 8):
            manager.update_state("c", {"data": {"number": f"4111-{n}"}})
        before = manager.get_state_history("c")
        gc(manager, history={"card": {"versions": 2}})
        [key] = cold_keys(manager)
        raw = manager.get_repositories().cold.fetch(key)
        assert raw is not None
        chunk = decode_chunk(key, raw.value)
        assert all(r["new_record"]["data"]["number"].startswith("tsenc1:") for r in chunk.rows)
        assert plain(manager.get_state_history("c", include_archived=True)) == before
        at = datetime.fromisoformat(before[3]["created_at"])
        found = manager.get_state("c", as_of=at)
        assert found is not None and found["data"]["number"] == "4111-3"
        assert verify(manager) == ["verified (8 rows)"]
    finally:
        manager.close()


# --------------------------------------------------------------------------- the audit


def test_audit_verify_passes_after_gc_and_sees_through_the_archive(manager: StateManager) -> None:
    write(manager, "a", 30)
    write(manager, "b", 3)
    gc(manager, history={"*": {"versions": 2}}, chunk_rows=10)
    assert verify(manager) == ["verified (30 rows)", "verified (3 rows)"]
    assert AuditVerifier.for_manager(manager).verify_state("a").summary() == "verified (30 rows)"
    cold = manager.get_repositories().cold
    key = chunk_key("a", 21)
    chunk = decode_chunk(key, cold.fetch(key).value)  # type: ignore[union-attr]
    chunk.rows[4]["actor"] = "mallory"  # a row changed in the archive
    cold.store(key, encode_chunk("a", chunk.rows))
    audit = AuditVerifier.for_manager(manager).verify_state("a")
    assert (audit.status, audit.version, audit.what) == ("broken", 16, ["actor"])
    cold.delete(key)  # a chunk lost
    audit = AuditVerifier.for_manager(manager).verify_state("a")
    assert (audit.status, audit.version) == ("broken", 2)
    assert audit.what == ["archive", "missing version"]
    assert "no chunk 'history:a:0000000021'" in audit.problems[0].detail


def test_a_damaged_chunk_is_refused_when_read(manager: StateManager) -> None:
    write(manager, "a", 10)
    gc(manager, history={"*": {"versions": 2}})
    [key] = cold_keys(manager)
    value = json.loads(manager.get_repositories().cold.fetch(key).value)  # type: ignore[union-attr]
    value["data"] = value["data"][:-8] + "AAAAAAA="
    manager.get_repositories().cold.store(key, json.dumps(value))
    with pytest.raises(IntegrityError, match="damaged"):
        manager.get_state_history("a", include_archived=True)
    assert AuditVerifier.for_manager(manager).verify_state("a").what[0] == "archive"


# --------------------------------------------------------------------------- what is never deleted


def test_rows_with_undelivered_events_stay_until_delivered(manager: StateManager) -> None:
    delivered: list[int] = []

    def downstream(state_id: str, old: Any, new: dict[str, Any], transition: Any, **_: Any) -> None:
        delivered.append(new["version"])

    write(manager, "s", 10)
    manager.register_callback("user_updated", downstream, asynchronous=True, key="downstream")
    for n in range(11, 16):  # versions 11-15 have pending deliveries
        manager.update_state("s", {"data": {"n": n}})
    write(manager, "t", 16)  # so does every update of t
    manager.unregister_callback("user_updated", downstream)
    for n in range(16, 21):
        manager.update_state("s", {"data": {"n": n}})
    report = gc(manager, history={"user": {"versions": 2}})
    assert live(manager, "s") == [1, *range(11, 21)]
    assert live(manager, "t") == list(range(1, 17))
    assert report.history["user"].rows_held == 8 + 13  # s: 11-18, t: 2-14
    manager.register_callback("user_updated", downstream, asynchronous=True, key="downstream")
    with EventDispatcher(manager) as dispatcher:
        while dispatcher.run_once().delivered:
            pass
    assert sorted(delivered) == sorted([*range(11, 16), *range(2, 17)])
    gc(manager, history={"user": {"versions": 2}})
    assert live(manager, "s") == [1, 19, 20]
    assert live(manager, "t") == [1, 15, 16]
    assert verify(manager) == ["verified (20 rows)", "verified (16 rows)"]


def test_delivered_events_and_finished_timers_are_pruned(manager: StateManager) -> None:
    manager.register_callback("user_updated", lambda *a, **k: None, asynchronous=True, key="k")
    write(manager, "s", 4)
    with EventDispatcher(manager) as dispatcher:
        while dispatcher.run_once().delivered:
            pass
    assert len(manager.get_events("delivered")) == 3
    later = time.time() + 8 * DAY
    report = GarbageCollector(manager, event_retention_seconds=7 * DAY).run()
    assert (report.deliveries_pruned, report.timers_pruned) == (0, 0)
    collector = GarbageCollector(manager, event_retention_seconds=7 * DAY, clock=lambda: later)
    assert collector.run().deliveries_pruned == 3  # a dry run counts
    assert len(manager.get_events("delivered")) == 3
    assert collector.run(dry_run=False).deliveries_pruned == 3
    assert manager.get_events("delivered") == []


# --------------------------------------------------------------------------- dry runs and reruns


def snapshot(manager: StateManager) -> tuple[Any, ...]:
    t = manager.history.table
    with manager.history.engine.connect() as conn:
        rows = conn.execute(sa.select(t).order_by(t.c.id)).all()
    cold = manager.get_repositories().cold
    return tuple(rows), {k: cold.fetch(k).value for k in cold_keys(manager)}  # type: ignore[union-attr]


def test_a_dry_run_changes_nothing_and_reports_what_apply_does(manager: StateManager) -> None:
    write(manager, "a", 20)
    write(manager, "b", 9)
    before = snapshot(manager)
    planned = gc(manager, apply=False, history={"user": {"versions": 3}})
    assert snapshot(manager) == before
    applied = gc(manager, history={"user": {"versions": 3}})
    for counts in (planned, applied):
        user = counts.history["user"]
        assert (user.states, user.states_archived, user.rows_archived) == (2, 2, 16 + 5)
    assert planned.history["user"].chunks == 0 and applied.history["user"].chunks == 2


def test_a_rerun_is_idempotent(manager: StateManager) -> None:
    write(manager, "a", 20)
    gc(manager, history={"user": {"versions": 3}})
    first = snapshot(manager)
    again = gc(manager, history={"user": {"versions": 3}})
    assert again.rows_archived == 0 and snapshot(manager) == first
    for n in range(21, 26):  # more changes: the next run archives the next ones
        manager.update_state("a", {"data": {"n": n}})
    gc(manager, history={"user": {"versions": 3}})
    assert live(manager, "a") == [1, 23, 24, 25]
    assert cold_keys(manager) == [chunk_key("a", 17), chunk_key("a", 22)]
    history = manager.get_state_history("a", include_archived=True)
    assert [row["version"] for row in history] == list(range(1, 26))
    assert verify(manager) == ["verified (25 rows)"]


def test_rows_changed_during_the_run_stay_for_the_next(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Rows sealed by ``audit seal`` while gc archives them are left in the table (the
    chunk written holds their unsealed form) and go on the next run."""
    store = build_test_store("embedded", request, tmp_path)
    unsealed = StateManager.create(store=store, close_store=False)
    write(unsealed, "a", 12)
    manager = StateManager.create(store=store, audit_keys=KEY)
    try:
        collector = GarbageCollector(manager, history={"user": {"versions": 2}})
        cold = collector.cold
        original = cold.store_many

        def sealing_first(items: Any) -> Any:
            AuditVerifier.for_manager(manager).seal_unsealed()
            return original(items)

        cold.store_many = sealing_first  # type: ignore[method-assign]
        report = collector.run(dry_run=False)
        del cold.store_many
        counts = report.history["user"]
        assert (counts.rows_archived, counts.rows_skipped) == (0, 9)
        assert live(manager, "a") == list(range(1, 13))
        assert verify(manager) == ["verified (12 rows)"]
        assert collector.run(dry_run=False).rows_archived == 9
        assert verify(manager) == ["verified (12 rows)"]
    finally:
        manager.close()
        unsealed.close()


def test_a_hole_in_the_history_is_left_alone(manager: StateManager) -> None:
    write(manager, "a", 12)
    t = manager.history.table
    with manager.history.engine.begin() as conn:
        conn.execute(t.delete().where(t.c.state_id == "a", t.c.version == 5))
    report = gc(manager, history={"user": {"versions": 2}})
    assert report.history["user"].rows_skipped == 9  # versions 2-10, with 5 missing
    assert report.rows_archived == 0 and cold_keys(manager) == []


def test_a_chunk_that_does_not_read_back_deletes_nothing(manager: StateManager) -> None:
    write(manager, "a", 8)
    collector = GarbageCollector(manager, history={"user": {"versions": 2}})
    original = collector.cold.store_many

    def lossy(items: Any) -> Any:
        stored = original([WriteRequest(i.key, i.value[:-10] + '"}', version=1) for i in items])
        return stored

    collector.cold.store_many = lossy  # type: ignore[method-assign]
    try:
        with pytest.raises(IntegrityError, match="did not read back as written"):
            collector.run(dry_run=False)
    finally:
        del collector.cold.store_many
    assert live(manager, "a") == list(range(1, 9))


# --------------------------------------------------------------------------- policies and backups


def test_policies_are_checked(manager: StateManager) -> None:
    with pytest.raises(ConfigurationError, match="names the type 'users', which is not"):
        GarbageCollector(manager, history={"users": {"versions": 3}})
    with pytest.raises(ConfigurationError, match="an integer >= 1"):
        GarbageCollector(manager, history={"user": {"versions": 0}})
    with pytest.raises(InvalidRequestError, match="dry_run must be True or False"):
        GarbageCollector(manager).run(dry_run="no")  # type: ignore[arg-type]
    policy = GarbageCollector(manager, history={"*": HistoryPolicy(days=2.5)}).policy_for("user")
    assert policy is not None and policy.describe() == "2.5 days"


def manifest(backup_id: str, days_ago: float, now: float, **extra: Any) -> dict[str, Any]:
    created = datetime.fromtimestamp(now - days_ago * DAY, timezone.utc).isoformat()
    return {"archive_id": backup_id, "created_at": created, "kind": "backup", **extra}


def test_backup_retention_keeps_count_days_the_newest_and_bases() -> None:
    now = time.time()
    backups = [manifest(f"b{i}", i * 2, now) for i in range(10)]  # b0 newest, every 2 days
    assert backups_to_remove(backups, BackupPolicy(count=3), now) == [f"b{i}" for i in range(3, 10)]
    assert backups_to_remove(backups, BackupPolicy(days=5), now) == [f"b{i}" for i in range(3, 10)]
    both = BackupPolicy(count=5, days=3)
    assert backups_to_remove(backups, both, now) == [f"b{i}" for i in range(5, 10)]
    old = [manifest("x", 400, now), manifest("y", 500, now)]
    assert backups_to_remove(old, BackupPolicy(days=1), now) == ["y"]  # the newest stays
    chain = [
        manifest("inc2", 1, now, base_id="inc1"),
        manifest("inc1", 10, now, base_id="full"),
        manifest("full", 20, now),
        manifest("older", 30, now),
    ]
    assert backups_to_remove(chain, BackupPolicy(count=1), now) == ["older"]


class Catalog:
    def __init__(self, manifests: list[dict[str, Any]]) -> None:
        self.manifests = manifests
        self.deleted: list[str] = []

    def list_backups(self) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["archive_id"] not in self.deleted]

    def delete_backup(self, backup_id: str) -> None:
        self.deleted.append(backup_id)


def test_gc_removes_the_backups_the_policy_does_not_keep(manager: StateManager) -> None:
    now = time.time()
    catalog = Catalog([manifest(f"b{i}", i, now) for i in range(5)])
    collector = GarbageCollector(manager, backups=catalog, backup_policy={"count": 2})
    planned = collector.run()
    assert (planned.backups_removed, planned.backups_kept, catalog.deleted) == (
        ["b2", "b3", "b4"], 2, []
    )  # fmt: skip
    assert collector.run(dry_run=False).backups_removed == ["b2", "b3", "b4"]
    assert catalog.deleted == ["b2", "b3", "b4"]
    assert collector.run(dry_run=False).backups_removed == []


# --------------------------------------------------------------------------- flask state gc


@pytest.fixture(params=["embedded", SERVICES])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    config = services_config(request) if request.param == "services" else {}
    app = Flask("retention_app", instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        TIERED_STATE_AUDIT_KEYS=[KEY],
        TIERED_STATE_HISTORY_RETENTION={"user": {"versions": 3}},
        TIERED_STATE_ACCESS_CONTROL=RoleBasedAccess(
            {"ops": ["gc", "audit.verify"], "viewer": ["states.read"]}, identity="header:X-Roles"
        ),
        **config,
    )
    TieredState(app)
    yield app
    get_app_state(app).close()


def invoke(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["state", *args])


def test_flask_state_gc_is_a_dry_run_unless_applied(app: Flask) -> None:
    manager = get_app_state(app).manager
    write(manager, "a", 10)
    write(manager, "f", 10, "feature")
    result = invoke(app, "gc")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "gc: dry run, nothing changed (--apply applies it)."
    assert lines[1].split() == ["type", "keeps", "states", "archived", "rows", "held",
                                "skipped", "chunks", "bytes"]  # fmt: skip
    assert lines[2].split() == ["feature", "-", "1", "0", "0", "0", "0", "-", "-"]
    assert lines[3].split() == ["user", "3", "versions", "1", "1", "6", "0", "0", "-", "-"]
    assert lines[4] == "History: 6 rows of 1 state would be archived to the COLD tier."
    assert lines[5] == (
        "Events: 0 delivered deliveries and 0 finished timers older than 7 days would be pruned."
    )
    assert "Planning 2 states" in result.stderr
    assert live(manager, "a") == list(range(1, 11))
    result = invoke(app, "gc", "--apply", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dry_run"] is False and report["rows_archived"] == 6
    assert report["history"]["user"]["chunks"] == 1
    assert live(manager, "a") == [1, 8, 9, 10]
    assert invoke(app, "audit", "verify").exit_code == 0
    again = invoke(app, "gc", "--apply")
    assert "History: nothing to archive." in again.stdout


def test_flask_state_gc_checks_the_role(app: Flask) -> None:
    refused = invoke(app, "--as", "viewer", "gc")
    assert refused.exit_code == 1
    assert "Role 'viewer' may not do 'gc'" in refused.output
    assert invoke(app, "--as", "ops", "gc", "--apply").exit_code == 0


def test_flask_state_gc_refuses_a_policy_of_an_unknown_type(tmp_path: Path) -> None:
    app = Flask("retention_bad", instance_path=str(tmp_path / "bad"))
    app.config.update(TESTING=True, TIERED_STATE_HISTORY_RETENTION={"usr": {"days": 3}})
    TieredState(app)
    try:
        result = invoke(app, "gc")
        assert result.exit_code == 1
        assert "names the type 'usr', which is not registered" in result.output
    finally:
        get_app_state(app).close()


def test_cold_holds_the_chunks_beside_the_records(manager: StateManager) -> None:
    """Archived chunks live under their own prefix: the records' listing ignores them."""
    write(manager, "a", 6)
    manager.demote_to_cold("a")
    gc(manager, history={"user": {"versions": 2}})
    assert manager.get_keys_by_pattern("*") == ["a"]
    cold = manager.get_repositories().by_category(StateCategory.COLD)
    assert sorted(cold.keys("*")) == [chunk_key("a", 4), "state:a"]
    assert manager.get_state("a") is not None


def test_flask_state_gc_removes_old_backups_and_keeps_the_chain(tmp_path: Path) -> None:
    app = Flask("retention_backups", instance_path=str(tmp_path / "backups_app"))
    app.config.update(TESTING=True, TIERED_STATE_BACKUP_RETENTION={"count": 1})
    TieredState(app)
    try:
        manager = get_app_state(app).manager
        write(manager, "a", 3)
        made: list[str] = []
        for args in ((), (), ("--incremental",)):
            manager.update_state("a", {"data": {"n": len(made)}})
            result = invoke(app, "backup", "create", "--history", "--json", *args)
            assert result.exit_code == 0, result.output
            made.append(json.loads(result.stdout)["backup_id"])
        result = invoke(app, "gc", "--json")
        assert json.loads(result.stdout)["backups_removed"] == [made[0]]  # the base stays
        result = invoke(app, "gc", "--apply")
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[-2:] == [
            f"Backups: 1 of 3 removed: {made[0]}.",
            "(TIERED_STATE_HISTORY_RETENTION is not set: every history row stays.)",
        ]
        listed = json.loads(invoke(app, "backup", "list", "--json").stdout)
        assert [b["backup_id"] for b in listed] == [made[2], made[1]]
    finally:
        get_app_state(app).close()


def test_small_pages_plan_every_state_once(manager: StateManager) -> None:
    for n, versions in enumerate((6, 1, 9, 4, 12)):
        write(manager, f"s{n}", versions)
    report = gc(manager, history={"user": {"versions": 2}}, page_rows=3)
    user = report.history["user"]
    assert (user.states, user.states_archived, user.rows_archived) == (5, 4, 3 + 6 + 1 + 9)
    assert [live(manager, f"s{n}") for n in range(5)] == [
        [1, 5, 6], [1], [1, 8, 9], [1, 3, 4], [1, 11, 12]
    ]  # fmt: skip

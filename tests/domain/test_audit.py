"""Tamper-evident history: the record digest, the seals, writing sealed rows, verifying
the chains and sealing old rows, on the embedded backends and on the servers.

The digest must give the same value for a record as written and as PostgreSQL's jsonb
returns it (exponents and negative zeros are normalised there): checked against the real
server with hypothesis. The large random tampering run is in test_audit_tampering.py.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_tiered_state.domain.audit import (
    FIELDS,
    MIN_KEY_BYTES,
    AuditVerifier,
    HistorySealer,
    Problem,
    StateAudit,
    load_audit_keys,
    record_digest,
)
from flask_tiered_state.domain.history import HistoryRepository, define_history_table
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import ConfigurationError
from flask_tiered_state.json_codec import dumps
from flask_tiered_state.settings import TieredStateSettings
from flask_tiered_state.storage.base import StateCategory

from .conftest import build_test_store

KEY = "audit-key-" + "k" * 32
OLD_KEY = "retired-audit-key-" + "o" * 32

#: Keys to audit keys of the test module, read by :func:`audit_key_source`.
KEYS_FROM_CALLABLE = [KEY, OLD_KEY]


def audit_key_source() -> list[str]:
    """A key source given as an import string in a test below."""
    return KEYS_FROM_CALLABLE


# --------------------------------------------------------------------------- the digest


def test_the_digest_is_the_warm_checksum_of_a_plain_record() -> None:
    record = {"state_id": "a", "data": {"é": [1, 2.5, None, True]}, "version": 3}
    assert record_digest(record) == hashlib.sha256(dumps(record).encode()).hexdigest()
    assert record_digest(dict(reversed(list(record.items())))) == record_digest(record)


@pytest.mark.parametrize(
    ("written", "read_back"),
    [
        (1e16, 10**16),
        (-1e16, -(10**16)),
        (1.2345678901234568e20, 123456789012345680000),
        (1.7976931348623157e308, 17976931348623157 * 10**292),
        (-0.0, 0.0),
        ([-0.0, {"x": -0.0}], [0.0, {"x": 0.0}]),
    ],
)
def test_numbers_jsonb_rewrites_digest_as_read_back(written: Any, read_back: Any) -> None:
    assert record_digest({"v": written}) == record_digest({"v": read_back})


@pytest.mark.parametrize(
    ("one", "other"),
    [(1, 1.0), (0, 0.0), (1e15, 10**15), ("1e+16", 1e16), ("-0.0", -0.0), (0.1, 0.10000001)],
)
def test_values_jsonb_keeps_apart_digest_apart(one: Any, other: Any) -> None:
    assert record_digest({"v": one}) != record_digest({"v": other})


_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))
_NUMBERS = (
    st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([-0.0, 1e16, 1e22, 1e300, 5e-324, 1.2345678901234568e20, 1e-7, 2.5e-5])
)
_JSON = st.recursive(
    st.none() | st.booleans() | _NUMBERS | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20,
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def json_history(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HistoryRepository]:
    """A history table of its own on SQLite (JSON text) or PostgreSQL (jsonb)."""
    if request.param == "postgres":
        engine = request.getfixturevalue("postgres_engine")
    else:
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'history.db'}")
    table = define_history_table(sa.MetaData(), "audit_digest_" + uuid.uuid4().hex[:8])
    repository = HistoryRepository(engine, table)
    repository.create()
    yield repository
    table.drop(engine)
    if request.param == "sqlite":
        engine.dispose()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.dictionaries(_TEXT, _JSON, max_size=6), old=st.none() | _JSON)
def test_digests_and_seals_survive_the_databases(
    json_history: HistoryRepository, data: dict[str, Any], old: Any
) -> None:
    """A record read back from jsonb (or JSON text) has the digest of the record written,
    and the row read back has the seal the row had when written."""
    state_id = uuid.uuid4().hex
    now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    new = {"state_id": state_id, "version": 2, "status": "active", "updated_at": now,
           "data": data}  # fmt: skip
    before = None if old is None else {"status": "created", "data": old}
    row = HistoryRepository.row(
        transition="update", old=before, new=new, actor="ä", reason="", correlation_id=None
    )
    sealer = HistorySealer([KEY])
    seal = sealer.seal(row)
    with json_history.engine.begin() as connection:
        json_history.insert(connection, [row])
    [read] = json_history.for_state(state_id)
    assert record_digest(read["new_record"]) == record_digest(new)
    if before is not None:
        assert record_digest(read["old_record"]) == record_digest(before)
    assert sealer.seal(read) == seal


# --------------------------------------------------------------------------- keys and seals


def sample_row(**changes: Any) -> dict[str, Any]:
    old = {"state_id": "user-1", "status": "created", "version": 1, "data": {"plan": "free"},
           "updated_at": "2024-05-01T10:00:00.000000+00:00"}  # fmt: skip
    new = {
        **old,
        "status": "active",
        "version": 2,
        "updated_at": "2024-05-02T10:00:00.000001+00:00",
    }
    row = HistoryRepository.row(
        transition="activate", old=old, new=new, actor="ops", reason="paid",
        correlation_id="req-1", event_id="e" * 32,
    )  # fmt: skip
    row.update(changes)
    return row


def check(sealer: HistorySealer, row: dict[str, Any]) -> list[str]:
    """The ``what`` of every problem of ``row`` against its seal."""
    old = None if row["old_record"] is None else record_digest(json.loads(row["old_record"]))
    new = record_digest(json.loads(row["new_record"]))
    return [p.what for p in sealer.check(row, old, new)]


def test_a_seal_names_its_format_and_key_id_and_holds_no_key() -> None:
    sealer = HistorySealer([KEY])
    seal = sealer.seal(sample_row())
    fmt, key_id, macs = seal.split(".")
    assert (fmt, key_id) == ("ts1", sealer.key_ids[0])
    assert len(macs) == len(FIELDS) * 16  # 96 bits per field group
    for secret in (KEY, hashlib.sha256(KEY.encode()).hexdigest()):
        assert secret[:8] not in seal
    assert key_id not in hashlib.sha256(KEY.encode()).hexdigest()
    assert repr(sealer) == f"<HistorySealer key ids [{key_id!r}]>"


CHANGES: dict[str, dict[str, Any]] = {
    "transition": {"transition": "resume"},
    "statuses": {"to_status": "suspended"},
    "old_record": {"old_record": '{"status":"created","data":{"plan":"pro"}}'},
    "new_record": {"new_record": '{"status":"active","data":{"plan":"pro"}}'},
    "actor": {"actor": "mallory"},
    "reason": {"reason": "paid twice"},
    "correlation_id": {"correlation_id": None},
    "created_at": {"created_at": datetime(2024, 5, 2, 10, 0, 0, 2, tzinfo=timezone.utc)},
    "event_id": {"event_id": "f" * 32},
}


@pytest.mark.parametrize("field", list(FIELDS))
def test_a_changed_field_is_named(field: str) -> None:
    sealer = HistorySealer([KEY])
    row = sample_row()
    row["seal"] = sealer.seal(row)
    assert check(sealer, row) == []
    assert check(sealer, {**row, **CHANGES[field]}) == [field]


def test_none_and_empty_text_differ_and_times_compare_in_utc() -> None:
    sealer = HistorySealer([KEY])
    row = sample_row(reason=None)
    row["seal"] = sealer.seal(row)
    assert check(sealer, {**row, "reason": ""}) == ["reason"]
    later = row["created_at"].astimezone(timezone(timedelta(hours=2)))
    naive_utc = row["created_at"].replace(tzinfo=None)  # as SQLite returns it
    assert check(sealer, {**row, "created_at": later}) == []
    assert check(sealer, {**row, "created_at": naive_utc}) == []


@pytest.mark.parametrize("moved", [{"version": 3}, {"state_id": "user-2"}])
def test_a_seal_of_another_row_fails_every_field(moved: dict[str, Any]) -> None:
    sealer = HistorySealer([KEY])
    row = sample_row()
    row["seal"] = sealer.seal(row)
    assert check(sealer, {**row, **moved}) == ["row"]


def test_rotated_keys_verify_old_seals_and_seal_with_the_newest() -> None:
    old_sealer = HistorySealer([OLD_KEY])
    row = sample_row()
    row["seal"] = old_sealer.seal(row)
    rotated = HistorySealer([KEY, OLD_KEY])
    assert check(rotated, row) == []
    assert rotated.seal(row).split(".")[1] == rotated.key_ids[0] != old_sealer.key_ids[0]
    assert check(HistorySealer([KEY]), row) == ["unknown_key"]
    assert check(rotated, {**row, "seal": "ts1.x.y"}) == ["seal"]
    assert check(rotated, {**row, "seal": row["seal"].replace("ts1", "ts9")}) == ["seal"]


@settings(max_examples=200, deadline=None)
@given(
    values=st.fixed_dictionaries(
        {name: st.none() | _TEXT for name in ("actor", "reason", "correlation_id", "event_id")}
    ),
    field=st.sampled_from(["actor", "reason", "correlation_id", "event_id"]),
    other=st.none() | _TEXT,
)
def test_any_text_change_of_a_field_is_found(
    values: dict[str, str | None], field: str, other: str | None
) -> None:
    sealer = HistorySealer([KEY])
    row = sample_row(**values)
    row["seal"] = sealer.seal(row)
    assert check(sealer, row) == []
    changed = check(sealer, {**row, field: other})
    assert changed == ([] if other == values[field] else [field])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("short", "has 5 bytes; an audit key needs at least 32"),
        (["x" * 40, "é" * 15], "TIERED_STATE_AUDIT_KEYS[1] has 30 bytes"),
        ([KEY, KEY], "TIERED_STATE_AUDIT_KEYS[1] repeats an earlier key"),
        ([KEY, 12345], "TIERED_STATE_AUDIT_KEYS[1] is a int"),
        ({"key": KEY}, "must be a key, a list of keys"),
        ("no_such_module_here:keys", "cannot be imported"),
    ],
)
def test_bad_keys_are_refused_without_quoting_them(value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        TieredStateSettings.from_mapping({"TIERED_STATE_AUDIT_KEYS": value})
    assert message in caught.value.message
    assert "x" * 40 not in caught.value.message and KEY not in caught.value.message


def test_keys_come_as_text_a_list_a_callable_or_an_import_string() -> None:
    assert load_audit_keys(None) is None and load_audit_keys([]) is None
    one = load_audit_keys(KEY)
    assert one is not None and one.key_ids == HistorySealer([KEY.encode()]).key_ids
    listed = load_audit_keys([KEY, OLD_KEY])
    called = load_audit_keys(audit_key_source)
    imported = load_audit_keys(f"{__name__}:audit_key_source")
    assert listed is not None and called is not None and imported is not None
    assert listed.key_ids == called.key_ids == imported.key_ids
    assert len(listed.key_ids) == 2 and MIN_KEY_BYTES == 32
    settings_ = TieredStateSettings.from_mapping({"TIERED_STATE_AUDIT_KEYS": [KEY]})
    shown = json.dumps(settings_.to_dict(), default=str)
    assert KEY not in shown and settings_.audit_keys is not None
    assert settings_.audit_keys.key_ids[0] in shown


# --------------------------------------------------------------------------- the verifier


@pytest.fixture
def audited(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateManager]:
    """A manager with audit keys on each backend set."""
    created = StateManager.create(
        store=build_test_store(backend, request, tmp_path), audit_keys=[KEY, OLD_KEY]
    )
    try:
        yield created
    finally:
        created.close()


def populate(manager: StateManager) -> None:
    manager.register_state("alice", "user", {"data": {"plan": "free", "big": 1e16, "z": -0.0}})
    manager.update_state("alice", None, "activate", actor="ops", reason="paid")
    manager.update_state("alice", {"data": {"plan": "pro"}}, "update", merge=True, actor="ops")
    manager.update_state("alice", None, "suspend", reason="chargeback")
    manager.batch_set_state({f"bulk-{n}": {"type": "user", "data": {"n": n}} for n in range(30)})
    manager.register_state("sub-1", "subscription", {"data": {"user": "alice"}})
    manager.delete_state("sub-1", reason="cancelled")
    manager.register_state("sess-1", "session", {"data": {"user": "alice"}})


def problems(manager: StateManager, **options: Any) -> dict[str, tuple[str, int | None, list[str]]]:
    """``{state_id: (status, version, whats)}`` of every state not verified."""
    verifier = AuditVerifier.for_manager(manager)
    return {
        a.state_id: (a.status, a.version, [p.what for p in a.problems])
        for a in verifier.verify(**options)
        if a.status != "verified"
    }


def execute(manager: StateManager, sql: str, **params: Any) -> None:
    with manager.history.engine.begin() as connection:
        connection.execute(sa.text(sql), params)


def history_sql(manager: StateManager) -> str:
    return manager.history.table.name


def test_every_row_is_written_sealed_and_verifies(audited: StateManager) -> None:
    populate(audited)
    verifier = AuditVerifier.for_manager(audited)
    results = list(verifier.verify())
    assert len(results) == 33 and {a.status for a in results} == {"verified"}
    assert [a.state_id for a in results] == sorted(a.state_id for a in results)
    alice = verifier.verify_state("alice")
    assert (alice.status, alice.rows, alice.type) == ("verified", 4, "user")
    seals = audited.history.table.c.seal
    with audited.history.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).where(seals.is_(None))).scalar() == 0
    assert "seal" not in audited.get_state_history("alice")[0]  # the public rows are unchanged


@pytest.mark.parametrize(
    ("sql", "version", "what"),
    [
        ("UPDATE {h} SET actor = 'mallory' WHERE state_id = 'alice' AND version = 2", 2, ["actor"]),
        ("UPDATE {h} SET reason = NULL WHERE state_id = 'alice' AND version = 4", 4, ["reason"]),
        ("UPDATE {h} SET to_status = 'expired' WHERE state_id = 'alice' AND version = 2", 2,
         ["statuses"]),
        ("UPDATE {h} SET transition = 'resume' WHERE state_id = 'alice' AND version = 4", 4,
         ["transition"]),
        ("DELETE FROM {h} WHERE state_id = 'alice' AND version = 2", 2, ["missing_version"]),
        ("DELETE FROM {h} WHERE state_id = 'alice' AND version = 4", 4, ["record"]),
        ("DELETE FROM {h} WHERE state_id = 'alice' AND version = 1", 1, ["missing_version"]),
        ("UPDATE {h} SET seal = NULL WHERE state_id = 'alice' AND version = 3", 3,
         ["unsealed_row"]),
        ("UPDATE {h} SET seal = (SELECT seal FROM {h} WHERE state_id = 'alice' AND version = 2) "
         "WHERE state_id = 'alice' AND version = 3", 3, ["row"]),
        ("UPDATE {h} SET state_id = 'alice', version = 5 WHERE state_id = 'bulk-3'", 5,
         ["chain", "row", "record"]),
    ],
)  # fmt: skip
def test_changes_made_in_sql_are_found_at_their_version(
    audited: StateManager, sql: str, version: int, what: list[str]
) -> None:
    populate(audited)
    execute(audited, sql.format(h=history_sql(audited)))
    found = problems(audited)
    assert found.pop("alice") == ("broken", version, what)
    if "bulk-3" in sql:  # the row moved away leaves a record without history
        assert found.pop("bulk-3") == ("broken", 1, ["no_history"])
    assert found == {}


def test_record_edits_are_found_in_each_form(audited: StateManager) -> None:
    populate(audited)
    history = audited.history.table
    with audited.history.engine.connect() as connection:
        row = connection.execute(
            sa.select(history.c.new_record).where(
                history.c.state_id == "alice", history.c.version == 4
            )
        ).scalar_one()
    changed = {**row, "data": {**row["data"], "plan": "enterprise"}}
    execute(
        audited,
        f"UPDATE {history_sql(audited)} SET new_record = :record "
        "WHERE state_id = 'alice' AND version = 4",
        record=json.dumps(changed),
    )
    assert problems(audited)["alice"] == ("broken", 4, ["new_record", "record"])


def test_the_current_record_is_compared_from_its_home_tier(audited: StateManager) -> None:
    populate(audited)
    warm = audited.store.warm
    current = audited.get_state("bulk-7")
    assert current is not None
    text = dumps({**current, "data": {"n": 700}})
    checksum = hashlib.sha256(text.encode()).hexdigest()
    execute(
        audited,
        f"UPDATE {warm.table.name} SET value = :value, checksum = :checksum WHERE key = :key",
        value=text,
        checksum=checksum,
        key="state:bulk-7",
    )
    execute(
        audited,
        f"UPDATE {warm.table.name} SET value = '{{}}' WHERE key = 'state:bulk-8'",
    )
    assert audited.promote_to_hot("bulk-9")  # a HOT copy is a cache, not the record
    execute(audited, f"DELETE FROM {warm.table.name} WHERE key = 'state:bulk-9'")
    assert problems(audited) == {
        "bulk-7": ("broken", 1, ["record"]),
        "bulk-8": ("broken", 1, ["record_corrupt"]),
        "bulk-9": ("broken", 1, ["record_missing"]),
    }


def test_moves_between_tiers_expiry_and_tombstones_are_no_breaks(audited: StateManager) -> None:
    populate(audited)
    assert audited.demote_to_cold("bulk-1") and audited.promote_to_hot("bulk-2")
    audited.store.get_repositories().hot.delete("state:sess-1")  # as if it expired
    assert problems(audited) == {}
    assert audited.store.get_repositories().warm.fetch("state:bulk-1") is None


def test_a_record_without_history_is_found_by_listing_the_tiers(audited: StateManager) -> None:
    populate(audited)
    audited.store.set("state:ghost", {"state_id": "ghost", "type": "user", "version": 1},
                      category=StateCategory.WARM)  # fmt: skip
    assert problems(audited) == {"ghost": ("broken", 1, ["no_history"])}
    assert problems(audited, state_type="subscription") == {}
    found = problems(audited, state_ids=["ghost", "alice", "nobody"])
    assert found == {"ghost": ("broken", 1, ["no_history"]), "nobody": ("not_found", None, [])}


def test_a_type_or_ids_limit_the_states_checked(audited: StateManager) -> None:
    populate(audited)
    verifier = AuditVerifier.for_manager(audited)
    assert [a.state_id for a in verifier.verify(state_type="subscription")] == ["sub-1"]
    assert [a.state_id for a in verifier.verify(state_ids=["sess-1", "alice"])] == [
        "alice",
        "sess-1",
    ]
    read: list[int] = []
    list(verifier.verify(progress=read.append))
    assert sum(read) == verifier.count_states() == 33


def test_old_rows_are_sealed_once_and_then_verify(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = build_test_store(backend, request, tmp_path)
    plain = StateManager.create(store=store, close_store=False)
    populate(plain)
    plain.close()
    manager = StateManager.create(store=store, audit_keys=[KEY])
    try:
        manager.update_state("alice", None, "resume")  # a sealed row after unsealed ones
        verifier = AuditVerifier.for_manager(manager, chunk_rows=7)
        before = problems(manager)
        assert before["alice"] == ("unsealed", 1, []) and len(before) == 33
        assert verifier.count_unsealed() == 4 + 30 + 2 + 1
        report = verifier.seal_unsealed()
        assert (report.rows, report.states) == (37, 33)
        assert verifier.seal_unsealed().rows == 0 and problems(manager) == {}
    finally:
        manager.close()


def test_an_unsealed_row_after_sealed_ones_breaks_the_chain(audited: StateManager) -> None:
    populate(audited)
    execute(
        audited,
        f"INSERT INTO {history_sql(audited)} (state_id, version, transition, from_status, "
        "to_status, old_record, new_record, created_at) SELECT state_id, 5, 'update', "
        "to_status, to_status, new_record, new_record, created_at "
        f"FROM {history_sql(audited)} WHERE state_id = 'alice' AND version = 4",
    )
    assert problems(audited)["alice"] == ("broken", 5, ["unsealed_row"])


def test_chunked_reads_find_the_same(audited: StateManager) -> None:
    populate(audited)
    execute(audited, f"UPDATE {history_sql(audited)} SET actor = 'x' WHERE state_id = 'bulk-2'")
    small = AuditVerifier.for_manager(audited, chunk_rows=3, batch_states=2)
    found = {a.state_id: a.summary() for a in small.verify() if a.status != "verified"}
    assert found == {"bulk-2": "broken at version 1: actor"}
    assert sum(1 for _ in small.verify()) == 33


def test_without_keys_rows_are_unsealed_and_verification_is_refused(
    manager: StateManager,
) -> None:
    manager.register_state("plain", "user")
    with manager.history.engine.connect() as connection:
        seals = connection.execute(sa.select(manager.history.table.c.seal)).scalars().all()
    assert seals == [None]
    with pytest.raises(ConfigurationError, match="TIERED_STATE_AUDIT_KEYS"):
        AuditVerifier.for_manager(manager)


def test_a_state_audit_reads_as_a_sentence() -> None:
    audit = StateAudit("s", rows=3)
    assert audit.summary() == "verified (3 rows)"
    audit.flag(3, Problem("actor", "its actor differs from the sealed one"))
    audit.flag(2, Problem("created_at", "its time differs from the sealed one"))
    audit.flag(2, Problem("reason", "its reason differs from the sealed one"))
    audit.flag(3, Problem("chain", "later"))
    assert audit.summary() == "broken at version 2: time, reason"
    assert audit.to_dict()["problems"][0] == {
        "what": "created_at",
        "detail": "its time differs from the sealed one",
    }

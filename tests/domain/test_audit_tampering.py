"""Tampering on the real PostgreSQL: 1,000 random changes made directly in SQL to history
rows and current records are all found by the audit, each at the right state and first bad
version, and 10,000 untouched states raise no alarm.

The states are written through the manager with audit keys (10,000 single-version states
by ``batch_set_state``, 1,000 states of 4 or 5 versions), into tables of their own. Each
of the 1,000 tampered states gets one change: an edit of every sealed field in turn, of
the seal itself, of the old or new record column; a deleted row; two rows' versions
swapped; a row inserted (a copy, another state's row, an unsealed forgery, after a gap);
the current record in the WARM table changed with a recomputed sha256 checksum, replaced
by an older version, or deleted.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_tiered_state.domain.audit import AuditVerifier
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.json_codec import dumps
from flask_tiered_state.storage.factory import build_store

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

KEY = "tampering-test-audit-key-" + "t" * 32
UNTOUCHED = 10_000
TAMPERED = 1_000
HISTORY = "audit_tamper_history"
ENTRIES = "audit_tamper_entries"


@pytest.fixture
def audited(postgres_engine: sa.Engine, tmp_path: Path) -> Iterator[StateManager]:
    store = build_store(
        engine=postgres_engine, warm_options={"table_name": ENTRIES}, local_dir=tmp_path
    )
    manager = StateManager.create(
        store=store,
        history_table=HISTORY,
        audit_keys=[KEY],
        default_max_states=None,
        operation_log_level=None,
    )
    try:
        yield manager
    finally:
        manager.close()


def data_of(n: int) -> dict[str, Any]:
    """Data with the numbers jsonb rewrites now and then (exponents, negative zero)."""
    data: dict[str, Any] = {"n": n, "plan": ["free", "pro", "team"][n % 3], "score": n / 7}
    if n % 10 == 0:
        data.update(big=1e16 * (n + 1), zero=-0.0, tiny=1e-7, text="é\u2603")
    return data


def write_states(manager: StateManager) -> dict[str, int]:
    """The untouched and the target states; the number of versions of each target."""
    for start in range(0, UNTOUCHED, 2500):
        manager.batch_set_state(
            {
                f"u-{n:05d}": {
                    "type": ("user", "transaction", "subscription")[n % 3],
                    "data": data_of(n),
                }
                for n in range(start, start + 2500)
            }
        )
    targets = [f"t-{n:04d}" for n in range(TAMPERED)]
    manager.batch_set_state(
        {s: {"type": "user", "data": data_of(n)} for n, s in enumerate(targets)}
    )
    manager.batch_update_state(dict.fromkeys(targets), "activate", actor="ops")
    manager.batch_update_state(
        {s: {"data": {"step": 3}} for s in targets}, "update", merge=True, reason="upgrade"
    )
    manager.batch_update_state({s: {"data": {"step": 4, "x": 1e20}} for s in targets},
                               "update", merge=True, actor="billing")  # fmt: skip
    odd = targets[1::2]
    manager.batch_update_state(dict.fromkeys(odd), "suspend", reason="chargeback")
    return {s: 5 if i % 2 else 4 for i, s in enumerate(targets)}


# --------------------------------------------------------------------------- the tampers

#: ``tamper(connection, rng, state_id, versions) -> (what it did, first bad version)``
Tamper = Callable[[sa.Connection, random.Random, str, int], tuple[str, int]]


def _sql(connection: sa.Connection, sql: str, **params: Any) -> Any:
    return connection.execute(sa.text(sql.format(h=HISTORY, e=ENTRIES)), params)


def _edit(expression: str, *, from_version: int = 1) -> Tamper:
    def tamper(c: sa.Connection, rng: random.Random, s: str, n: int) -> tuple[str, int]:
        v = rng.randint(from_version, n)
        _sql(c, f"UPDATE {{h}} SET {expression} WHERE state_id = :s AND version = :v", s=s, v=v)
        return expression, v

    return tamper


def _from_status(c: sa.Connection, rng: random.Random, s: str, n: int) -> tuple[str, int]:
    v = rng.randint(1, n)
    _sql(c, "UPDATE {h} SET from_status = CASE WHEN from_status IS NULL THEN 'created' "
         "WHEN from_status = 'active' THEN 'expired' ELSE 'active' END "
         "WHERE state_id = :s AND version = :v", s=s, v=v)  # fmt: skip
    return "from_status", v


def _old_record(c: sa.Connection, rng: random.Random, s: str, n: int) -> tuple[str, int]:
    v = rng.randint(1, n)
    _sql(c, "UPDATE {h} SET old_record = CASE WHEN old_record IS NULL THEN new_record ELSE "
         "jsonb_set(old_record, '{{data,plan}}', '\"stolen\"') END "
         "WHERE state_id = :s AND version = :v", s=s, v=v)  # fmt: skip
    return "old_record", v


def _seal_flip(c: sa.Connection, rng: random.Random, s: str, n: int) -> tuple[str, int]:
    v = rng.randint(1, n)
    at = rng.randint(14, 157)  # a character of the MACs (after "ts1.<key id>.")
    _sql(c, "UPDATE {h} SET seal = overlay(seal placing CASE WHEN substr(seal, :at, 1) = 'A' "
         "THEN 'B' ELSE 'A' END from :at for 1) WHERE state_id = :s AND version = :v",
         s=s, v=v, at=at)  # fmt: skip
    return f"seal character {at}", v


def _seal_copied(c: sa.Connection, rng: random.Random, s: str, n: int) -> tuple[str, int]:
    v = rng.randint(1, n)
    other = (s, rng.choice([w for w in range(1, n + 1) if w != v]))
    if rng.random() < 0.5:
        other = (f"u-{rng.randrange(UNTOUCHED):05d}", 1)
    _sql(c, "UPDATE {h} SET seal = (SELECT seal FROM {h} WHERE state_id = :o AND version = :w) "
         "WHERE state_id = :s AND version = :v", s=s, v=v, o=other[0], w=other[1])  # fmt: skip
    return f"seal of {other}", v


def _delete(c: sa.Connection, rng: random.Random, s: str, n: int) -> tuple[str, int]:
    v = rng.randint(1, n)
    _sql(c, "DELETE FROM {h} WHERE state_id = :s AND version = :v", s=s, v=v)
    return "deleted row", v


def _swap(c: sa.Connection, rng: random.Random, s: str, n: int) -> tuple[str, int]:
    v, w = sorted(rng.sample(range(1, n + 1), 2))
    for old, new in ((v, -1), (w, v), (-1, w)):
        _sql(c, "UPDATE {h} SET version = :new WHERE state_id = :s AND version = :old",
             s=s, old=old, new=new)  # fmt: skip
    return f"swapped {v} and {w}", v


_COLUMNS = ("transition, from_status, to_status, old_record, new_record, actor, reason, "
            "correlation_id, created_at, event_id")  # fmt: skip


def _insert(c: sa.Connection, rng: random.Random, s: str, n: int) -> tuple[str, int]:
    kind = rng.choice(["copy", "other state", "unsealed", "gap"])
    version = n + 1 + (rng.randint(1, 3) if kind == "gap" else 0)
    source = (f"u-{rng.randrange(UNTOUCHED):05d}", 1) if kind == "other state" else (s, n)
    seal = "NULL" if kind == "unsealed" else "seal"
    _sql(c, f"INSERT INTO {{h}} (state_id, version, {_COLUMNS}, seal) SELECT :s, :version, "
         f"{_COLUMNS}, {seal} FROM {{h}} WHERE state_id = :o AND version = :w",
         s=s, version=version, o=source[0], w=source[1])  # fmt: skip
    return f"inserted {kind} at {version}", n + 1


def _record(c: sa.Connection, rng: random.Random, s: str, n: int) -> tuple[str, int]:
    kind = rng.choice(["edit", "older version", "deleted"])
    key = f"state:{s}"
    if kind == "deleted":
        _sql(c, "DELETE FROM {e} WHERE key = :key", key=key)
        return "record deleted", n
    if kind == "edit":
        value = json.loads(_sql(c, "SELECT value FROM {e} WHERE key = :key", key=key).scalar())
        value["data"]["plan"] = "free-forever"
    else:
        value = _sql(c, "SELECT new_record FROM {h} WHERE state_id = :s AND version = :v",
                     s=s, v=rng.randint(1, n - 1)).scalar()  # fmt: skip
    text = dumps(value)
    _sql(c, "UPDATE {e} SET value = :value, checksum = :checksum, size = :size WHERE key = :key",
         value=text, checksum=hashlib.sha256(text.encode()).hexdigest(),
         size=len(text.encode()), key=key)  # fmt: skip
    return f"record: {kind}", n


TAMPERS: list[Tamper] = [
    _edit("actor = COALESCE(actor, '') || 'x'"),
    _edit("reason = COALESCE(reason, '') || ' (edited)'"),
    _edit("correlation_id = COALESCE(correlation_id, 'c') || '-x'"),
    _edit("created_at = created_at + interval '1 microsecond'"),
    _edit("transition = CASE WHEN transition = 'update' THEN 'resume' ELSE 'update' END"),
    _edit("to_status = CASE WHEN to_status = 'active' THEN 'expired' ELSE 'active' END"),
    _edit("event_id = md5(event_id || 'x')"),
    _edit("new_record = jsonb_set(new_record, '{{data,n}}', '-1')"),
    _edit("seal = NULL"),
    _from_status,
    _old_record,
    _seal_flip,
    _seal_copied,
    _delete,
    _swap,
    _insert,
    _record,
]


def test_every_tamper_is_found_and_untouched_states_verify(audited: StateManager) -> None:
    started = time.perf_counter()
    versions = write_states(audited)
    written = time.perf_counter()
    verifier = AuditVerifier.for_manager(audited)
    before = [a for a in verifier.verify() if a.status != "verified"]
    assert before == []

    rng = random.Random(14)
    expected: dict[str, tuple[str, int]] = {}
    with audited.history.engine.begin() as connection:
        for state_id, n in versions.items():
            expected[state_id] = rng.choice(TAMPERS)(connection, rng, state_id, n)

    checked = time.perf_counter()
    results = {a.state_id: a for a in verifier.verify()}
    verified = time.perf_counter()
    assert len(results) == UNTOUCHED + TAMPERED
    false_alarms = [a.summary() for s, a in results.items() if s.startswith("u-") and
                    a.status != "verified"]  # fmt: skip
    assert false_alarms == []
    missed = {
        state_id: (what, version, results[state_id].summary())
        for state_id, (what, version) in expected.items()
        if results[state_id].status == "verified" or results[state_id].version != version
    }
    assert missed == {}
    kinds = {what.split(" ")[0] for what, _ in expected.values()}
    assert len(kinds) >= 15  # every kind of tamper was drawn
    print(
        f"\nwrote {UNTOUCHED + TAMPERED} states in {written - started:.1f} s; verified "
        f"{len(results)} states ({sum(a.rows for a in results.values())} rows) in "
        f"{verified - checked:.2f} s; {len(expected)} tampers found"
    )

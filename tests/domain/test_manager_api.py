"""The whole StateManager API, on SQLite + memory + filesystem and on PostgreSQL +
Redis + S3 (moto server)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from flask_tiered_state import signals
from flask_tiered_state.domain.context import correlation_scope
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateStatus, StateTransition, StateType
from flask_tiered_state.errors import (
    ConcurrencyError,
    InvalidRequestError,
    InvalidStateTypeError,
    InvalidTransitionError,
    StateAlreadyExistsError,
    StateNotFoundError,
    ValidationError,
    VersionNotFoundError,
)
from flask_tiered_state.storage.base import StateCategory

T = StateTransition


def _user(manager: StateManager, state_id: str = "u1", **data: Any) -> dict[str, Any]:
    return manager.register_state(
        state_id, StateType.USER, {"name": "Ann", "data": data or {"balance": 10}}
    )


def _history_rows(manager: StateManager) -> int:
    return manager.history.count()


def test_seed_lifecycle_gives_four_history_rows(manager: StateManager) -> None:
    with correlation_scope("req-42"):
        created = manager.register_state(
            "user_123",
            StateType.USER,
            {"name": "John", "type": "user", "data": {"email": "j@example.com"}},
            actor="admin",
        )
        manager.update_state("user_123", None, T.ACTIVATE, actor="admin", reason="verified")
        manager.update_state("user_123", None, T.SUSPEND)
        final = manager.update_state("user_123", None, T.RESUME)
    assert created["status"] == "created" and created["version"] == 1
    assert created["type"] == "user" and created["name"] == "John"
    assert final["status"] == "active" and final["version"] == 4
    assert final["created_at"] == created["created_at"] < final["updated_at"]
    assert manager.get_state("user_123") == final
    history = manager.get_state_history("user_123")
    assert len(history) == 4
    assert [h["version"] for h in history] == [1, 2, 3, 4]
    assert [h["transition"] for h in history] == ["create", "activate", "suspend", "resume"]
    assert [(h["from_status"], h["to_status"]) for h in history] == [
        (None, "created"),
        ("created", "active"),
        ("active", "suspended"),
        ("suspended", "active"),
    ]
    assert history[0]["old_record"] is None and history[0]["new_record"] == created
    assert history[3]["new_record"] == final and history[3]["old_record"]["status"] == "suspended"
    assert {h["correlation_id"] for h in history} == {"req-42"}
    assert (history[1]["actor"], history[1]["reason"]) == ("admin", "verified")
    assert history[2]["actor"] is None
    assert history[0]["created_at"].endswith("+00:00")


def test_record_shape_and_read_copies(manager: StateManager) -> None:
    record = manager.register_state(
        "u1", "user", {"data": {"tags": ["a"]}, "metadata": {"source": "api"}}
    )
    assert list(record) == [
        "state_id",
        "name",
        "type",
        "status",
        "data",
        "metadata",
        "version",
        "created_at",
        "updated_at",
    ]
    assert record["name"] == "u1"  # defaults to the id
    first = manager.get_state("u1")
    assert first is not None
    first["data"]["tags"].append("mutated")
    assert manager.get_state("u1") == record
    assert manager.get_state("nobody") is None


def test_register_errors_store_nothing(manager: StateManager) -> None:
    with pytest.raises(ValidationError, match="disagrees"):
        manager.register_state("u1", StateType.USER, {"type": "transaction"})
    with pytest.raises(InvalidStateTypeError) as info:
        manager.register_state("u1", "planet", {})
    assert "user" in info.value.message and "session" in info.value.message
    with pytest.raises(InvalidRequestError, match="state ids are"):
        manager.register_state("bad id", StateType.USER, {})
    with pytest.raises(ValidationError, match="not JSON-serialisable"):
        manager.register_state("u1", StateType.USER, {"data": {"when": object()}})
    assert manager.get_state("u1") is None
    assert _history_rows(manager) == 0
    _user(manager)
    with pytest.raises(StateAlreadyExistsError, match="already exists"):
        _user(manager)
    assert _history_rows(manager) == 1


def test_update_replace_merge_and_managed_fields(manager: StateManager) -> None:
    _user(manager, balance=10, tier="gold")
    replaced = manager.update_state("u1", {"data": {"balance": 20}, "name": "Anna"})
    assert replaced["data"] == {"balance": 20} and replaced["name"] == "Anna"
    assert replaced["version"] == 2 and replaced["status"] == "created"
    merged = manager.update_state("u1", {"data": {"tier": "silver"}}, merge=True)
    assert merged["data"] == {"balance": 20, "tier": "silver"}
    # a record read back may be sent again unchanged
    again = manager.update_state("u1", merged)
    assert again["version"] == 4 and again["data"] == merged["data"]
    with pytest.raises(ValidationError, match="managed"):
        manager.update_state("u1", {"status": "active"})
    with pytest.raises(InvalidRequestError, match="allowed: update, activate"):
        manager.update_state("u1", None, T.CREATE)
    with pytest.raises(InvalidRequestError, match="'explode'"):
        manager.update_state("u1", None, "explode")
    assert manager.update_state("u1", None, "ACTIVATE")["status"] == "active"
    with pytest.raises(StateNotFoundError):
        manager.update_state("nobody", {"data": {}})


def test_refused_transition_changes_nothing(manager: StateManager) -> None:
    _user(manager)
    before = manager.get_state("u1")
    with pytest.raises(InvalidTransitionError) as info:
        manager.update_state("u1", {"data": {"x": 1}}, T.RESUME)
    err = info.value
    assert (err.state_id, err.status, err.transition) == ("u1", "created", "resume")
    assert err.allowed == ["update", "activate", "suspend", "expire", "delete"]
    assert "'u1' is created" in err.message
    assert manager.get_state("u1") == before
    assert len(manager.get_state_history("u1")) == 1


def test_expected_version(manager: StateManager) -> None:
    _user(manager)
    manager.update_state("u1", {"data": {"b": 1}}, expected_version=1)
    with pytest.raises(ConcurrencyError) as info:
        manager.update_state("u1", {"data": {"b": 2}}, expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert manager.get_state("u1")["data"] == {"b": 1}  # type: ignore[index]
    with pytest.raises(InvalidRequestError, match="expected_version"):
        manager.update_state("u1", None, expected_version=0)


def test_delete_keeps_a_tombstone_and_never_reuses_the_id(manager: StateManager) -> None:
    _user(manager)
    manager.update_state("u1", None, T.ACTIVATE)
    tombstone = manager.delete_state("u1", actor="ops", reason="gdpr")
    assert tombstone["status"] == "deleted" and tombstone["version"] == 3
    assert tombstone["data"] == {"balance": 10}
    assert manager.get_state("u1") is None
    assert manager.get_state("u1", include_deleted=True) == tombstone
    assert manager.batch_get_state(["u1"]) == {}
    assert manager.batch_get_state(["u1"], include_deleted=True) == {"u1": tombstone}
    with pytest.raises(StateAlreadyExistsError, match=r"deleted.*never reused"):
        _user(manager)
    with pytest.raises(InvalidTransitionError, match="Allowed from deleted: none"):
        manager.update_state("u1", {"data": {}})
    with pytest.raises(InvalidTransitionError):
        manager.delete_state("u1")
    with pytest.raises(InvalidTransitionError):
        manager.rollback_state("u1", 1)
    rows = manager.get_changes_by_transition("u1", "delete")
    assert len(rows) == 1 and (rows[0]["actor"], rows[0]["reason"]) == ("ops", "gdpr")
    assert manager.search_states(StateType.USER).total == 0
    assert manager.get_keys_by_pattern("u*") == ["u1"]


def test_rollback(manager: StateManager) -> None:
    _user(manager, balance=10)
    manager.update_state("u1", {"data": {"balance": 50}, "metadata": {"m": 1}}, T.ACTIVATE)
    manager.update_state("u1", None, T.SUSPEND)
    rolled = manager.rollback_state("u1", 2, actor="ops", reason="undo suspend")
    assert rolled["version"] == 4 and rolled["status"] == "active"
    assert rolled["data"] == {"balance": 50} and rolled["metadata"] == {"m": 1}
    last = manager.get_recent_changes("u1", limit=1)[0]
    assert (last["transition"], last["version"], last["from_status"], last["to_status"]) == (
        "rollback",
        4,
        "suspended",
        "active",
    )
    # back to version 1 would mean active -> created: no transition allows it
    with pytest.raises(InvalidTransitionError, match="from active to created"):
        manager.rollback_state("u1", 1)
    with pytest.raises(InvalidRequestError, match="earlier version"):
        manager.rollback_state("u1", 4)
    with pytest.raises(InvalidRequestError, match="to_version"):
        manager.rollback_state("u1", 0)
    with pytest.raises(StateNotFoundError):
        manager.rollback_state("nobody", 1)
    assert manager.get_state("u1")["version"] == 4  # type: ignore[index]


def test_diff_versions(manager: StateManager) -> None:
    _user(manager, balance=10, tier="gold")
    manager.update_state("u1", {"data": {"balance": 15, "flag": True}}, T.ACTIVATE)
    diff = manager.diff_versions("u1", 1, 2)
    assert diff == {
        "state_id": "u1",
        "from_version": 1,
        "to_version": 2,
        "added": {"data.flag": True},
        "removed": {"data.tier": "gold"},
        "changed": {
            "data.balance": {"from": 10, "to": 15},
            "status": {"from": "created", "to": "active"},
        },
    }
    with pytest.raises(VersionNotFoundError) as info:
        manager.diff_versions("u1", 1, 9)
    assert "recorded versions: 1, 2" in info.value.message
    with pytest.raises(StateNotFoundError):
        manager.diff_versions("nobody", 1, 2)


def test_history_queries(manager: StateManager) -> None:
    _user(manager)
    for i in range(4):
        manager.update_state("u1", {"data": {"i": i}})
    manager.update_state("u1", None, T.ACTIVATE)
    recent = manager.get_recent_changes("u1", limit=3)
    assert [r["version"] for r in recent] == [6, 5, 4]
    assert [r["version"] for r in manager.get_changes_by_transition("u1", T.UPDATE)] == [2, 3, 4, 5]
    assert manager.get_changes_by_transition("u1", "suspend") == []
    assert manager.get_state_history("nobody") == []
    with pytest.raises(InvalidRequestError, match="transition_type"):
        manager.get_changes_by_transition("u1", "fly")
    with pytest.raises(InvalidRequestError, match="limit"):
        manager.get_recent_changes("u1", limit=0)


def test_validators_and_schemas(manager: StateManager) -> None:
    from marshmallow import Schema, fields

    class InvoiceSchema(Schema):
        amount = fields.Integer(required=True)

    manager.register_state_type("invoice", schema=InvoiceSchema)
    manager.register_validator("invoice", lambda state: state["data"].get("amount", 0) >= 0)
    with pytest.raises(ValidationError) as info:
        manager.register_state("i1", "invoice", {"data": {}})
    assert info.value.errors == {"amount": ["Missing data for required field."]}
    with pytest.raises(ValidationError, match="failed validation"):
        manager.register_state("i1", "invoice", {"data": {"amount": -5}})
    assert manager.get_state("i1") is None and _history_rows(manager) == 0
    manager.register_state("i1", "invoice", {"data": {"amount": 5}})
    with pytest.raises(ValidationError):
        manager.update_state("i1", {"data": {"amount": "many"}})
    assert manager.get_state("i1")["version"] == 1  # type: ignore[index]
    assert manager.update_state("i1", None, T.ACTIVATE)["version"] == 2  # data untouched
    with pytest.raises(InvalidStateTypeError):
        manager.register_validator("planet", lambda d: True)


def test_custom_type_lifecycle_and_callbacks(manager: StateManager) -> None:
    from flask_tiered_state.domain.lifecycle import Lifecycle

    S = StateStatus
    lifecycle = Lifecycle(
        {T.ACTIVATE: ([S.CREATED], S.ACTIVE), T.EXPIRE: ([S.ACTIVE], S.EXPIRED)}
    ).with_guard(T.EXPIRE, lambda cur, t, new: bool(new["data"].get("paid")))
    manager.register_state_type("credit_card", lifecycle=lifecycle)
    seen: list[tuple[Any, ...]] = []
    manager.register_callback("credit_card_expired", lambda *args: seen.append(args))
    manager.register_state("c1", "credit_card", {"data": {"paid": False}})
    manager.update_state("c1", None, T.ACTIVATE)
    with pytest.raises(InvalidTransitionError, match="refused by guard"):
        manager.update_state("c1", None, T.EXPIRE)
    with pytest.raises(InvalidTransitionError):
        manager.update_state("c1", None, T.SUSPEND)
    with pytest.raises(InvalidTransitionError):
        manager.delete_state("c1")  # this lifecycle has no DELETE
    with pytest.raises(InvalidTransitionError):
        manager.update_state("c1", {"data": {"paid": True}})  # no UPDATE either
    assert seen == []
    expired = manager.update_state("c1", {"data": {"paid": True}}, T.EXPIRE)
    assert expired["status"] == "expired"
    assert seen == [("c1", manager.get_state_history("c1")[1]["new_record"], expired, T.EXPIRE)]
    with pytest.raises(InvalidRequestError, match="type names are"):
        manager.register_state_type("Bad-Name")


def test_callbacks_run_after_commit_and_failures_never_undo(manager: StateManager) -> None:
    calls: list[tuple[Any, ...]] = []
    failures: list[Any] = []

    def on_suspended(state_id: str, old: Any, new: Any, transition: T) -> None:
        calls.append((state_id, old["status"], new["status"], transition))
        # the change is committed before callbacks run
        assert manager.get_state(state_id)["status"] == "suspended"  # type: ignore[index]

    def broken(*args: Any) -> None:
        raise RuntimeError("callback exploded")

    manager.register_callback("user_suspended", on_suspended)
    manager.register_callback("user_activated", broken)
    with pytest.raises(InvalidRequestError, match="user_suspended"):
        manager.register_callback("user_exploded", on_suspended)
    _user(manager)
    with signals.callback_failed.connected_to(
        lambda sender, **kw: failures.append((sender, kw["error"])), manager
    ):
        active = manager.update_state("u1", None, T.ACTIVATE)
    assert active["status"] == "active"
    assert manager.get_state("u1") == active
    assert [(s, type(e)) for s, e in failures] == [(manager, RuntimeError)]
    manager.update_state("u1", None, T.SUSPEND)
    assert calls == [("u1", "active", "suspended", T.SUSPEND)]
    assert manager.unregister_callback("user_suspended", on_suspended)
    manager.update_state("u1", None, T.RESUME)
    manager.update_state("u1", None, T.SUSPEND)
    assert len(calls) == 1


def test_signals(manager: StateManager) -> None:
    got: list[tuple[str, Any, dict[str, Any]]] = []

    def recorder(name: str) -> Any:
        def receive(sender: Any, **kwargs: Any) -> None:
            got.append((name, sender, kwargs))

        return receive

    receivers = {
        name: recorder(name)
        for name in (
            "registered",
            "updated",
            "transitioned",
            "deleted",
            "promoted",
            "demoted",
        )
    }
    with (
        signals.state_registered.connected_to(receivers["registered"], manager),
        signals.state_updated.connected_to(receivers["updated"], manager),
        signals.state_transitioned.connected_to(receivers["transitioned"], manager),
        signals.state_deleted.connected_to(receivers["deleted"], manager),
        signals.state_promoted.connected_to(receivers["promoted"], manager),
        signals.state_demoted.connected_to(receivers["demoted"], manager),
    ):
        with correlation_scope("sig-1"):
            _user(manager)
        manager.update_state("u1", {"data": {"b": 2}})
        manager.update_state("u1", None, T.ACTIVATE)
        assert manager.promote_to_hot("u1")
        assert manager.demote_to_cold("u1")
        manager.delete_state("u1")
    names = [name for name, _s, _k in got]
    assert names == [
        "registered",
        "updated",
        "updated",
        "transitioned",
        "promoted",
        "demoted",
        "deleted",
        "transitioned",
    ]
    assert all(sender is manager for _n, sender, _k in got)
    registered = got[0][2]
    assert registered["state"]["version"] == 1 and registered["event"].correlation_id == "sig-1"
    assert registered["event"].name == "user_created"
    transitioned = got[3][2]
    assert (transitioned["from_status"], transitioned["to_status"]) == ("created", "active")
    assert transitioned["transition"] is T.ACTIVATE
    assert got[4][2] == {"state_id": "u1", "key": "state:u1"}
    assert got[6][2]["new_state"]["status"] == "deleted"


def test_search(manager: StateManager) -> None:
    import time as _time

    for i in range(7):
        manager.register_state(
            f"u{i}",
            StateType.USER,
            {
                "name": f"user {i}",
                "data": {"status": "active" if i % 2 == 0 else "idle", "n": i, "vip": i == 3},
                "metadata": {"version": "v2" if i < 3 else "v1"},
            },
        )
        _time.sleep(0.002)
    manager.register_state("t1", StateType.TRANSACTION, {"data": {"status": "active"}})
    manager.update_state("u2", None, T.ACTIVATE)  # newest update
    manager.delete_state("u4")

    page = manager.search_states(StateType.USER, {"data.status": "active"})
    assert [r["state_id"] for r in page.items] == ["u2", "u6", "u0"]
    assert (page.total, page.page, page.per_page, page.pages) == (3, 1, 50, 1)
    everything = manager.search_states(None, {"data.status": "active"})
    assert {r["state_id"] for r in everything.items} == {"u0", "u2", "u6", "t1"}
    assert manager.search_states("user", {"status": "active"}).items[0]["state_id"] == "u2"
    assert [r["state_id"] for r in manager.search_states(filters={"name": "user 5"}).items] == [
        "u5"
    ]
    assert manager.search_states("user", {"metadata.version": "v2"}).total == 3
    assert manager.search_states("user", {"data.n": 3}).items[0]["state_id"] == "u3"
    assert manager.search_states("user", {"data.vip": True}).total == 1
    assert manager.search_states("user", {"data.n": True}).total == 0  # 1 is not true
    assert manager.search_states("user", {"data.n": "3"}).total == 0  # 3 is not "3"
    assert manager.search_states("user", {"data.missing": None}).total == 0
    assert manager.search_states("user", {"version": 2}).total == 1
    assert manager.search_states("user", {"data.status": "active", "data.n": 6}).total == 1

    second = manager.get_states_by_type(StateType.USER, page=2, per_page=4)
    assert (second.total, second.pages, len(second.items)) == (6, 2, 2)
    first = manager.get_states_by_type(StateType.USER, page=1, per_page=4)
    ids = [r["state_id"] for r in first.items + second.items]
    assert len(set(ids)) == 6 and "u4" not in ids and ids[0] == "u2"
    assert manager.get_states_by_type("user", page=3, per_page=4).items == []
    with pytest.raises(InvalidRequestError, match="not searchable"):
        manager.search_states(StateType.SESSION)
    with pytest.raises(InvalidRequestError, match="unknown root"):
        manager.search_states("user", {"colour": "red"})
    with pytest.raises(InvalidRequestError, match="per_page"):
        manager.search_states("user", per_page=1001)


def test_sessions_live_in_hot_with_history_in_warm(manager: StateManager) -> None:
    session = manager.register_state("s1", StateType.SESSION, {"data": {"user": "u1"}})
    manager.update_state("s1", None, T.ACTIVATE)
    repos = manager.get_repositories()
    hot = repos.hot.fetch("state:s1")
    assert hot is not None and hot.metadata.ttl_seconds == 3600
    assert json.loads(hot.value)["status"] == "active"
    assert repos.warm.fetch("state:s1") is None
    assert [h["version"] for h in manager.get_state_history("s1")] == [1, 2]
    assert manager.get_state("s1")["version"] == session["version"] + 1  # type: ignore[index]
    manager.register_state_type("cart", home_tier=StateCategory.HOT, hot_ttl_seconds=60)
    manager.register_state("c1", "cart", {})
    assert repos.hot.fetch("state:c1").metadata.ttl_seconds == 60  # type: ignore[union-attr]


def test_batches(manager: StateManager) -> None:
    _user(manager, "u1")
    result = manager.batch_set_state(
        {
            "u1": {"data": {"balance": 99}},
            "u2": {"type": "user", "data": {"balance": 1}},
            "t1": {"type": "transaction", "data": {"amount": 5}},
        },
        actor="import",
    )
    assert result["u1"]["version"] == 2 and result["u1"]["data"] == {"balance": 99}
    assert result["u2"]["version"] == 1 and result["t1"]["type"] == "transaction"
    assert [h["transition"] for h in manager.get_state_history("u1")] == ["create", "update"]
    assert manager.get_state_history("t1")[0]["actor"] == "import"
    rows = _history_rows(manager)
    # one bad item: nothing is written
    with pytest.raises(ValidationError, match="names no type"):
        manager.batch_set_state({"u1": {"data": {"balance": 0}}, "u3": {"data": {}}})
    with pytest.raises(InvalidStateTypeError):
        manager.batch_set_state({"u3": {"type": "planet"}})
    assert manager.get_state("u1")["data"] == {"balance": 99}  # type: ignore[index]
    assert manager.get_state("u3") is None and _history_rows(manager) == rows
    manager.batch_set_state({"u3": {}, "u4": {"name": "Four"}}, state_type=StateType.USER)
    got = manager.batch_get_state(["u1", "u3", "u4", "nobody"])
    assert sorted(got) == ["u1", "u3", "u4"] and got["u4"]["name"] == "Four"
    assert manager.batch_delete_state(["u3", "u4", "nobody", "u4"], reason="cleanup") == 2
    assert manager.batch_delete_state(["u3"]) == 0
    assert manager.get_state("u3") is None
    assert manager.get_state("u4", include_deleted=True)["status"] == "deleted"  # type: ignore[index]
    with pytest.raises(InvalidTransitionError, match="'u3' is deleted"):
        manager.batch_set_state({"u5": {"type": "user"}, "u3": {"type": "user"}})
    assert manager.get_state("u5") is None
    with pytest.raises(InvalidRequestError, match="iterable of state ids"):
        manager.batch_get_state("u1")
    with pytest.raises(InvalidRequestError, match="mapping"):
        manager.batch_set_state([("u1", {})])  # type: ignore[arg-type]


def test_promote_demote_and_archived_updates(manager: StateManager) -> None:
    _user(manager)
    repos = manager.get_repositories()
    assert manager.promote_to_hot("u1")
    assert repos.hot.fetch("state:u1") is not None
    updated = manager.update_state("u1", {"data": {"after": "promote"}})
    assert updated["version"] == 2
    assert manager.demote_to_cold("u1")
    assert repos.warm.fetch("state:u1") is None and repos.cold.fetch("state:u1") is not None
    assert manager.get_state("u1") == updated
    assert manager.search_states("user").total == 0  # archived states are not searched
    again = manager.update_state("u1", None, T.ACTIVATE)
    assert again["version"] == 3 and again["data"] == {"after": "promote"}
    assert repos.warm.fetch("state:u1") is not None
    assert [h["version"] for h in manager.get_state_history("u1")] == [1, 2, 3]
    with pytest.raises(StateNotFoundError):
        manager.promote_to_hot("nobody")
    with pytest.raises(StateNotFoundError):
        manager.demote_to_cold("nobody")


def test_keys_stats_health_metrics(manager: StateManager) -> None:
    _user(manager, "user:1")
    _user(manager, "user:2")
    manager.register_state("t1", "transaction", {})
    assert manager.get_keys_by_pattern("user:*") == ["user:1", "user:2"]
    assert manager.get_keys_by_pattern("*") == ["t1", "user:1", "user:2"]
    health = manager.get_health_status()
    assert health["status"] == "healthy" and health["state_count"] == 3
    assert set(health["tiers"]) == {"hot", "warm", "cold"}
    assert all(t["available"] for t in health["tiers"].values())
    assert 0.0 <= health["cache_hit_rate"] <= 1.0
    stats = manager.get_storage_stats()
    assert stats["history_rows"] == 3
    metrics = manager.get_performance_metrics()
    assert metrics["operations"]["create"]["count"] == 3
    assert metrics["operations"]["create"]["avg_ms"] > 0
    manager.log_state_operation("custom", "t1", None, 2.5)
    assert manager.get_performance_metrics()["operations"]["custom"]["max_ms"] == 2.5
    assert manager.get_repositories().warm.backend in ("sqlite", "postgresql")


def test_history_and_record_commit_together(manager: StateManager) -> None:
    """Invariant 4: a failing history insert rolls the record write back."""
    _user(manager)
    table = manager.history.table
    with manager.history.engine.begin() as conn:  # a squatter on version 2
        conn.execute(
            table.insert(),
            [
                {
                    "state_id": "u1",
                    "version": 2,
                    "transition": "update",
                    "to_status": "created",
                    "new_record": {},
                    "created_at": datetime.now(timezone.utc),
                }
            ],
        )
    with pytest.raises(ConcurrencyError):
        manager.update_state("u1", {"data": {"x": 1}})
    manager.store.cache.clear()
    assert manager.get_state("u1")["version"] == 1  # type: ignore[index]
    assert manager.get_repositories().warm.fetch("state:u1").metadata.version == 1  # type: ignore[union-attr]

"""batch_update_state: one transition for many states, one transaction per chunk, on
SQLite + memory + filesystem and on PostgreSQL + Redis + S3 (moto server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from flask_tiered_state import signals
from flask_tiered_state.domain.context import correlation_scope
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateTransition, StateType
from flask_tiered_state.errors import (
    ConcurrencyError,
    InvalidRequestError,
    InvalidTransitionError,
    StateNotFoundError,
    ValidationError,
)
from flask_tiered_state.observability.metrics import SimpleMetricsCollector

from .conftest import build_test_store

T = StateTransition


def _users(manager: StateManager, *ids: str) -> None:
    manager.batch_set_state(
        {i: {"data": {"n": n, "plan": "free"}} for n, i in enumerate(ids)}, state_type="user"
    )


def _versions(manager: StateManager, *ids: str) -> list[int]:
    return [manager.get_state(i, include_deleted=True)["version"] for i in ids]  # type: ignore[index]


def test_applies_one_transition_with_each_items_changes(manager: StateManager) -> None:
    _users(manager, "u1", "u2", "u3")
    with correlation_scope("bulk-7"):
        result = manager.batch_update_state(
            {"u3": {"data": {"plan": "pro"}}, "u1": None, "u2": {"name": "Two"}},
            T.ACTIVATE,
            actor="ops",
            reason="verified",
            merge=True,
        )
    assert list(result) == ["u3", "u1", "u2"]  # the order of the items
    assert result["u3"]["data"] == {"n": 2, "plan": "pro"}  # merged
    assert result["u2"]["name"] == "Two" and result["u2"]["data"] == {"n": 1, "plan": "free"}
    for state_id, record in result.items():
        assert record["status"] == "active" and record["version"] == 2
        assert manager.get_state(state_id) == record
        rows = manager.get_state_history(state_id)
        assert [r["transition"] for r in rows] == ["create", "activate"]
        last = rows[-1]
        assert (last["actor"], last["reason"], last["correlation_id"]) == (
            "ops",
            "verified",
            "bulk-7",
        )
        assert last["new_record"] == record and last["from_status"] == "created"
    # without merge the data given replaces the record's, as in update_state
    replaced = manager.batch_update_state({"u3": {"data": {"plan": "team"}}})
    assert replaced["u3"]["data"] == {"plan": "team"} and replaced["u3"]["status"] == "active"
    assert manager.batch_update_state({}) == {}


@pytest.mark.parametrize(
    ("items", "transition", "error", "message"),
    [
        ({"u1": None, "u2": None, "nobody": None}, T.ACTIVATE, StateNotFoundError, "'nobody'"),
        ({"u1": None, "u2": None}, T.RESUME, InvalidTransitionError, "'u1' is created"),
        ({"u1": None, "u2": {"data": {"n": -1}}}, T.UPDATE, ValidationError, "'u2'"),
        ({"u1": None, "u2": {"status": "active"}}, T.UPDATE, ValidationError, "managed"),
    ],
)
def test_a_refused_item_writes_nothing_of_its_chunk(
    manager: StateManager,
    items: dict[str, Any],
    transition: StateTransition,
    error: type[Exception],
    message: str,
) -> None:
    _users(manager, "u1", "u2", "u3")
    manager.register_validator("user", lambda state: state["data"].get("n", 0) >= 0)
    rows = manager.history.count()
    with pytest.raises(error, match=message) as info:
        manager.batch_update_state(items, transition)
    assert info.value.details["batch_committed"] == 0  # type: ignore[attr-defined]
    assert _versions(manager, "u1", "u2", "u3") == [1, 1, 1]
    assert manager.history.count() == rows


def test_chunks_commit_in_order_and_a_failing_chunk_stops_the_batch(
    manager: StateManager,
) -> None:
    ids = [f"u{n}" for n in range(1, 8)]
    _users(manager, *ids)
    manager.update_state("u6", None, T.EXPIRE)  # in the third chunk: cannot be activated
    seen: list[str] = []

    def activated(state_id: str, old: Any, new: Any, transition: StateTransition) -> None:
        seen.append(state_id)

    manager.register_callback("user_activated", activated)
    with pytest.raises(InvalidTransitionError, match="'u6' is expired") as info:
        manager.batch_update_state(dict.fromkeys(ids), T.ACTIVATE, chunk_size=2)
    assert info.value.details["batch_committed"] == 4
    assert seen == ["u1", "u2", "u3", "u4"]  # events of the committed chunks only
    assert _versions(manager, *ids) == [2, 2, 2, 2, 1, 2, 1]
    assert [manager.get_state(i)["status"] for i in ids] == [  # type: ignore[index]
        "active", "active", "active", "active", "created", "expired", "created",
    ]  # fmt: skip


def test_events_follow_the_commit_in_item_order(manager: StateManager) -> None:
    _users(manager, "a", "b", "c")
    observed: list[tuple[str, int, str | None]] = []

    def on_transition(sender: Any, state_id: str, to_status: str, **extra: Any) -> None:
        stored = manager.get_state(state_id)  # the change is committed and visible
        observed.append((state_id, stored["version"] if stored else 0, to_status))

    with signals.state_transitioned.connected_to(on_transition, manager):
        manager.batch_update_state({"c": None, "a": None, "b": None}, "activate", chunk_size=2)
    assert observed == [("c", 2, "active"), ("a", 2, "active"), ("b", 2, "active")]
    ops = manager.get_performance_metrics()["operations"]
    assert ops["activate"]["count"] == 3


def test_bad_arguments_are_refused_before_anything_is_read(manager: StateManager) -> None:
    _users(manager, "u1")
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"items": [("u1", None)]}, InvalidRequestError, "mapping of state id"),
        ({"items": {"u1": None, "bad id": None}}, InvalidRequestError, "state ids are"),
        ({"items": {"u1": None, "u2": ["data"]}}, ValidationError, "'u2' must be a mapping"),
        ({"items": {"u1": None}, "transition": "create"}, InvalidRequestError, "transition"),
        ({"items": {"u1": None}, "transition": "rollback"}, InvalidRequestError, "allowed"),
        ({"items": {"u1": None}, "chunk_size": 0}, InvalidRequestError, "chunk_size"),
        ({"items": {"u1": None}, "chunk_size": 5001}, InvalidRequestError, "at most 5000"),
        ({"items": {"u1": None}, "merge": "yes"}, InvalidRequestError, "merge"),
        ({"items": {"u1": None}, "actor": 7}, InvalidRequestError, "actor"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            manager.batch_update_state(**kwargs)
    assert _versions(manager, "u1") == [1]


def test_a_stale_cached_copy_is_read_again_and_no_update_is_lost(
    manager: StateManager,
) -> None:
    _users(manager, "u1", "u2")
    cached = manager.get_state("u1")
    assert cached is not None
    # Another writer changes u1 behind this process's cache (straight in the WARM tier).
    foreign = {**cached, "data": {**cached["data"], "foreign": True}, "version": 2}
    text = json.dumps(foreign, sort_keys=True, separators=(",", ":"))
    warm = manager.get_repositories().warm
    current = warm.fetch("state:u1")
    assert current is not None
    warm.store("state:u1", text, expected_version=current.metadata.version)
    result = manager.batch_update_state(
        {"u1": {"data": {"mine": 1}}, "u2": {"data": {"mine": 2}}}, merge=True
    )
    assert result["u1"]["version"] == 3
    assert result["u1"]["data"] == {"n": 0, "plan": "free", "foreign": True, "mine": 1}
    assert result["u2"]["version"] == 2
    assert [r["version"] for r in manager.get_state_history("u1")] == [1, 3]


def test_a_chunk_that_keeps_losing_races_names_the_state(manager: StateManager) -> None:
    _users(manager, "u1", "u2")
    manager.get_state("u2")
    # A history row squats on u2's next version: every attempt of the chunk conflicts.
    table = manager.history.table
    with manager.history.engine.begin() as conn:
        conn.execute(
            table.insert(),
            [{"state_id": "u2", "version": 2, "transition": "update", "to_status": "created",
              "new_record": {}, "created_at": datetime.now(timezone.utc)}],
        )  # fmt: skip
    with pytest.raises(ConcurrencyError, match="'u2'") as info:
        manager.batch_update_state({"u1": None, "u2": None})
    assert info.value.key == "u2" and info.value.details["batch_committed"] == 0
    assert _versions(manager, "u1", "u2") == [1, 1]


def test_sessions_and_durable_states_in_one_batch(manager: StateManager) -> None:
    _users(manager, "u1")
    manager.register_state("s1", StateType.SESSION, {"data": {"user": "u1"}})
    result = manager.batch_update_state({"s1": None, "u1": None}, T.ACTIVATE)
    assert result["s1"]["status"] == result["u1"]["status"] == "active"
    repos = manager.get_repositories()
    hot = repos.hot.fetch("state:s1")
    assert hot is not None and json.loads(hot.value)["version"] == 2
    assert hot.metadata.ttl_seconds == 3600 and repos.warm.fetch("state:s1") is None
    assert [r["version"] for r in manager.get_state_history("s1")] == [1, 2]


# -- round trips ------------------------------------------------------------------------


@pytest.fixture
def counted(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[StateManager, SimpleMetricsCollector]]:
    """A manager whose store counts the calls of each tier."""
    collector = SimpleMetricsCollector()
    store = build_test_store(backend, request, tmp_path, metrics=collector)
    manager = StateManager.create(store=store)
    try:
        yield manager, collector
    finally:
        manager.close()


def _calls(collector: SimpleMetricsCollector, operation: str) -> dict[str, int]:
    snapshot = collector.snapshot()
    return {
        tier: snapshot.get(tier, {}).get("operations", {}).get(operation, {}).get("count", 0)
        for tier in ("hot", "warm", "cold")
    }


def test_batch_reads_one_round_trip_per_tier_per_chunk(
    counted: tuple[StateManager, SimpleMetricsCollector],
) -> None:
    manager, collector = counted
    ids = [f"u{n}" for n in range(5)]
    _users(manager, *ids)
    manager.store.cache.invalidate_many([f"state:{i}" for i in ids])
    before_many, before_one = _calls(collector, "fetch_many"), _calls(collector, "fetch")
    manager.batch_update_state(dict.fromkeys(ids), T.ACTIVATE, chunk_size=2)
    many, one = _calls(collector, "fetch_many"), _calls(collector, "fetch")
    assert one == before_one  # never one read per state
    assert many["warm"] - before_many["warm"] == 3  # one per chunk of 2, 2, 1
    assert many["hot"] - before_many["hot"] == 3  # HOT is looked at first, once per chunk
    assert many["cold"] == before_many["cold"]  # everything was found above COLD
    # Records in the local cache cost no read at all.
    manager.batch_update_state(dict.fromkeys(ids), T.SUSPEND, chunk_size=2)
    assert _calls(collector, "fetch_many") == many and _calls(collector, "fetch") == one


def test_update_of_a_cached_record_reads_no_tier(
    counted: tuple[StateManager, SimpleMetricsCollector],
) -> None:
    manager, collector = counted
    manager.register_state("u1", StateType.USER, {"data": {"n": 1}})
    assert manager.get_state("u1") is not None
    reads = (_calls(collector, "fetch"), _calls(collector, "fetch_many"))
    for n in range(3):
        manager.update_state("u1", {"data": {"n": n}})
    assert (_calls(collector, "fetch"), _calls(collector, "fetch_many")) == reads
    assert manager.get_state("u1")["version"] == 4  # type: ignore[index]


def test_a_chunk_is_refused_at_its_first_refused_item_in_order(manager: StateManager) -> None:
    """A deleted state before a missing one: the refusal names the deleted one (a
    regression: the missing id was named first, found by the state machine test)."""
    manager.register_state("s", "user", {"data": {}})
    manager.delete_state("s")
    with pytest.raises(InvalidTransitionError) as refused:
        manager.batch_update_state({"s": None, "a": None}, "activate", chunk_size=2)
    assert refused.value.details["state_id"] == "s"
    with pytest.raises(StateNotFoundError) as missing:
        manager.batch_update_state({"a": None, "s": None}, "activate", chunk_size=2)
    assert missing.value.details["state_id"] == "a"

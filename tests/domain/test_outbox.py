"""The outbox and the dispatcher, in one process: asynchronous callbacks are delivered
once per committed change, in commit order per state, retried with backoff, then dead;
nothing is delivered for a change that did not commit. The multi-process guarantees
(SIGKILL, N dispatchers) are in tests/faults/."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_tiered_state import signals
from flask_tiered_state.domain.context import correlation_scope
from flask_tiered_state.domain.dispatcher import EventDispatcher
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateTransition
from flask_tiered_state.errors import (
    DispatcherBusyError,
    InvalidRequestError,
    InvalidTransitionError,
)
from flask_tiered_state.observability.metrics import SimpleMetricsCollector

from .conftest import build_test_store

Delivery = tuple[str, int, str, str]  # state id, version, transition, event id


class Clock:
    """A clock the test moves: backoff without waiting."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def recorder(
    seen: list[Delivery], fail: Callable[[str, int], bool] = lambda state_id, version: False
) -> Callable[..., None]:
    def deliver(
        state_id: str,
        old_state: dict[str, Any] | None,
        new_state: dict[str, Any],
        transition: StateTransition,
        *,
        event_id: str,
    ) -> None:
        if fail(state_id, new_state["version"]):
            raise RuntimeError(f"downstream refused {state_id} v{new_state['version']}")
        seen.append((state_id, new_state["version"], transition.value, event_id))

    return deliver


def history_events(manager: StateManager, state_id: str) -> list[tuple[int, str]]:
    return [(row["version"], row["event_id"]) for row in manager.get_state_history(state_id)]


@pytest.fixture
def dispatcher(manager: StateManager) -> Iterator[EventDispatcher]:
    with EventDispatcher(manager, poll_interval=0.01) as built:
        yield built


def test_async_callbacks_run_in_the_dispatcher_with_the_history_event_id(
    manager: StateManager, dispatcher: EventDispatcher
) -> None:
    sync_calls: list[str] = []
    seen: list[Delivery] = []
    manager.register_callback("user_suspended", lambda *args: sync_calls.append(args[0]))
    manager.register_callback("user_suspended", recorder(seen), asynchronous=True)
    manager.register_callback("user_created", recorder(seen), asynchronous=True, key="created")
    manager.register_state("u1", "user", {"name": "Ann"})
    manager.update_state("u1", None, "suspend")

    assert sync_calls == ["u1"]  # synchronous callbacks stay synchronous
    assert seen == []  # asynchronous ones wait for a dispatcher
    assert [e["status"] for e in manager.get_events("pending")] == ["pending", "pending"]

    report = dispatcher.run(once=True)

    assert report.delivered == 2 and report.failed == report.dead == 0
    events = dict(history_events(manager, "u1"))
    assert seen == [
        ("u1", 1, "create", events[1]),
        ("u1", 2, "suspend", events[2]),
    ]
    assert manager.get_events("pending") == []
    assert {e["status"] for e in manager.get_events("delivered")} == {"delivered"}
    assert dispatcher.run(once=True).delivered == 2  # nothing more: the totals stay


def test_per_state_commit_order_and_one_delivery_per_change(
    manager: StateManager, dispatcher: EventDispatcher
) -> None:
    seen: list[Delivery] = []
    manager.register_callback("feature_updated", recorder(seen), asynchronous=True)
    ids = [f"f{n}" for n in range(6)]
    for state_id in ids:
        manager.register_state(state_id, "feature", {"data": {"n": 0}})
    for round_ in range(1, 6):
        for state_id in reversed(ids):
            manager.update_state(state_id, {"data": {"n": round_}})

    dispatcher.batch = 7  # several passes, each of at most one delivery per state
    dispatcher.run(once=True)

    assert len(seen) == 30
    assert len({event_id for *_, event_id in seen}) == 30
    for state_id in ids:
        versions = [version for sid, version, *_ in seen if sid == state_id]
        assert versions == [2, 3, 4, 5, 6]
        by_version = dict(history_events(manager, state_id))
        assert {(v, e) for sid, v, _, e in seen if sid == state_id} == {
            (v, by_version[v]) for v in versions
        }


def test_no_delivery_for_a_change_that_did_not_commit(
    manager: StateManager, dispatcher: EventDispatcher
) -> None:
    seen: list[Delivery] = []
    manager.register_callback("user_resumed", recorder(seen), asynchronous=True)
    manager.register_callback("user_updated", recorder(seen), asynchronous=True)

    def refuse(record: dict[str, Any]) -> None:
        if record["data"].get("bad"):
            raise ValueError("bad data")

    manager.register_validator("user", refuse)
    manager.register_state("u1", "user", {})
    with pytest.raises(InvalidTransitionError):
        manager.update_state("u1", None, "resume")  # created, never suspended
    with pytest.raises(Exception, match="bad data"):
        manager.update_state("u1", {"data": {"bad": True}})

    assert manager.get_events() == []
    assert dispatcher.run(once=True).delivered == 0
    assert seen == []


def test_a_failing_callback_is_retried_with_backoff_then_dead_and_blocks_later_events(
    manager: StateManager,
) -> None:
    seen: list[Delivery] = []
    broken = {"on": True}
    signalled: list[tuple[str, str]] = []

    def on_failed(sender: Any, **kw: Any) -> None:
        signalled.append(("failed", kw["callback"]))

    def on_dead(sender: Any, **kw: Any) -> None:
        signalled.append(("dead", kw["error"]))

    signals.event_failed.connect(on_failed)
    signals.event_dead.connect(on_dead)
    try:
        manager.register_callback(
            "user_updated",
            recorder(seen, fail=lambda sid, version: broken["on"] and version == 2),
            asynchronous=True,
            max_attempts=3,
            backoff=10.0,
            key="billing",
        )
        manager.register_state("u1", "user", {})
        manager.update_state("u1", {"data": {"n": 1}})  # v2: its delivery fails
        manager.update_state("u1", {"data": {"n": 2}})  # v3: waits for v2 (commit order)
        clock = Clock()
        with EventDispatcher(manager, clock=clock) as dispatcher:
            first = dispatcher.run_once()
            assert (first.delivered, first.failed, first.dead) == (0, 1, 0)
            [failed] = manager.get_events("failed")
            assert failed["version"] == 2 and failed["attempts"] == 1
            assert "RuntimeError: downstream refused u1 v2" in failed["last_error"]
            # backoff 10 s x 2^0 with jitter 0.5-1.5: not due before 5 s, due after 15 s
            assert 5.0 <= failed["next_attempt_at"] - clock.now <= 15.0
            clock.now += 4.9
            assert dispatcher.run_once().work == 0  # neither v2 (backoff) nor v3 (order)
            clock.now += 10.2
            assert dispatcher.run_once().failed == 1  # second attempt: 20 s x jitter next
            clock.now += 30.1
            third = dispatcher.run_once()
            assert (third.failed, third.dead) == (0, 1)
            [dead] = manager.get_events("dead")
            assert (dead["version"], dead["attempts"]) == (2, 3)
            assert signalled == [
                ("failed", "billing"),
                ("failed", "billing"),
                ("dead", "RuntimeError: downstream refused u1 v2"),
            ]
            # the dead letter no longer blocks the state's later events
            assert dispatcher.run_once().delivered == 1
            assert [version for _, version, *_ in seen] == [3]

            broken["on"] = False
            assert manager.retry_events(all_dead=True) == 1
            assert dispatcher.run_once().delivered == 1
            assert [version for _, version, *_ in seen] == [3, 2]
            assert manager.get_events("dead") == []
    finally:
        signals.event_failed.disconnect(on_failed)
        signals.event_dead.disconnect(on_dead)


def test_retry_by_id_and_bad_retry_requests(
    embedded_manager: StateManager,
) -> None:
    manager = embedded_manager
    manager.register_callback(
        "user_created", recorder([], fail=lambda *a: True), asynchronous=True, max_attempts=1
    )
    manager.register_state("u1", "user", {})
    with EventDispatcher(manager) as dispatcher:
        assert dispatcher.run_once().dead == 1
    [dead] = manager.get_events("dead")
    assert manager.retry_events([dead["id"]]) == 1
    assert manager.get_events("pending")[0]["attempts"] == 0
    assert manager.retry_events([dead["id"] + 1000]) == 0
    for bad in ({"ids": [0]}, {"ids": ["x"]}, {}):
        with pytest.raises(InvalidRequestError):
            manager.retry_events(**bad)
    with pytest.raises(InvalidRequestError, match="pending, delivered, dead, failed"):
        manager.get_events("lost")


def test_a_callback_missing_from_the_dispatchers_process_is_a_failed_attempt(
    embedded_manager: StateManager,
) -> None:
    manager = embedded_manager
    callback = recorder([])
    manager.register_callback("user_created", callback, asynchronous=True, key="mailer")
    manager.register_state("u1", "user", {})
    manager.unregister_callback("user_created", callback)  # e.g. a deploy removed it
    with EventDispatcher(manager) as dispatcher:
        assert dispatcher.run_once().failed == 1
    [failed] = manager.get_events("failed")
    assert "No asynchronous callback 'mailer' for 'user_created'" in failed["last_error"]


def test_unregistering_stops_new_deliveries_only(embedded_manager: StateManager) -> None:
    manager = embedded_manager
    seen: list[Delivery] = []
    callback = recorder(seen)
    manager.register_callback("user_updated", callback, asynchronous=True)
    manager.register_state("u1", "user", {})
    manager.update_state("u1", {"data": {"a": 1}})
    assert manager.unregister_callback("user_updated", callback)
    manager.update_state("u1", {"data": {"a": 2}})
    assert [e["version"] for e in manager.get_events("pending")] == [2]


def test_hot_home_and_batch_changes_have_their_deliveries(
    manager: StateManager, dispatcher: EventDispatcher
) -> None:
    seen: list[Delivery] = []
    manager.register_callback("session_created", recorder(seen), asynchronous=True)
    manager.register_callback("user_created", recorder(seen), asynchronous=True)
    manager.register_callback("user_deleted", recorder(seen), asynchronous=True)
    manager.register_state("s1", "session", {"data": {"cart": 1}})
    manager.batch_set_state({f"u{n}": {"type": "user", "data": {}} for n in range(5)})
    manager.batch_delete_state(["u0", "u1"])

    assert dispatcher.run(once=True).delivered == 8
    assert sorted((sid, t) for sid, _, t, _ in seen) == sorted(
        [("s1", "create")]
        + [(f"u{n}", "create") for n in range(5)]
        + [("u0", "delete"), ("u1", "delete")]
    )
    session_event = dict(history_events(manager, "s1"))[1]
    assert ("s1", 1, "create", session_event) in seen


def test_delivery_counts_and_lag_reach_the_metrics(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    collector = SimpleMetricsCollector()
    store = build_test_store("embedded", request, tmp_path, metrics=collector)
    manager = StateManager.create(store=store)
    try:
        manager.register_callback("user_created", recorder([]), asynchronous=True)
        manager.register_state("u1", "user", {})
        manager.register_callback(
            "user_updated", recorder([], fail=lambda *a: True), asynchronous=True
        )
        manager.update_state("u1", {"data": {}})
        clock = Clock()
        clock.now += 30
        with EventDispatcher(manager, clock=clock) as dispatcher:
            dispatcher.run_once()  # v1, then (the same function: commit order) v2
            dispatcher.run_once()
        figures = collector.events()
        assert figures["delivered"] == {"user_created": 1}
        assert figures["failed"] == {"user_updated": 1}
        assert 29 <= figures["lag_seconds"] <= 31  # the failed one still waits
    finally:
        manager.close()


def test_delivered_rows_are_pruned_after_the_retention(embedded_manager: StateManager) -> None:
    manager = embedded_manager
    manager.register_callback("user_created", recorder([]), asynchronous=True)
    manager.register_state("u1", "user", {})
    clock = Clock()
    with EventDispatcher(manager, clock=clock, retention_seconds=3600) as dispatcher:
        dispatcher.run_once()
        clock.now += 3599
        assert dispatcher.prune()["deliveries"] == 0
        clock.now += 2
        assert dispatcher.prune()["deliveries"] == 1
    assert manager.get_events() == []


def test_one_dispatcher_per_sqlite_database(embedded_manager: StateManager) -> None:
    first = EventDispatcher(embedded_manager)
    try:
        with pytest.raises(DispatcherBusyError, match="SQLite supports one dispatcher") as info:
            EventDispatcher(embedded_manager)
        assert f"pid {__import__('os').getpid()}" in info.value.message
    finally:
        first.close()
    EventDispatcher(embedded_manager).close()  # free again


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch": 0}, "batch must be a whole number from 1 to 1000"),
        ({"batch": 1001}, "batch must be"),
        ({"concurrency": True}, "concurrency must be"),
        ({"poll_interval": 0}, "poll_interval must be a positive number"),
        ({"retention_seconds": -1}, "retention_seconds must be"),
        ({"concurrency": 2}, "On SQLite the dispatcher runs one thread"),
    ],
)
def test_bad_dispatcher_options(
    embedded_manager: StateManager, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        EventDispatcher(embedded_manager, **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be a whole number from 1 to 100"),
        ({"backoff": -1}, "backoff must be a number of seconds"),
        ({"key": ""}, "key must be a string"),
    ],
)
def test_bad_async_callback_options(
    embedded_manager: StateManager, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        embedded_manager.register_callback(
            "user_created", recorder([]), asynchronous=True, **options
        )


def test_async_callbacks_must_take_the_event_id(embedded_manager: StateManager) -> None:
    with pytest.raises(InvalidRequestError, match="must take the keyword argument event_id"):
        embedded_manager.register_callback(
            "user_created", lambda sid, old, new, transition: None, asynchronous=True
        )
    with pytest.raises(InvalidRequestError, match="already registered"):
        for _ in range(2):
            embedded_manager.register_callback(
                "user_created", recorder([]), asynchronous=True, key="same"
            )
    with pytest.raises(InvalidRequestError, match="options of asynchronous callbacks"):
        embedded_manager.register_callback("user_created", print, max_attempts=3)


@pytest.mark.postgres
def test_concurrent_dispatcher_threads_deliver_each_event_once_in_order(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = build_test_store("servers", request, tmp_path)
    manager = StateManager.create(store=store)
    lock = threading.Lock()
    seen: list[Delivery] = []

    def deliver(*args: Any, event_id: str) -> None:
        with lock:
            recorder(seen)(*args, event_id=event_id)

    try:
        manager.register_callback("feature_updated", deliver, asynchronous=True)
        manager.batch_set_state({f"f{n}": {"type": "feature", "data": {}} for n in range(20)})
        for round_ in range(10):
            manager.batch_update_state({f"f{n}": {"data": {"r": round_}} for n in range(20)})
        with EventDispatcher(manager, concurrency=4, batch=5, poll_interval=0.01) as dispatcher:
            report = dispatcher.run(once=True)
        assert report.delivered == 200
        assert len({event_id for *_, event_id in seen}) == 200
        for n in range(20):
            assert [v for sid, v, *_ in seen if sid == f"f{n}"] == list(range(2, 12))
        with manager.history.engine.connect() as connection:
            assert (
                connection.execute(
                    sa.text("SELECT count(*) FROM tiered_state_deliveries WHERE status='pending'")
                ).scalar_one()
                == 0
            )
    finally:
        manager.close()


def test_what_a_callback_changes_carries_the_events_correlation_id(
    embedded_manager: StateManager,
) -> None:
    manager = embedded_manager

    def audit(
        state_id: str, old: Any, new: dict[str, Any], transition: StateTransition, *,
        event_id: str,
    ) -> None:  # fmt: skip
        manager.register_state(f"audit-{event_id}", "feature", {"data": {"of": state_id}})

    manager.register_callback("user_created", audit, asynchronous=True)
    with correlation_scope("signup-7"):
        manager.register_state("u1", "user", {})
    manager.register_state("u2", "user", {})
    with EventDispatcher(manager) as dispatcher:
        dispatcher.run(once=True)
    for state_id, expected in (("u1", "signup-7"), ("u2", None)):
        [created] = manager.get_state_history(state_id)
        [audit_row] = manager.get_state_history(f"audit-{created['event_id']}")
        assert audit_row["correlation_id"] == (expected or f"event:{created['event_id']}")

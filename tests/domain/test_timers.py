"""Durable timers: scheduled transitions applied by the dispatcher through the
lifecycle, never early, at most once; skipped when their ``if_version`` no longer
matches; cancellable. Three dispatcher processes are in tests/faults/."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from flask_tiered_state.domain.dispatcher import EventDispatcher
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import ConcurrencyError, InvalidRequestError, StateNotFoundError


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def history(manager: StateManager, state_id: str) -> list[tuple[int, str, str | None]]:
    rows = manager.get_state_history(state_id)
    return [(r["version"], r["transition"], r["actor"]) for r in rows]


def timer(manager: StateManager, timer_id: str) -> dict[str, Any]:
    [found] = [t for t in manager.get_scheduled(status=None) if t["timer_id"] == timer_id]
    return found


def test_a_timer_applies_its_transition_when_due_and_not_before(manager: StateManager) -> None:
    manager.register_state("sub1", "subscription", {"data": {"plan": "pro"}})
    manager.update_state("sub1", None, "activate")
    ends = datetime.now(timezone.utc) + timedelta(hours=1)
    scheduled = manager.schedule_transition("sub1", "expire", at=ends, reason="end of term")
    assert scheduled["status"] == "scheduled"
    assert scheduled["due_at"] == pytest.approx(ends.timestamp())
    assert manager.get_scheduled("sub1") == [scheduled]

    clock = Clock()
    with EventDispatcher(manager, clock=clock) as dispatcher:
        clock.now = ends.timestamp() - 0.001
        assert dispatcher.run_once().timers_applied == 0  # never early
        assert manager.get_state("sub1")["status"] == "active"  # type: ignore[index]
        clock.now = ends.timestamp()
        assert dispatcher.run_once().timers_applied == 1
        assert dispatcher.run_once().timers_applied == 0  # at most once

    record = manager.get_state("sub1")
    assert record is not None and record["status"] == "expired"
    assert history(manager, "sub1")[-1] == (3, "expire", "scheduler")
    last = manager.get_state_history("sub1")[-1]
    assert last["reason"] == "end of term"
    assert last["correlation_id"] == f"timer:{scheduled['timer_id']}"
    done = timer(manager, scheduled["timer_id"])
    assert done["status"] == "applied"
    assert done["outcome"] == "applied: version 3, status expired"
    assert manager.get_scheduled("sub1") == []  # none scheduled any more


def test_a_timer_whose_version_moved_on_is_skipped_and_recorded(manager: StateManager) -> None:
    manager.register_state("u1", "user", {})
    manager.update_state("u1", None, "suspend")
    resume = manager.schedule_transition("u1", "resume", after=timedelta(0), if_version=2)
    manager.update_state("u1", {"name": "changed meanwhile"})  # version 3

    with EventDispatcher(manager) as dispatcher:
        assert dispatcher.run_once().timers_skipped == 1
    skipped = timer(manager, resume["timer_id"])
    assert skipped["status"] == "skipped"
    assert "if_version 2 no longer matches: the state is at version 3" in skipped["outcome"]
    assert history(manager, "u1")[-1][1] == "update"  # nothing applied


def test_timers_of_gone_states_are_skipped_and_refused_ones_failed(
    manager: StateManager,
) -> None:
    manager.register_state("u1", "user", {})
    manager.register_state("u2", "user", {})
    gone = manager.schedule_transition("u1", "activate", after=timedelta(0))
    refused = manager.schedule_transition("u2", "resume", after=timedelta(0))  # not suspended
    manager.delete_state("u1")

    with EventDispatcher(manager) as dispatcher:
        report = dispatcher.run_once()
    assert (report.timers_applied, report.timers_skipped, report.timers_failed) == (0, 1, 1)
    assert timer(manager, gone["timer_id"])["status"] == "skipped"
    failed = timer(manager, refused["timer_id"])
    assert failed["status"] == "failed" and "resume" in failed["outcome"]
    assert history(manager, "u2") == [(1, "create", None)]


def test_cancelled_timers_never_apply(embedded_manager: StateManager) -> None:
    manager = embedded_manager
    manager.register_state("u1", "user", {})
    first = manager.schedule_transition("u1", "activate", after=timedelta(0))
    manager.schedule_transition("u1", "suspend", after=timedelta(0))
    manager.schedule_transition("u1", "expire", after=timedelta(days=30))
    assert manager.cancel_scheduled(first["timer_id"]) == 1
    assert manager.cancel_scheduled(first["timer_id"]) == 0  # already cancelled
    assert manager.cancel_scheduled(state_id="u1", transition="suspend") == 1
    assert [t["transition"] for t in manager.get_scheduled("u1")] == ["expire"]
    assert {t["status"] for t in manager.get_scheduled("u1", status="cancelled")} == {"cancelled"}

    with EventDispatcher(manager) as dispatcher:
        assert dispatcher.run_once().work == 0
    assert history(manager, "u1") == [(1, "create", None)]
    assert manager.cancel_scheduled(state_id="u1") == 1


def test_a_timer_applied_by_a_dispatcher_that_died_before_marking_it_is_not_applied_again(
    embedded_manager: StateManager,
) -> None:
    manager = embedded_manager
    manager.register_state("u1", "user", {})
    due = manager.schedule_transition("u1", "activate", after=timedelta(0))
    # what a dispatcher does before it marks the timer: the transition, keyed by the timer
    manager.update_state(
        "u1", None, "activate", actor="scheduler", idempotency_key=f"timer:{due['timer_id']}"
    )
    with EventDispatcher(manager) as dispatcher:
        assert dispatcher.run_once().timers_applied == 1  # the stored result
    assert history(manager, "u1") == [(1, "create", None), (2, "activate", "scheduler")]
    assert timer(manager, due["timer_id"])["status"] == "applied"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda m: m.schedule_transition("u1", "expire"), InvalidRequestError, "at= or after="),
        (
            lambda m: m.schedule_transition(
                "u1", "expire", at=datetime.now(timezone.utc), after=timedelta(0)
            ),
            InvalidRequestError,
            "one of them",
        ),
        (
            lambda m: m.schedule_transition("u1", "expire", at=datetime.now()),
            InvalidRequestError,
            "timezone-aware datetime",
        ),
        (
            lambda m: m.schedule_transition("u1", "expire", after=timedelta(seconds=-1)),
            InvalidRequestError,
            "timedelta >= 0",
        ),
        (
            lambda m: m.schedule_transition("u1", "expire", after=60),
            InvalidRequestError,
            "timedelta",
        ),
        (
            lambda m: m.schedule_transition("u1", "create", after=timedelta(0)),
            InvalidRequestError,
            "transition",
        ),
        (
            lambda m: m.schedule_transition("u1", "expire", after=timedelta(0), if_version=0),
            InvalidRequestError,
            "if_version",
        ),
        (
            lambda m: m.schedule_transition("nobody", "expire", after=timedelta(0)),
            StateNotFoundError,
            "nobody",
        ),
        (lambda m: m.cancel_scheduled(), InvalidRequestError, "timer_id or a state_id"),
        (lambda m: m.cancel_scheduled(7), InvalidRequestError, "timer_id must be"),
        (lambda m: m.get_scheduled(status="pending"), InvalidRequestError, "scheduled, applied"),
        (lambda m: m.get_scheduled(limit=0), InvalidRequestError, "limit"),
    ],
)
def test_bad_timer_requests(
    embedded_manager: StateManager, call: Any, error: type[Exception], message: str
) -> None:
    embedded_manager.register_state("u1", "user", {})
    with pytest.raises(error, match=message):
        call(embedded_manager)
    assert embedded_manager.get_scheduled(status=None) == []


def test_a_timer_without_if_version_that_loses_races_waits_for_a_later_pass(
    embedded_manager: StateManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Losing every retry to other writers (simulated: hard to provoke on demand) is no
    reason to drop the timer: it stays scheduled and the next pass applies it."""
    manager = embedded_manager
    manager.register_state("u1", "user", {})
    due = manager.schedule_transition("u1", "activate", after=timedelta(0))
    update = manager.update_state
    contended = iter([True])

    def busy_then_free(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if next(contended, False):
            raise ConcurrencyError("u1", 1, 2)
        return update(*args, **kwargs)

    monkeypatch.setattr(manager, "update_state", busy_then_free)
    with EventDispatcher(manager) as dispatcher:
        assert dispatcher.run_once().work == 0
        assert timer(manager, due["timer_id"])["status"] == "scheduled"
        assert dispatcher.run_once().timers_applied == 1
    assert history(manager, "u1")[-1] == (2, "activate", "scheduler")

"""``manager.acting_as(role)``: every public read and change checks its action against
the role map; a denied call raises AccessDeniedError and writes nothing; an allowed
change records the acting actor. Per thread and per asyncio task; blocks nest."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from flask_tiered_state.domain.acting import NON_HTTP_ACTIONS
from flask_tiered_state.domain.encryption import generate_master_key
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import (
    AccessDeniedError,
    ConfigurationError,
    InvalidRequestError,
    StateNotFoundError,
)
from flask_tiered_state.roles import KNOWN_ACTIONS, RoleBasedAccess

from .conftest import build_test_store

_ids = itertools.count(1)
TRANSITIONS = tuple(f"states.transition.{t}" for t in
                    ("update", "activate", "suspend", "resume", "expire", "delete"))  # fmt: skip


def no_identity(request: Any) -> None:
    return None


def role_map(roles: dict[str, list[str]]) -> RoleBasedAccess:
    return RoleBasedAccess(roles, identity=no_identity)


@pytest.fixture
def manager(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateManager]:
    """A manager on each backend set, with encryption (for erase_state) and a role map."""
    store = build_test_store(backend, request, tmp_path)
    created = StateManager.create(store=store, encryption_keys=[generate_master_key()])
    created.register_state_type("secret", encrypted_fields=["data.pin"])
    created.set_roles(role_map({"ops": ["*"], "support": ["states.read"], "nobody": []}))
    try:
        yield created
    finally:
        created.close()


def seeded(manager: StateManager, *transitions: str, state_type: str = "user") -> str:
    state_id = f"s{next(_ids)}"
    manager.register_state(state_id, state_type, {"data": {"plan": "free", "pin": "1234"}})
    for transition in transitions:
        data = {"data": {"plan": "pro", "pin": "1234"}} if transition == "update" else None
        manager.update_state(state_id, data, transition)
    return state_id


@dataclass
class Case:
    """A manager call (``call(manager, state_id)``), the actions it needs, and the state
    it works on (``prepare(manager) -> state_id``)."""

    call: Callable[[StateManager, str], Any]
    actions: tuple[str, ...]
    prepare: Callable[[StateManager], str] = seeded
    writes: bool = False


def timer_of(manager: StateManager) -> str:
    state_id = seeded(manager)
    return str(
        manager.schedule_transition(state_id, "expire", after=timedelta(hours=1))["timer_id"]
    )


def with_timer(manager: StateManager) -> str:
    state_id = seeded(manager)
    manager.schedule_transition(state_id, "expire", after=timedelta(hours=1))
    return state_id


CASES: dict[str, Case] = {
    "get_state": Case(lambda m, s: m.get_state(s), ("states.read",)),
    "batch_get_state": Case(lambda m, s: m.batch_get_state([s]), ("states.read",)),
    "search_states": Case(lambda m, s: m.search_states("user", {"data.plan": "free"}),
                          ("states.list",)),
    "get_states_by_type": Case(lambda m, s: m.get_states_by_type("user"), ("states.list",)),
    "count_states": Case(lambda m, s: m.count_states(), ("states.list",)),
    "get_keys_by_pattern": Case(lambda m, s: m.get_keys_by_pattern("s*"), ("states.list",)),
    "get_state_history": Case(lambda m, s: m.get_state_history(s), ("states.history",)),
    "get_history_page": Case(lambda m, s: m.get_history_page(s), ("states.history",)),
    "get_recent_changes": Case(lambda m, s: m.get_recent_changes(s), ("states.history",)),
    "get_changes_by_transition": Case(
        lambda m, s: m.get_changes_by_transition(s, "create"), ("states.history",)
    ),
    "get_recent_activity": Case(lambda m, s: m.get_recent_activity(), ("states.history",)),
    "diff_versions": Case(lambda m, s: m.diff_versions(s, 1, 2), ("states.diff",),
                          lambda m: seeded(m, "update")),
    "register_state": Case(lambda m, s: m.register_state(s + "-new", "user", {"data": {}}),
                           ("states.register",), writes=True),
    "update_state": Case(lambda m, s: m.update_state(s, {"data": {"plan": "pro"}}),
                         ("states.transition.update",), writes=True),
    "update_state suspend": Case(lambda m, s: m.update_state(s, None, "Suspend"),
                                 ("states.transition.suspend",), writes=True),
    "update_state resume": Case(lambda m, s: m.update_state(s, None, "resume"),
                                ("states.transition.resume",), lambda m: seeded(m, "suspend"),
                                writes=True),
    "delete_state": Case(lambda m, s: m.delete_state(s), ("states.transition.delete",),
                         writes=True),
    "rollback_state": Case(lambda m, s: m.rollback_state(s, 1), ("states.rollback",),
                           lambda m: seeded(m, "update"), writes=True),
    "erase_state": Case(lambda m, s: m.erase_state(s, reason="asked to be forgotten"),
                        ("states.erase",), lambda m: seeded(m, state_type="secret"),
                        writes=True),
    "batch_set_state": Case(
        lambda m, s: m.batch_set_state({s: {"data": {"plan": "pro"}},
                                        s + "-b": {"type": "user", "data": {}}}),
        ("states.register", "states.transition.update"), writes=True,
    ),
    "batch_update_state": Case(lambda m, s: m.batch_update_state({s: None}, "expire"),
                               ("states.transition.expire",), writes=True),
    "batch_delete_state": Case(lambda m, s: m.batch_delete_state([s]),
                               ("states.transition.delete",), writes=True),
    "schedule_transition": Case(
        lambda m, s: m.schedule_transition(s, "activate", after=timedelta(minutes=5)),
        ("states.transition.activate",), writes=True,
    ),
    "cancel_scheduled by transition": Case(
        lambda m, s: m.cancel_scheduled(state_id=s, transition="expire"),
        ("states.transition.expire",), with_timer, writes=True,
    ),
    # Which transitions a timer id or a whole state's timers hold is not known before.
    "cancel_scheduled by id": Case(lambda m, t: m.cancel_scheduled(t), TRANSITIONS, timer_of,
                                   writes=True),
    "cancel_scheduled of a state": Case(lambda m, s: m.cancel_scheduled(state_id=s),
                                        TRANSITIONS, with_timer, writes=True),
    "get_scheduled": Case(lambda m, s: m.get_scheduled(), ("timers.list",)),
    "get_events": Case(lambda m, s: m.get_events(), ("events.list",)),
    "retry_events": Case(lambda m, s: m.retry_events(all_dead=True), ("events.retry",)),
    "promote_to_hot": Case(lambda m, s: m.promote_to_hot(s), ("states.promote",)),
    "demote_to_cold": Case(lambda m, s: m.demote_to_cold(s), ("states.demote",)),
    "get_storage_stats": Case(lambda m, s: m.get_storage_stats(), ("stats",)),
    "get_performance_metrics": Case(lambda m, s: m.get_performance_metrics(), ("stats",)),
    "get_health_status": Case(lambda m, s: m.get_health_status(), ("health",)),
    "restore_records": Case(
        lambda m, s: m.restore_records([{**m.store.get("state:" + s), "data": {"plan": "x"}}],
                                       mode="replace"),
        ("backups.restore",), writes=True,
    ),
}  # fmt: skip


def snapshot(manager: StateManager) -> tuple[Any, ...]:
    """What a call may write: history, timers, the states' records and where they are."""
    ids = manager.get_keys_by_pattern("*")
    records = manager.batch_get_state(ids, include_deleted=True)
    repositories = manager.get_repositories()
    tiers = (repositories.hot, repositories.warm, repositories.cold)
    return (
        manager.history.count(),
        manager.get_scheduled(status=None, limit=1000),
        {i: (r["version"], r["status"]) for i, r in records.items()},
        {i: [tier.fetch("state:" + i) is not None for tier in tiers] for i in ids},
    )


#: The public members that are not checked: instances, configuration, the raw store,
#: the role map itself.
NOT_CHECKED = {
    "create", "get_instance", "reset_instance", "set_context_resolver", "set_default_factory",
    "close", "call_timeout", "log_state_operation", "register_state_type", "get_state_type",
    "register_validator", "unregister_validator", "register_callback", "unregister_callback",
    "get_repositories", "roles", "set_roles", "acting_as", "authorize",
}  # fmt: skip


def test_every_public_call_is_checked_or_known_not_to_be() -> None:
    public = {name for name in vars(StateManager) if not name.startswith("_")}
    checked = {name.split()[0] for name in CASES}
    assert public - NOT_CHECKED == checked, "a new public call: give it an action, or list it"


def test_every_checked_action_is_known() -> None:
    needed = {action for case in CASES.values() for action in case.actions}
    assert needed <= set(KNOWN_ACTIONS)
    cli_only = {
        "events.dispatch",
        "tables.upgrade",
        "audit.verify",
        "audit.seal",
        "keys.rotate",
        "backups.create",
        "backups.list",
        "backups.verify",
        "gc",
        "checkpoints.create",
        "checkpoints.list",
        "checkpoints.verify",
        "recovery.run",
    }
    assert set(NON_HTTP_ACTIONS) - needed == cli_only


@pytest.mark.parametrize("name", list(CASES))
def test_a_call_needs_exactly_its_actions(manager: StateManager, name: str) -> None:
    case = CASES[name]
    target = case.prepare(manager)
    everything_else = [a for a in KNOWN_ACTIONS if a not in case.actions]
    manager.set_roles(role_map({"allowed": list(case.actions), "denied": everything_else}))
    before = snapshot(manager)
    with manager.acting_as("denied"), pytest.raises(AccessDeniedError) as info:
        case.call(manager, target)
    assert info.value.details["role"] == "denied"
    assert info.value.details["action"] in case.actions
    assert snapshot(manager) == before, "a denied call wrote something"
    rows = manager.history.count()
    with manager.acting_as("allowed", actor="alice"):
        case.call(manager, target)
    added = manager.history.count() - rows
    if case.writes and added:
        actors = {row["actor"] for row in manager.get_recent_activity(added)}
        assert actors == {"alice"}
    # Each action is needed: a role lacking any one of them is refused.
    for missing in case.actions:
        manager.set_roles(role_map({"short": [a for a in case.actions if a != missing]}))
        fresh = case.prepare(manager)
        with manager.acting_as("short"), pytest.raises(AccessDeniedError):
            case.call(manager, fresh)


def test_the_denial_names_the_role_the_action_and_what_the_role_may_do(
    manager: StateManager,
) -> None:
    state_id = seeded(manager)
    with manager.acting_as("support", actor="bob"), pytest.raises(AccessDeniedError) as info:
        manager.update_state(state_id, None, "suspend")
    assert str(info.value) == (
        "Role 'support' may not do 'states.transition.suspend' (acting_as, as 'bob'); it may "
        "do: states.read."
    )
    assert info.value.details == {
        "role": "support",
        "action": "states.transition.suspend",
        "allowed": ["states.read"],
    }
    with manager.acting_as("nobody"), pytest.raises(AccessDeniedError, match="may do: nothing"):
        manager.get_state(state_id)


def test_the_actor_defaults_to_the_acting_one(manager: StateManager) -> None:
    with manager.acting_as("ops"):
        manager.register_state("a1", "user", {"data": {}})
        manager.update_state("a1", None, "activate", actor="explicit")
    with manager.acting_as("ops", actor="carol"):
        manager.update_state("a1", None, "suspend")
        assert manager.authorize("states.read") == "carol"
        assert manager.authorize("states.read", actor="dave") == "dave"
    manager.update_state("a1", None, "resume")
    actors = [row["actor"] for row in manager.get_state_history("a1")]
    assert actors == ["ops", "explicit", "carol", None]
    assert manager.authorize("states.erase") is None  # outside acting_as: nothing checked


def test_outside_acting_as_nothing_is_checked(manager: StateManager) -> None:
    state_id = seeded(manager)
    manager.update_state(state_id, None, "delete")
    assert manager.get_state(state_id) is None


def test_blocks_nest_and_the_innermost_applies(manager: StateManager) -> None:
    state_id = seeded(manager)
    with manager.acting_as("nobody"):
        with manager.acting_as("support"):
            assert manager.get_state(state_id) is not None
            with manager.acting_as("ops", actor="root"):
                manager.update_state(state_id, None, "activate")
            with pytest.raises(AccessDeniedError):
                manager.update_state(state_id, None, "suspend")
        with pytest.raises(AccessDeniedError):
            manager.get_state(state_id)
    assert manager.get_state(state_id) is not None
    assert manager.get_state_history(state_id)[-1]["actor"] == "root"


def test_acting_as_applies_to_its_own_manager_only(
    manager: StateManager, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    other = StateManager.create(store=build_test_store("embedded", request, tmp_path / "other"))
    try:
        other.set_roles(manager.roles)
        other.register_state("o1", "user", {"data": {}})
        with manager.acting_as("nobody"):
            assert other.get_state("o1") is not None
            with pytest.raises(AccessDeniedError):
                manager.get_state_history("o1")
    finally:
        other.close()


def test_threads_act_apart(manager: StateManager) -> None:
    state_id = seeded(manager)
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def work(role: str) -> None:
        with manager.acting_as(role):
            barrier.wait(timeout=10)  # both blocks are open at once
            try:
                manager.get_state(state_id)
                outcomes[role] = "read"
            except AccessDeniedError:
                outcomes[role] = "denied"
            barrier.wait(timeout=10)

    threads = [threading.Thread(target=work, args=(role,)) for role in ("support", "nobody")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert outcomes == {"support": "read", "nobody": "denied"}

    # A worker thread carries a block over when it runs in a copy of the block's context.
    carried: list[BaseException] = []

    def in_copy() -> None:
        try:
            manager.get_state(state_id)
        except AccessDeniedError as exc:
            carried.append(exc)

    with manager.acting_as("nobody"):
        context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(in_copy,))  # after the block ended
    worker.start()
    worker.join(timeout=30)
    assert len(carried) == 1


def test_asyncio_tasks_act_apart(manager: StateManager) -> None:
    state_id = seeded(manager)

    async def attempt(role: str) -> str:
        with manager.acting_as(role):
            await asyncio.sleep(0.01)  # the other task runs inside its own block meanwhile
            try:
                manager.get_state(state_id)
            except AccessDeniedError:
                return "denied"
            return "read"

    async def main() -> list[str]:
        return list(await asyncio.gather(attempt("nobody"), attempt("support"), attempt("ops")))

    # a thread of its own: an earlier test (Playwright's sync API) may leave a running loop
    # in this one, where asyncio.run refuses to start
    results: list[list[str]] = []
    worker = threading.Thread(target=lambda: results.append(asyncio.run(main())))
    worker.start()
    worker.join()
    assert results == [["denied", "read", "read"]]


def test_acting_as_refuses_what_it_cannot_check(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    plain = StateManager.create(store=build_test_store("embedded", request, tmp_path))
    try:
        assert plain.roles is None
        with pytest.raises(ConfigurationError, match="needs a role map"), plain.acting_as("ops"):
            pass
        plain.set_roles(role_map({"ops": ["*"], "support": ["states.read"]}))
        with pytest.raises(InvalidRequestError) as info, plain.acting_as("admin"):
            pass
        assert str(info.value) == (
            "Unknown role 'admin' for acting_as; the role map has: ops, support."
        )
        for actor in ("", "x" * 201, 7):
            with pytest.raises(InvalidRequestError), plain.acting_as("ops", actor=actor):  # type: ignore[arg-type]
                pass
        with pytest.raises(ConfigurationError, match="takes a RoleBasedAccess"):
            plain.set_roles({"ops": ["*"]})  # type: ignore[arg-type]
        plain.set_roles(None)
        assert plain.roles is None
    finally:
        plain.close()


def test_a_denied_check_comes_before_validation_of_the_state(manager: StateManager) -> None:
    # An unknown id is not looked up for a role that may not read: no existence leaks.
    with manager.acting_as("nobody"), pytest.raises(AccessDeniedError):
        manager.get_state_history("does-not-exist")
    with manager.acting_as("ops"), pytest.raises(StateNotFoundError):
        manager.update_state("does-not-exist", None, "activate")

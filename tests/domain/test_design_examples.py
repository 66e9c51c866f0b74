"""The design documents' examples, as a user pastes them, on both backend sets.

The quoted code is verbatim from the documents (only the manager's name is bound to
the fixture): whole-state validators, pages used as lists, suspending straight after
registration, the structured operation log, the repositories bundle, reads without
promotion and generated ids.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from marshmallow import EXCLUDE, Schema, fields, validate

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateStatus, StateTransition, StateType
from flask_tiered_state.errors import ValidationError
from flask_tiered_state.storage.base import StateRepositories

from .conftest import build_test_store

# -- 1. validators see the whole state --------------------------------------------------


def test_the_documents_user_validator_accepts_valid_users(manager: StateManager) -> None:
    state_manager = manager

    def validate_user_state(state_data: dict) -> bool:  # type: ignore[type-arg]
        required_fields = ["user_id", "status", "email"]
        return all(field in state_data.get("data", {}) for field in required_fields)

    state_manager.register_validator(StateType.USER, validate_user_state)

    user_data = {"user_id": "12345", "status": "active", "email": "user@example.com"}
    record = state_manager.register_state("user_12345", StateType.USER, {"data": user_data})
    assert record["data"] == user_data
    with pytest.raises(ValidationError, match=r"Rejected by validator .*validate_user_state"):
        state_manager.register_state("user_2", StateType.USER, {"data": {"user_id": "2"}})
    assert state_manager.get_state("user_2") is None
    # every later write is checked on the whole proposed state too
    with pytest.raises(ValidationError):
        state_manager.update_state("user_12345", {"data": {"user_id": "12345"}})
    assert state_manager.get_state("user_12345")["version"] == 1  # type: ignore[index]


def test_a_validator_gets_the_proposed_document_and_cannot_change_it(
    manager: StateManager,
) -> None:
    seen: list[dict[str, Any]] = []

    def look(state: dict[str, Any]) -> bool:
        seen.append(dict(state))
        state["data"]["sneaked"] = True  # its own copy: nothing of this is stored
        return True

    manager.register_validator(StateType.USER, look)
    record = manager.register_state("u1", StateType.USER, {"name": "Ann", "data": {"a": 1}})
    manager.update_state("u1", None, StateTransition.ACTIVATE)
    assert [s["status"] for s in seen] == ["created", "active"]
    assert set(seen[0]) == {
        "state_id", "name", "type", "status", "data", "metadata", "version", "created_at",
        "updated_at",
    }  # fmt: skip
    assert seen[1]["version"] == 2 and seen[0]["name"] == "Ann"
    assert record["data"] == {"a": 1} == manager.get_state("u1")["data"]  # type: ignore[index]


def test_a_marshmallow_validator_checks_the_document_and_the_schema_checks_data(
    manager: StateManager,
) -> None:
    class UserData(Schema):
        email = fields.Email()

    class WholeState(Schema):
        class Meta:
            unknown = EXCLUDE

        state_id = fields.String(required=True, validate=validate.Regexp(r"^u"))
        status = fields.String(required=True, validate=validate.OneOf(["created", "active"]))

    manager.register_state_type(StateType.USER, schema=UserData)  # data only
    manager.register_validator(StateType.USER, WholeState)  # the whole state
    manager.register_state("u1", StateType.USER, {"data": {"email": "a@b.example"}})
    with pytest.raises(ValidationError) as info:
        manager.register_state("x1", StateType.USER, {"data": {}})
    assert set(info.value.errors) == {"state_id"}
    with pytest.raises(ValidationError) as info:
        manager.register_state("u2", StateType.USER, {"data": {"email": "nope"}})
    assert set(info.value.errors) == {"email"} and "The data of user" in info.value.message
    with pytest.raises(ValidationError) as info:  # the status is the validator's business
        manager.update_state("u1", None, StateTransition.SUSPEND)
    assert set(info.value.errors) == {"status"}
    assert manager.get_state("u1")["status"] == "created"  # type: ignore[index]


# -- 2. pages behave like lists -------------------------------------------------------


def test_pages_are_sequences_of_records(manager: StateManager) -> None:
    state_manager = manager
    for n in range(3):
        state_manager.register_state(f"user_{n}", StateType.USER, {"data": {"n": n}})

    user_states = state_manager.get_states_by_type(StateType.USER)
    assert len(user_states) == 3 and user_states.total == 3
    assert [s["state_id"] for s in user_states] == ["user_2", "user_1", "user_0"]
    assert user_states[0]["state_id"] == "user_2" and user_states[-1]["data"] == {"n": 0}
    assert [s["state_id"] for s in user_states[1:]] == ["user_1", "user_0"]
    page = state_manager.search_states(StateType.USER, {"data.n": 1}, per_page=1)
    assert len(page) == 1 and page.total == 1 and not page.has_next and page[0]["data"]["n"] == 1
    first = state_manager.search_states(StateType.USER, None, per_page=2)
    assert len(first) == 2 and first.has_next and first.pages == 2
    empty = state_manager.search_states(StateType.USER, {"data.n": 9})
    assert len(empty) == 0 and not empty and list(empty) == []


# -- 3. the documents' transitions ----------------------------------------------------


def test_suspend_straight_after_registration_fires_the_callback(manager: StateManager) -> None:
    state_manager = manager
    calls: list[tuple[str, str, str, Any]] = []

    def on_user_suspended(state_id, old_state, new_state, transition_type):  # type: ignore[no-untyped-def]
        calls.append((state_id, old_state["status"], new_state["status"], transition_type))

    state_manager.register_callback("user_suspended", on_user_suspended)
    state_manager.register_state(
        "user_12345",
        StateType.USER,
        {"name": "John Doe", "data": {"email": "john@example.com", "plan": "premium"}},
    )
    state_manager.update_state(
        "user_12345",
        {"data": {"email": "john@example.com", "plan": "premium", "reason": "payment_failed"}},
        transition=StateTransition.SUSPEND,
    )
    assert calls == [("user_12345", "created", "suspended", StateTransition.SUSPEND)]
    resumed = state_manager.update_state("user_12345", None, transition=StateTransition.RESUME)
    assert resumed["status"] == "active"


@pytest.mark.parametrize(
    ("state_type", "path"),
    [
        (StateType.TRANSACTION, [StateTransition.ACTIVATE]),
        (StateType.TRANSACTION, [StateTransition.EXPIRE]),
        (
            StateType.USER,
            [StateTransition.ACTIVATE, StateTransition.SUSPEND, StateTransition.RESUME],
        ),
        (StateType.SUBSCRIPTION, [StateTransition.SUSPEND, StateTransition.ACTIVATE]),
    ],
)
def test_the_documents_transition_paths(
    manager: StateManager, state_type: StateType, path: list[StateTransition]
) -> None:
    manager.register_state("s1", state_type, {"data": {"amount": 10}})
    statuses = [manager.update_state("s1", None, t)["status"] for t in path]
    expected = {
        StateTransition.ACTIVATE: StateStatus.ACTIVE,
        StateTransition.EXPIRE: StateStatus.EXPIRED,
        StateTransition.SUSPEND: StateStatus.SUSPENDED,
        StateTransition.RESUME: StateStatus.ACTIVE,
    }
    assert statuses == [expected[t].value for t in path]
    assert len(manager.get_state_history("s1")) == 1 + len(path)


# -- 5. the structured operation log --------------------------------------------------


def test_log_state_operation_writes_a_structured_record(
    embedded_manager: StateManager, caplog: pytest.LogCaptureFixture
) -> None:
    state_manager = embedded_manager
    with caplog.at_level(logging.INFO, "flask_tiered_state.operations"):
        state_manager.log_state_operation(
            operation="update_state",
            state_id="user_12345",
            transition_type=StateTransition.SUSPEND,
            duration_ms=12.5,
        )
        state_manager.register_state("u1", StateType.USER, {"data": {}})
    logged = [r for r in caplog.records if r.name == "flask_tiered_state.operations"]
    assert [r.levelno for r in logged] == [logging.INFO, logging.INFO]
    first, second = logged
    assert (first.operation, first.state_id, first.transition_type, first.duration_ms) == (  # type: ignore[attr-defined]
        "update_state", "user_12345", "suspend", 12.5,
    )  # fmt: skip
    assert (second.operation, second.state_id, second.transition_type) == (  # type: ignore[attr-defined]
        "create", "u1", "create",
    )  # fmt: skip
    assert second.duration_ms > 0  # type: ignore[attr-defined]


def test_the_operation_log_level_is_configurable(
    request: pytest.FixtureRequest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    quiet = StateManager.create(
        store=build_test_store("embedded", request, tmp_path), operation_log_level=None
    )
    debug = StateManager.create(
        store=build_test_store("embedded", request, tmp_path / "2"),
        operation_log_level=logging.DEBUG,
    )
    try:
        with caplog.at_level(logging.DEBUG, "flask_tiered_state.operations"):
            quiet.register_state("q", StateType.USER, {"data": {}})
            debug.register_state("d", StateType.USER, {"data": {}})
        logged = [r for r in caplog.records if r.name == "flask_tiered_state.operations"]
        assert [(r.state_id, r.levelno) for r in logged] == [("d", logging.DEBUG)]  # type: ignore[attr-defined]
        assert quiet.get_performance_metrics()["operations"]["create"]["count"] == 1
    finally:
        quiet.close()
        debug.close()


# -- 7. the repositories bundle, reads without promotion, generated ids ----------------


def test_repositories_from_the_state_manager(manager: StateManager) -> None:
    repositories = StateRepositories.from_state_manager(manager)
    assert repositories == manager.get_repositories()
    assert repositories.warm.backend in {"postgresql", "sqlite"}
    assert StateRepositories.from_state_manager(manager.store) == repositories


def test_get_state_without_auto_promote_never_places_a_hot_copy(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = build_test_store("embedded", request, tmp_path, promote_after_accesses=2)
    manager = StateManager.create(store=store)
    try:
        for state_id in ("quiet", "busy"):
            manager.register_state(state_id, StateType.USER, {"data": {}})
        hot = manager.get_repositories().hot
        for _ in range(4):
            store.cache.invalidate_many(["state:quiet", "state:busy"])  # reads go below it
            assert manager.get_state("quiet", auto_promote=False) is not None
            assert manager.get_state("busy") is not None
        assert hot.fetch("state:quiet") is None
        assert hot.fetch("state:busy") is not None
    finally:
        manager.close()


def test_register_state_without_an_id_generates_a_sortable_uuid7(manager: StateManager) -> None:
    records = [
        manager.register_state(state_type=StateType.USER, initial_data={"data": {"n": n}})
        for n in range(5)
    ]
    ids = [r["state_id"] for r in records]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert manager.get_state(ids[2])["data"] == {"n": 2}  # type: ignore[index]
    assert manager.register_state(None, StateType.FEATURE, None)["name"] != ""
    with pytest.raises(Exception, match="needs a state type"):
        manager.register_state("x")

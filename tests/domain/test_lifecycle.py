"""The lifecycle table, guards, rollback's rule and the Mermaid graph."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from flask_tiered_state.domain.lifecycle import DEFAULT_LIFECYCLE, Lifecycle
from flask_tiered_state.domain.model import StateStatus as S
from flask_tiered_state.domain.model import StateTransition as T
from flask_tiered_state.errors import ConfigurationError, InvalidTransitionError

# The table: transition -> (allowed from, to; None = unchanged)
TABLE = {
    T.UPDATE: ({S.CREATED, S.ACTIVE, S.SUSPENDED}, None),
    T.ACTIVATE: ({S.CREATED, S.SUSPENDED}, S.ACTIVE),
    T.SUSPEND: ({S.CREATED, S.ACTIVE}, S.SUSPENDED),
    T.RESUME: ({S.SUSPENDED}, S.ACTIVE),
    T.EXPIRE: ({S.CREATED, S.ACTIVE, S.SUSPENDED}, S.EXPIRED),
    T.DELETE: (set(S) - {S.DELETED}, S.DELETED),
}


@pytest.mark.parametrize("status", list(S))
@pytest.mark.parametrize("transition", list(TABLE))
def test_default_table(status: S, transition: T) -> None:
    sources, target = TABLE[transition]
    if status in sources:
        expected = status if target is None else target
        assert DEFAULT_LIFECYCLE.target("s1", status.value, transition) is expected
    else:
        with pytest.raises(InvalidTransitionError) as info:
            DEFAULT_LIFECYCLE.target("s1", status.value, transition)
        err = info.value
        assert err.state_id == "s1" and err.status == status.value
        assert err.allowed == DEFAULT_LIFECYCLE.allowed_transitions(status)
        assert "'s1'" in err.message and status.value in err.message


def test_initial_status_and_allowed_lists() -> None:
    assert DEFAULT_LIFECYCLE.initial_status is S.CREATED
    assert DEFAULT_LIFECYCLE.allowed_transitions(S.DELETED) == []
    assert DEFAULT_LIFECYCLE.allowed_transitions(S.EXPIRED) == ["delete"]
    assert DEFAULT_LIFECYCLE.allowed_transitions("suspended") == [
        "update",
        "activate",
        "resume",
        "expire",
        "delete",
    ]


def test_custom_lifecycle_and_guards() -> None:
    calls: list[tuple[Any, ...]] = []

    def no_suspend_with_balance(
        current: Mapping[str, Any], transition: T, proposed: Mapping[str, Any]
    ) -> bool:
        calls.append((current["status"], transition, proposed["status"]))
        return not current["data"].get("balance")

    life = Lifecycle(
        {T.ACTIVATE: ([S.CREATED], S.ACTIVE), T.SUSPEND: ([S.ACTIVE], S.SUSPENDED)},
        initial_status=S.CREATED,
    ).with_guard(T.SUSPEND, no_suspend_with_balance)
    current = {"state_id": "a1", "status": "active", "data": {"balance": 5}}
    proposed = {**current, "status": "suspended"}
    with pytest.raises(InvalidTransitionError, match="no_suspend_with_balance"):
        life.check_guards(T.SUSPEND, current, proposed)
    life.check_guards(T.SUSPEND, {**current, "data": {}}, proposed)
    assert calls == [("active", T.SUSPEND, "suspended")] * 2
    with pytest.raises(InvalidTransitionError):
        life.target("a1", "active", T.RESUME)  # not in this lifecycle


def test_lifecycle_refuses_create_rules_and_bad_guards() -> None:
    with pytest.raises(ConfigurationError, match="CREATE"):
        Lifecycle({T.CREATE: ([S.ACTIVE], S.CREATED)})
    with pytest.raises(ConfigurationError, match="callables"):
        Lifecycle({}, guards={T.UPDATE: ["not callable"]})  # type: ignore[list-item]


def test_rollback_status_rule() -> None:
    allows = DEFAULT_LIFECYCLE.allows_status_change
    assert allows("active", "active")  # UPDATE keeps it
    assert allows("suspended", "active")  # RESUME / ACTIVATE
    assert allows("active", "suspended")
    assert not allows("active", "created")  # nothing leads back to CREATED
    assert not allows("expired", "active")
    assert not allows("expired", "expired")  # only DELETE leaves EXPIRED
    assert not allows("deleted", "active")
    assert not allows("active", "deleted")


def test_mermaid() -> None:
    text = DEFAULT_LIFECYCLE.to_mermaid("user")
    assert "stateDiagram-v2" in text and "title: user" in text
    assert "[*] --> created: create" in text
    assert "active --> suspended: suspend" in text

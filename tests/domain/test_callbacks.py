"""Event names, the dispatcher, signal isolation and callback-failed."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from flask_tiered_state import signals
from flask_tiered_state.domain.callbacks import (
    PAST_TENSE,
    CallbackDispatcher,
    CallbackRegistry,
    StateEvent,
    event_name,
    parse_event_name,
)
from flask_tiered_state.domain.model import StateTransition as T
from flask_tiered_state.errors import InvalidRequestError

TYPES = ["user", "credit_card", "transaction"]


def _event(transition: T, old_status: str | None, new_status: str) -> StateEvent:
    old = None if old_status is None else {"state_id": "u1", "status": old_status}
    return StateEvent(
        name=event_name("user", transition),
        state_id="u1",
        state_type="user",
        transition=transition,
        old_state=old,
        new_state={"state_id": "u1", "status": new_status},
        version=2,
    )


def test_event_names() -> None:
    assert [event_name("user", t) for t in T] == [
        "user_created",
        "user_updated",
        "user_activated",
        "user_suspended",
        "user_resumed",
        "user_expired",
        "user_deleted",
        "user_rolled_back",
        "user_erased",
        "user_restored",
    ]
    assert set(PAST_TENSE) == set(T)
    assert parse_event_name("credit_card_rolled_back", TYPES) == ("credit_card", T.ROLLBACK)
    assert parse_event_name("transaction_expired", TYPES) == ("transaction", T.EXPIRE)


@pytest.mark.parametrize("name", ["user_exploded", "invoice_created", "created", "", 5])
def test_unknown_event_names_list_the_pattern(name: object) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_event_name(name, TYPES)
    message = info.value.message
    assert "{type}_{past tense}" in message and "credit_card" in message
    assert "rolled_back" in message


def test_event_is_frozen_and_serialisable() -> None:
    event = _event(T.SUSPEND, "active", "suspended")
    first = _event(T.SUSPEND, "active", "suspended")
    assert event.event_id != first.event_id and len(event.event_id) == 32
    assert event.from_status == "active" and event.to_status == "suspended"
    data = event.to_dict()
    assert data["transition"] == "suspend" and data["name"] == "user_suspended"
    with pytest.raises(AttributeError):
        event.state_id = "x"  # type: ignore[misc]


def test_dispatch_signals_by_kind() -> None:
    sender = object()
    dispatcher = CallbackDispatcher(sender, CallbackRegistry())
    got: list[tuple[str, dict[str, Any]]] = []

    def receiver(name: str) -> Any:
        return lambda s, **kw: got.append((name, kw))

    with (
        signals.state_registered.connected_to(receiver("registered"), sender),
        signals.state_updated.connected_to(receiver("updated"), sender),
        signals.state_transitioned.connected_to(receiver("transitioned"), sender),
        signals.state_deleted.connected_to(receiver("deleted"), sender),
    ):
        dispatcher.dispatch(_event(T.CREATE, None, "created"))
        assert [n for n, _ in got] == ["registered"]
        got.clear()
        dispatcher.dispatch(_event(T.UPDATE, "active", "active"))
        assert [n for n, _ in got] == ["updated"]
        got.clear()
        dispatcher.dispatch(_event(T.SUSPEND, "active", "suspended"))
        assert [n for n, _ in got] == ["updated", "transitioned"]
        assert got[1][1]["from_status"] == "active" and got[1][1]["to_status"] == "suspended"
        got.clear()
        dispatcher.dispatch(_event(T.DELETE, "active", "deleted"))
        assert [n for n, _ in got] == ["deleted", "transitioned"]
    got.clear()
    other = CallbackDispatcher(object(), CallbackRegistry())
    with signals.state_updated.connected_to(receiver("updated"), sender):
        other.dispatch(_event(T.UPDATE, "active", "active"))
    assert got == []  # receivers connected to one manager hear only that manager


def test_failures_are_isolated_logged_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    sender = object()
    registry = CallbackRegistry()
    calls: list[str] = []
    failures: list[tuple[Any, Any, Any]] = []

    def broken(*args: Any) -> None:
        raise RuntimeError("boom")

    def fine(state_id: str, old: Any, new: Any, transition: T) -> None:
        calls.append(f"{state_id}:{transition.value}")

    def broken_receiver(s: Any, **kw: Any) -> None:
        raise ValueError("receiver boom")

    registry.register("user_suspended", broken)
    registry.register("user_suspended", fine)
    dispatcher = CallbackDispatcher(sender, registry)

    def on_failed(s: Any, *, event: Any, callback: Any, error: Any) -> None:
        failures.append((event.name, callback, type(error)))

    with (
        caplog.at_level(logging.ERROR, "flask_tiered_state.callbacks"),
        signals.callback_failed.connected_to(on_failed, sender),
        signals.state_updated.connected_to(broken_receiver, sender),
    ):
        dispatcher.dispatch(_event(T.SUSPEND, "active", "suspended"))
    assert calls == ["u1:suspend"]
    assert failures == [
        ("user_suspended", broken_receiver, ValueError),
        ("user_suspended", broken, RuntimeError),
    ]
    assert "stays committed" in caplog.text and "boom" in caplog.text


def test_registry_register_unregister() -> None:
    registry = CallbackRegistry()

    def fn(*args: Any) -> None:
        pass

    registry.register("user_created", fn)
    assert registry.for_event("user_created") == (fn,)
    assert registry.unregister("user_created", fn)
    assert not registry.unregister("user_created", fn)
    with pytest.raises(InvalidRequestError, match="callable"):
        registry.register("user_created", "nope")  # type: ignore[arg-type]


def test_wants() -> None:
    registry = CallbackRegistry()
    dispatcher = CallbackDispatcher(object(), registry)
    assert not dispatcher.wants("user_created")
    registry.register("user_created", lambda *a: None)
    assert dispatcher.wants("user_created")
    with signals.state_updated.connected_to(lambda s, **kw: None):
        assert dispatcher.wants("user_updated")
    # a receiver of another manager's signals is not one of this manager's
    other = object()
    with signals.state_updated.connected_to(lambda s, **kw: None, sender=other):
        assert not dispatcher.wants("user_updated")
        assert CallbackDispatcher(other, CallbackRegistry()).wants("user_updated")

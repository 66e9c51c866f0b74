"""Setup functions and the ``manager-created`` signal: every manager the extension
builds -- the first, and each one after ``close`` -- is set up before first use."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from flask import Flask, current_app

from flask_tiered_state import signals
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import ConfigurationError, InvalidStateTypeError
from flask_tiered_state.extension import TieredState, current_state_manager, get_app_state

from .conftest import AppFactory


def knows_invoices(manager: StateManager) -> bool:
    try:
        manager.get_state_type("invoice")
    except InvalidStateTypeError:
        return False
    return True


def current_app_object() -> Flask:
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    return app


def test_setup_functions_run_with_every_new_manager_before_first_use(
    make_app: AppFactory,
) -> None:
    calls: list[tuple[str, StateManager, Flask]] = []
    created: list[str] = []

    def register_invoice(manager: StateManager) -> None:
        calls.append(("setup=", manager, current_app_object()))
        manager.register_state_type("invoice")

    extension = TieredState(setup=register_invoice)

    @extension.manager_setup
    def count_invoices(manager: StateManager) -> None:
        calls.append(("decorator", manager, current_app_object()))
        manager.register_callback(
            "invoice_created", lambda state_id, old, new, transition: created.append(state_id)
        )

    assert count_invoices.__name__ == "count_invoices"  # the decorator returns the function
    assert extension.setup_functions == (register_invoice, count_invoices)
    app = make_app(extension=extension, TIERED_STATE_API_PREFIX="/api")
    assert calls == []  # nothing is built before first use

    client = app.test_client()
    response = client.post("/api/states", json={"state_id": "inv-1", "type": "invoice"})
    assert response.status_code == 201, response.get_json()
    first = get_app_state(app).manager
    assert calls == [("setup=", first, app), ("decorator", first, app)]
    assert created == ["inv-1"]

    extension.close(app)
    assert first.closed
    # Another way in, outside any app context: the CLI of the rebuilt manager.
    result = app.test_cli_runner().invoke(args=["state", "graph", "invoice"])
    assert result.exit_code == 0, result.output
    second = get_app_state(app).manager
    assert second is not first
    assert calls[2:] == [("setup=", second, app), ("decorator", second, app)]
    with app.app_context():
        current_state_manager.register_state("inv-2", "invoice", {})
    assert created == ["inv-1", "inv-2"]  # the callback is registered once per manager


def test_one_extension_sets_up_each_of_its_apps_in_that_apps_context(
    make_app: AppFactory,
) -> None:
    seen: list[tuple[Flask, Any]] = []
    extension = TieredState()

    @extension.manager_setup
    def remember(manager: StateManager) -> None:
        seen.append((current_app_object(), current_app.config["BILLING_REGION"]))

    first = make_app(extension=extension, BILLING_REGION="eu")
    second = make_app(extension=extension, BILLING_REGION="us")
    get_app_state(second).manager  # noqa: B018
    get_app_state(first).manager  # noqa: B018
    assert seen == [(second, "us"), (first, "eu")]


def test_manager_created_is_sent_with_the_app_after_the_setup(make_app: AppFactory) -> None:
    received: list[tuple[Flask, StateManager, bool]] = []

    def receiver(sender: Flask, **kwargs: Any) -> None:
        manager = kwargs["manager"]
        received.append((sender, manager, knows_invoices(manager)))

    extension = TieredState(setup=lambda manager: manager.register_state_type("invoice"))
    app, other = make_app(extension=extension), make_app(extension=extension)
    with signals.manager_created.connected_to(receiver, sender=app):
        manager = get_app_state(app).manager
        get_app_state(other).manager  # noqa: B018 - another app: not this receiver's
        assert received == [(app, manager, True)]
        get_app_state(app).manager  # noqa: B018 - already built: no signal
        extension.close(app)
        rebuilt = get_app_state(app).manager
    assert received == [(app, manager, True), (app, rebuilt, True)]


def test_a_failing_setup_fails_the_build_and_the_next_use_tries_again(
    make_app: AppFactory,
) -> None:
    attempts: list[StateManager] = []

    def flaky(manager: StateManager) -> None:
        attempts.append(manager)
        if len(attempts) == 1:
            raise RuntimeError("the plan catalogue is unreachable")

    app = make_app(extension=TieredState(setup=flaky))
    with pytest.raises(RuntimeError, match="plan catalogue"):
        get_app_state(app).manager  # noqa: B018
    assert attempts[0].closed and not get_app_state(app).is_built
    manager = get_app_state(app).manager
    assert manager is attempts[1] and not manager.closed

    def refuse(sender: Flask, **kwargs: Any) -> None:
        raise ValueError("receiver says no")

    get_app_state(app).close()
    with (
        signals.manager_created.connected_to(refuse, sender=app),
        pytest.raises(ValueError, match="receiver says no"),
    ):
        get_app_state(app).manager  # noqa: B018
    assert attempts[2].closed and not get_app_state(app).is_built


def test_setup_sees_the_new_manager_and_other_threads_wait_for_it(
    make_app: AppFactory,
) -> None:
    got: list[StateManager] = []
    types_seen: list[bool] = []

    def other_thread() -> None:
        manager = get_app_state(app).manager
        types_seen.append(knows_invoices(manager))
        got.append(manager)

    waiter = threading.Thread(target=other_thread)

    def setup(manager: StateManager) -> None:
        assert current_state_manager._get_current_object() is manager  # type: ignore[attr-defined]
        assert StateManager.get_instance() is manager
        current_state_manager.register_state("seed", "user", {"data": {"plan": "free"}})
        waiter.start()
        time.sleep(0.2)
        assert got == []  # still waiting for this setup to finish
        manager.register_state_type("invoice")

    app = make_app(extension=TieredState(setup=setup))
    manager = get_app_state(app).manager
    waiter.join(timeout=10)
    assert got == [manager] and types_seen == [True]
    assert manager.get_state("seed") is not None


def test_a_setup_that_is_not_callable_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="must be a callable taking the new StateManager"):
        TieredState(setup="example_app:setup")  # type: ignore[arg-type]
    extension = TieredState()
    with pytest.raises(ConfigurationError, match="not 42"):
        extension.manager_setup(42)  # type: ignore[type-var]
    assert extension.setup_functions == ()


def test_without_setup_a_rebuilt_manager_has_only_the_built_in_types(
    make_app: AppFactory,
) -> None:
    extension = TieredState()
    app = make_app(extension=extension)
    get_app_state(app).manager.register_state_type("invoice")
    extension.close(app)
    assert not knows_invoices(get_app_state(app).manager)

"""``flask state --as ROLE ...``: each command acts as the role of the app's role map;
a denied one exits 1 and changes nothing, a bad ``--as`` is bad usage (exit 2)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import Result
from flask import Flask

from flask_tiered_state.extension import get_app_state
from flask_tiered_state.roles import RoleBasedAccess
from tests.conftest import SERVICES, services_config

from .conftest import AppFactory

ROLES = {
    "support": ["states.list", "states.read", "states.history", "states.diff"],
    "agent": ["states.read", "states.transition.suspend", "states.transition.resume"],
    "operator": ["stats", "health", "events.list", "timers.list", "states.promote", "states.read",
                 "states.demote", "states.list"],
    "ops": ["*"],
}  # fmt: skip


@pytest.fixture(params=["embedded", SERVICES])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    return services_config(request) if request.param == "services" else {}


@pytest.fixture
def guarded(backend: dict[str, Any], request: pytest.FixtureRequest) -> Flask:
    """An app on each backend set whose hook is a RoleBasedAccess, with a state."""
    # Requested after the services, so the app is closed before their fixtures clean up.
    make_app: AppFactory = request.getfixturevalue("make_app")
    access = RoleBasedAccess(ROLES, identity="header:X-Roles")
    guarded = make_app(TIERED_STATE_ACCESS_CONTROL=access, **backend)
    manager = get_app_state(guarded).manager
    manager.register_state("alice", "user", {"data": {"plan": "free"}})
    manager.update_state("alice", {"data": {"plan": "pro"}}, "update")
    return guarded


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["state", *args])


def denied(result: Result, action: str, role: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: Role {role!r} may not do {action!r}"), result.output
    assert len(result.output.strip().splitlines()) == 1


def test_allowed_commands_run(guarded: Flask) -> None:
    for args in (("show", "alice"), ("list",), ("history", "alice"), ("diff", "alice", "1", "2")):
        result = run(guarded, "--as", "support", *args)
        assert result.exit_code == 0, (args, result.output)
    for args in (("stats",), ("health",), ("events",), ("timers",), ("promote", "alice"),
                 ("demote", "alice"), ("keys", "a*")):  # fmt: skip
        result = run(guarded, "--as", "operator", *args)
        assert result.exit_code == 0, (args, result.output)


def test_a_denied_command_exits_1_and_changes_nothing(guarded: Flask) -> None:
    manager = get_app_state(guarded).manager
    denied(run(guarded, "--as", "support", "transition", "alice", "suspend"),
           "states.transition.suspend", "support")  # fmt: skip
    denied(run(guarded, "--as", "agent", "transition", "alice", "expire"),
           "states.transition.expire", "agent")  # fmt: skip
    denied(run(guarded, "--as", "support", "rollback", "alice", "1"), "states.rollback", "support")
    denied(run(guarded, "--as", "agent", "list"), "states.list", "agent")
    denied(run(guarded, "--as", "agent", "stats"), "stats", "agent")
    denied(run(guarded, "--as", "support", "promote", "alice"), "states.promote", "support")
    denied(run(guarded, "--as", "support", "events"), "events.list", "support")
    denied(run(guarded, "--as", "support", "events", "retry", "--all-dead"), "events.retry",
           "support")  # fmt: skip
    denied(run(guarded, "--as", "operator", "timers", "cancel", "--state", "alice"),
           "states.transition.update", "operator")  # fmt: skip
    denied(run(guarded, "--as", "operator", "init-db"), "tables.upgrade", "operator")
    denied(run(guarded, "--as", "operator", "dispatch", "--once"), "events.dispatch", "operator")
    record = manager.get_state("alice")
    assert record is not None and (record["status"], record["version"]) == ("created", 2)
    assert manager.history.count() == 2


def test_an_allowed_change_records_the_role_as_the_actor(guarded: Flask) -> None:
    result = run(guarded, "--as", "agent", "transition", "alice", "SUSPEND", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "suspended"
    result = run(guarded, "--as", "agent", "transition", "alice", "resume", "--actor", "ann")
    assert result.exit_code == 0, result.output
    result = run(guarded, "--as", "ops", "rollback", "alice", "3")
    assert result.exit_code == 0, result.output
    actors = [r["actor"] for r in get_app_state(guarded).manager.get_state_history("alice")]
    assert actors == [None, None, "agent", "ann", "ops"]


def test_an_unknown_role_is_bad_usage(guarded: Flask) -> None:
    result = run(guarded, "--as", "admin", "show", "alice")
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--as': unknown role 'admin'; the app's roles are: support, " \
           "agent, operator, ops." in result.output  # fmt: skip


def test_as_without_a_role_map_is_bad_usage(make_app: AppFactory) -> None:
    app = make_app()
    get_app_state(app).manager.register_state("bob", "user", {"data": {}})
    result = run(app, "--as", "ops", "show", "bob")
    assert result.exit_code == 2, result.output
    assert f"--as ops needs a role map, and app {app.name!r} has none" in result.output
    assert "TIERED_STATE_ACCESS_CONTROL to a RoleBasedAccess" in result.output
    assert run(app, "show", "bob").exit_code == 0  # without --as, as before


def test_security_commands_check_their_actions(tmp_path: Any) -> None:
    """audit verify/seal and rotate-keys are refused to a role without their actions."""
    from flask_tiered_state import TieredState

    app = Flask(__name__, instance_path=str(tmp_path))
    app.config["TIERED_STATE_ACCESS_CONTROL"] = RoleBasedAccess(
        {"support": ["states.read"], "ops": ["*"]}, identity=lambda request: None
    )
    TieredState(app)
    runner = app.test_cli_runner()
    for command in (["audit", "verify"], ["audit", "seal"], ["rotate-keys"]):
        refused = runner.invoke(args=["state", "--as", "support", *command])
        assert refused.exit_code == 1, refused.output
        assert "may not" in refused.output or "not allowed" in refused.output, refused.output

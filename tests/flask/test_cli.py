"""``flask state ...``: every command, its ``--json`` output and its failure exit code."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import Result
from flask import Flask

from flask_tiered_state import migrations
from flask_tiered_state.cli import state_cli
from flask_tiered_state.extension import current_state_manager, get_app_state

from .conftest import AppFactory


@pytest.fixture
def seeded(app: Flask) -> Flask:
    manager = get_app_state(app).manager
    manager.register_state("u1", "user", {"name": "Ada", "data": {"plan": "free"}})
    manager.update_state("u1", None, "activate", actor="ops", reason="verified")
    manager.update_state("u1", {"data": {"plan": "pro", "seats": 2}}, "update")
    manager.register_state("u2", "user", {"data": {"plan": "pro"}})
    manager.register_state("t1", "transaction", {"data": {"amount": 5}})
    return app


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["state", *args])


def ok_json(app: Flask, *args: str) -> Any:
    result = run(app, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def fails(result: Result, message: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    if code == 1:
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert message in result.output


def test_list(seeded: Flask) -> None:
    page = ok_json(seeded, "list", "--type", "USER")
    assert page["total"] == 2 and {r["state_id"] for r in page["items"]} == {"u1", "u2"}
    page = ok_json(seeded, "list", "--filter", "data.plan=pro", "--status", "active")
    assert [r["state_id"] for r in page["items"]] == ["u1"]
    page = ok_json(seeded, "list", "--filter", "data.seats=2")
    assert [r["state_id"] for r in page["items"]] == ["u1"]
    page = ok_json(seeded, "list", "--per-page", "2", "--page", "2")
    assert page["page"] == 2 and page["pages"] == 2 and len(page["items"]) == 1
    text = run(seeded, "list", "--type", "transaction")
    assert text.exit_code == 0 and text.output.startswith("t1  transaction  created  v1")
    assert text.output.endswith("page 1 of 1, 1 state\n")
    fails(run(seeded, "list", "--type", "alien"), "Unknown state type 'alien'", code=2)
    fails(run(seeded, "list", "--filter", "no-equals-sign"), "is not PATH=VALUE", code=2)
    fails(run(seeded, "list", "--filter", "data..x=1"), "data..x", code=2)


def test_list_without_results_says_so_and_prints_the_apis_page(seeded: Flask) -> None:
    text = run(seeded, "list", "--status", "expired")
    assert text.exit_code == 0 and text.output == "No states match.\n"
    page = ok_json(seeded, "list", "--status", "expired")
    assert page == {"items": [], "total": 0, "page": 1, "per_page": 50, "pages": 0,
                    "total_exact": True}  # fmt: skip
    assert seeded.test_client().get("/api/states?status=expired").get_json() == page
    past = run(seeded, "list", "--type", "user", "--page", "3")
    assert past.exit_code == 0
    assert past.output == "Page 3 is past the last page (1); 2 states match.\n"
    api = seeded.test_client().get("/api/states?type=user&page=3").get_json()
    assert ok_json(seeded, "list", "--type", "user", "--page", "3") == api
    assert api["items"] == [] and api["pages"] == 1 and api["total"] == 2
    one = run(seeded, "list", "--type", "transaction", "--page", "2").output
    assert one == "Page 2 is past the last page (1); 1 state matches.\n"


def test_show(seeded: Flask) -> None:
    record = ok_json(seeded, "show", "u1")
    assert record["status"] == "active" and record["version"] == 3
    text = run(seeded, "show", "u1").output
    assert "name: Ada" in text and 'data: {"plan": "pro", "seats": 2}' in text
    fails(run(seeded, "show", "nobody"), "No state with id 'nobody' exists.")
    fails(run(seeded, "show", "bad id!"), "Invalid state id", code=2)


def test_history(seeded: Flask) -> None:
    rows = ok_json(seeded, "history", "u1")["items"]
    assert [r["transition"] for r in rows] == ["create", "activate", "update"]
    assert rows[1]["actor"] == "ops" and rows[1]["correlation_id"] is None
    latest = ok_json(seeded, "history", "u1", "--limit", "1")["items"]
    assert [r["version"] for r in latest] == [3]
    assert len(ok_json(seeded, "history", "u1", "--transition", "ACTIVATE")["items"]) == 1
    text = run(seeded, "history", "u1").output
    assert "v2" in text and "activate  created -> active  by ops  (verified)" in text
    fails(run(seeded, "history", "nobody"), "No state with id 'nobody'")
    fails(run(seeded, "history", "u1", "--limit", "0"), "Invalid value", code=2)


def test_transition_records_a_cli_correlation_id(seeded: Flask) -> None:
    record = ok_json(seeded, "transition", "u1", "SUSPEND", "--reason", "fraud", "--actor", "bob")
    assert record["status"] == "suspended" and record["version"] == 4
    record = ok_json(seeded, "transition", "u1", "update", "--data", '{"seats": 3}', "--merge",
                     "--expected-version", "4")  # fmt: skip
    assert record["data"] == {"plan": "pro", "seats": 3}
    last = current_state_manager.get_recent_changes("u1", 2)
    assert [r["actor"] for r in last] == [None, "bob"]
    assert all(r["correlation_id"].startswith("cli-") for r in last)
    assert run(seeded, "transition", "u1", "resume").output == "u1: resume -> active (version 6)\n"
    fails(run(seeded, "transition", "u1", "activate"), "transition activate is not allowed")
    fails(run(seeded, "transition", "u1", "update", "--expected-version", "1"),
          "not the expected version 1")  # fmt: skip
    fails(run(seeded, "transition", "u1", "update", "--data", "{nope"), "must be JSON", code=2)
    fails(run(seeded, "transition", "u1", "update", "--data", "[1]"), "JSON object", code=2)
    fails(run(seeded, "transition", "u1", "fly"), "Invalid transition 'fly'", code=2)


def test_rollback(seeded: Flask) -> None:
    record = ok_json(seeded, "rollback", "u1", "2", "--reason", "undo")
    assert record["data"] == {"plan": "free"} and record["version"] == 4
    text = run(seeded, "rollback", "u1", "3").output
    assert text == "u1: restored version 3 as version 5 (active)\n"
    fails(run(seeded, "rollback", "u1", "99"), "to_version must be an earlier version")
    fails(run(seeded, "rollback", "nobody", "1"), "No state with id 'nobody'")


def test_diff(seeded: Flask) -> None:
    diff = ok_json(seeded, "diff", "u1", "2", "3")
    assert diff["changed"] == {"data.plan": {"from": "free", "to": "pro"}}
    assert diff["added"] == {"data.seats": 2}
    text = run(seeded, "diff", "u1", "1", "3").output
    assert '~ data.plan: "free" -> "pro"' in text and "+ data.seats = 2" in text
    assert '~ status: "created" -> "active"' in text
    assert run(seeded, "diff", "u1", "3", "3").output == "no differences\n"
    fails(run(seeded, "diff", "u1", "1", "9"), "has no version 9")


def test_promote_and_demote_one_state(seeded: Flask) -> None:
    assert ok_json(seeded, "promote", "u1") == {"moved": ["u1"], "unchanged": [], "failed": {}}
    hot = current_state_manager.get_repositories().hot
    assert hot.fetch("state:u1") is not None
    assert ok_json(seeded, "demote", "u2")["moved"] == ["u2"]
    cold = current_state_manager.get_repositories().cold
    assert cold.fetch("state:u2") is not None
    demoted = current_state_manager.get_state("u2")
    assert demoted is not None and demoted["data"] == {"plan": "pro"}
    assert (
        run(seeded, "promote", "t1").stdout
        == "promoted: 1, unchanged: 0, failed: 0\n  promoted: t1\n"
    )
    missing = run(seeded, "promote", "nobody")
    assert missing.exit_code == 1
    assert "  failed: nobody: No state with id 'nobody' exists.\n" in missing.stdout
    assert missing.stderr == "Error: 1 of 1 state failed (0 promoted, 0 unchanged).\n"
    fails(run(seeded, "demote"), "Give one or more STATE_IDS, or --pattern.", code=2)


def test_batch_promote_shows_progress_and_reports_failures(seeded: Flask) -> None:
    result = run(seeded, "promote", "--pattern", "u*", "t1", "--json")
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(result.stdout)["moved"]) == ["t1", "u1", "u2"]
    assert "Promoted 3 states" in result.stderr
    result = run(seeded, "demote", "u1", "ghost", "--json")
    assert result.exit_code == 1
    outcome = json.loads(result.stdout)
    assert outcome["moved"] == ["u1"] and list(outcome["failed"]) == ["ghost"]
    assert "Error: 1 of 2 states failed (1 demoted, 0 unchanged)." in result.stderr


def test_keys(seeded: Flask) -> None:
    assert ok_json(seeded, "keys", "u*") == ["u1", "u2"]
    assert run(seeded, "keys", "t?").output == "t1\n"
    fails(run(seeded, "keys", "bad pattern!"), "pattern", code=2)


def test_stats(seeded: Flask) -> None:
    stats = ok_json(seeded, "stats")
    assert stats["history_rows"] == 5
    assert run(seeded, "stats").output.endswith("\nHistory rows: 5\n")


def test_health(seeded: Flask) -> None:
    health = ok_json(seeded, "health")
    assert health["status"] == "healthy"
    assert run(seeded, "health").output.startswith("status: healthy\n  hot (memory): available")


def test_health_exits_1_when_the_warm_tier_is_down(make_app: AppFactory) -> None:
    app = make_app(
        TIERED_STATE_WARM_URL="postgresql+psycopg://postgres@127.0.0.1:9/nowhere",
        TIERED_STATE_CREATE_TABLES=False,
        TIERED_STATE_API_PREFIX="/api",
    )
    result = run(app, "health", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["tiers"]["warm"]["available"] is False
    response = app.test_client().get("/api/health")
    assert response.status_code == 503 and response.get_json()["status"] == "unhealthy"
    fails(run(app, "init-db"), "Could not create or upgrade the tables")


def test_graph(seeded: Flask) -> None:
    text = run(seeded, "graph", "USER").output
    assert text.startswith("stateDiagram-v2\n    [*] --> created: create\n")
    assert "    suspended --> active: resume\n" in text
    graph = ok_json(seeded, "graph", "user")
    assert graph["initial_status"] == "created" and graph["mermaid"] == text.rstrip("\n")
    assert {"from": "active", "transition": "update", "to": "active"} in graph["transitions"]
    fails(run(seeded, "graph", "alien"), "Unknown state type 'alien'", code=2)


def test_init_db(seeded: Flask) -> None:
    result = ok_json(seeded, "init-db")
    assert result["revision"] == migrations.HEAD_REVISION
    assert run(seeded, "init-db").output.endswith(f"are at revision {migrations.HEAD_REVISION}.\n")
    assert current_state_manager.get_state("u1") is not None  # adopted, not recreated


@pytest.mark.parametrize(
    "args",
    [["list"], ["show", "u1"], ["history", "u1"], ["transition", "u1", "activate"],
     ["rollback", "u1", "1"], ["diff", "u1", "1", "2"], ["promote", "u1"], ["demote", "u1"],
     ["keys", "*"], ["stats"], ["health"], ["graph", "user"], ["init-db"],
     ["dispatch", "--once"], ["events"], ["events", "retry", "--all-dead"], ["timers"],
     ["timers", "cancel", "t1"]],
)  # fmt: skip
def test_every_command_needs_the_extension(make_app: AppFactory, args: list[str]) -> None:
    app = make_app(init=False)
    result = app.test_cli_runner().invoke(state_cli, args)
    fails(result, "flask_tiered_state is not initialised on app")
    assert "Did you forget TieredState(app) / init_app(app)" in result.output


def test_the_flask_command_finds_the_group_once_through_the_entry_point(
    make_app: AppFactory,
) -> None:
    from click.testing import CliRunner
    from flask.cli import FlaskGroup, ScriptInfo

    app = make_app()
    app.extensions["tiered_state"].manager.register_state("u1", "user", {})
    cli = FlaskGroup(create_app=lambda: app)
    with cli.make_context("flask", ["state"], obj=ScriptInfo(create_app=lambda: app)) as ctx:
        assert cli.list_commands(ctx).count("state") == 1
    result = CliRunner().invoke(cli, ["state", "keys", "*", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == ["u1"]

    bare = make_app(init=False)
    result = CliRunner().invoke(FlaskGroup(create_app=lambda: bare), ["state", "stats"])
    fails(result, "Did you forget TieredState(app) / init_app(app)")

"""``flask state`` output for people and for scripts (issue 17): ``stats`` as tables,
``--json`` bodies equal to the REST API's for the same state, one exit-code table,
honest per-id reports of ``promote`` / ``demote``, validation errors with REST's field
messages, and progress labels without padding when there is no terminal.

Run on the embedded defaults and on the servers (Redis, PostgreSQL, S3 on moto)."""

from __future__ import annotations

import json
from typing import Any

import click
import marshmallow
import pytest
from click.testing import CliRunner, Result
from flask import Flask

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import get_app_state
from tests.conftest import SERVICES, services_config

from .conftest import AppFactory

HOT_COPY_WARNING = "Warning: embedded mode: the HOT tier is this command's own memory"
DEMOTE_WARNING = "Warning: embedded mode: the app's other processes (its server) are not told"


@pytest.fixture(params=["embedded", SERVICES])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app(make_app: AppFactory, backend: str, request: pytest.FixtureRequest) -> Flask:
    config = services_config(request) if backend == "services" else {}
    app = make_app(TIERED_STATE_API_PREFIX="/api", **config)
    seed(get_app_state(app).manager)
    return app


class PlanSchema(marshmallow.Schema):
    """A data schema that knows ``seats`` only (unknown fields are refused)."""

    seats = marshmallow.fields.Integer(validate=marshmallow.validate.Range(min=1))


def seed(manager: StateManager) -> None:
    manager.register_state_type("team", schema=PlanSchema)
    for state_id in ("a", "b"):  # twins: one changed by the CLI, one by REST
        manager.register_state(state_id, "user", {"name": "Ada", "data": {"plan": "free"}})
        manager.update_state(state_id, None, "activate", actor="ops", reason="verified")
        manager.update_state(state_id, {"data": {"plan": "pro", "seats": 2}}, "update")
    manager.register_state("t1", "transaction", {"data": {"amount": 5}})
    manager.register_state("crew", "team", {"data": {"seats": 3}})


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["state", *args])


def cli_json(app: Flask, *args: str, code: int = 0) -> Any:
    result = run(app, *args, "--json")
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def rest_json(app: Flask, method: str, url: str, status: int = 200, **body: Any) -> Any:
    client = app.test_client()
    response = client.open(url, method=method, json=body if method == "POST" else None)
    assert response.status_code == status, response.get_json()
    return response.get_json()


# -- stats as tables -----------------------------------------------------------------------


def test_stats_prints_tables_not_json_lines(app: Flask, backend: str) -> None:
    result = run(app, "stats")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert not any(line.lstrip().startswith(("{", "[")) or '": ' in line for line in lines)
    assert lines[0] == "Tiers"
    assert lines[1].split() == ["tier", "backend", "available", "keys", "size", "hits",
                                "misses", "hit", "rate", "health"]  # fmt: skip
    backends = {"embedded": ("memory", "sqlite", "filesystem"),
                "services": ("redis", "postgresql", "s3")}[backend]  # fmt: skip
    for line, tier, name in zip(lines[2:5], ("hot", "warm", "cold"), backends, strict=True):
        assert line.split()[:3] == [tier, name, "yes"] and line.endswith("ok"), line
    columns = lines[1].index("keys")
    warm_keys = lines[3][columns:].split()[0]
    assert warm_keys == str(cli_json(app, "stats")["tiers"]["warm"]["key_count"])
    assert "Cache" in lines and "Movements" in lines and "Invalidation" in lines
    cache = lines[lines.index("Cache") + 1 :]
    assert cache[0].split() == ["figure", "value"]
    assert any(row.split()[:2] == ["hit", "rate"] and row.endswith(" %") for row in cache)
    assert lines[-1] == f"History rows: {cli_json(app, 'stats')['history_rows']}"


def test_stats_json_keeps_the_managers_figures(app: Flask) -> None:
    figures = cli_json(app, "stats")
    assert set(figures) >= {"cache", "tiers", "movements", "invalidation", "history_rows"}
    assert figures["history_rows"] == 8


# -- --json is the REST API's body -------------------------------------------------------


def test_read_commands_print_the_rest_apis_bodies(app: Flask) -> None:
    assert cli_json(app, "show", "a") == rest_json(app, "GET", "/api/states/a")
    assert cli_json(app, "list", "--type", "user", "--per-page", "1") == rest_json(
        app, "GET", "/api/states?type=user&per_page=1"
    )
    assert cli_json(app, "diff", "a", "1", "3") == rest_json(
        app, "GET", "/api/states/a/diff?from=1&to=3"
    )
    assert cli_json(app, "health") == rest_json(app, "GET", "/api/health")


@pytest.mark.parametrize(
    ("args", "query"),
    [
        ([], ""),
        (["--per-page", "1"], "?per_page=1"),  # a next link to the second page
        (["--per-page", "1", "--page", "3"], "?per_page=1&page=3"),  # the last page
        (["--page", "9"], "?page=9"),  # past the last page
        (["--transition", "ACTIVATE"], "?transition=activate"),
        (["--transition", "update", "--per-page", "1"], "?transition=update&per_page=1"),
        (["--limit", "2"], "?limit=2"),
    ],
)
def test_history_json_is_the_rest_apis_body(app: Flask, args: list[str], query: str) -> None:
    cli = cli_json(app, "history", "a", *args)
    assert cli == rest_json(app, "GET", f"/api/states/a/history{query}")
    assert cli["state_id"] == "a" and bool(cli["items"]) == ("9" not in args)


def test_history_json_has_a_next_link_only_where_the_app_serves_the_api(
    make_app: AppFactory,
) -> None:
    with_api = make_app(TIERED_STATE_API_PREFIX="/api")
    seed(get_app_state(with_api).manager)
    page = cli_json(with_api, "history", "a", "--per-page", "1")
    assert page["next"] == "/api/states/a/history?page=2&per_page=1"
    assert with_api.test_client().get(page["next"]).get_json()["page"] == 2
    without = make_app()
    seed(get_app_state(without).manager)
    page = cli_json(without, "history", "a", "--per-page", "1")
    assert page["next"] is None and page["pages"] == 3


def test_changing_commands_print_the_rest_apis_record(app: Flask) -> None:
    # The twins a and b changed the same way, one by the CLI, one by REST: the records
    # differ only in their id and timestamps (request-specific: when the change was made).
    def comparable(record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if k not in ("state_id", "updated_at",
                                                             "created_at")}  # fmt: skip

    cli = cli_json(app, "transition", "a", "suspend", "--reason", "fraud")
    rest = rest_json(app, "POST", "/api/states/b/transitions", transition="suspend",
                     reason="fraud")  # fmt: skip
    assert comparable(cli) == comparable(rest) and set(cli) == set(rest)
    assert cli == rest_json(app, "GET", "/api/states/a")
    cli = cli_json(app, "rollback", "a", "2")
    rest = rest_json(app, "POST", "/api/states/b/rollback", to_version=2)
    assert comparable(cli) == comparable(rest) and set(cli) == set(rest)


# -- exit codes ----------------------------------------------------------------------------

#: The table of docs/cli.rst: 0 done; 1 the command ran and failed or was refused; 2 bad
#: usage (the command line is wrong whatever the states hold).
EXIT_CODES = [
    (["show", "a"], 0),
    (["list", "--status", "expired"], 0),  # nothing matches: not an error
    (["history", "a", "--page", "9"], 0),  # past the last page: not an error
    (["show", "nobody"], 1),  # no such state
    (["transition", "a", "activate"], 1),  # the lifecycle refuses it from active
    (["transition", "a", "update", "--expected-version", "1"], 1),  # a conflict
    (["transition", "crew", "update", "--data", '{"seats": 0}'], 1),  # validation
    (["diff", "a", "1", "9"], 1),  # a version never recorded
    (["rollback", "a", "3"], 1),  # at that version already
    (["promote", "nobody"], 1),
    (["transition", "a", "fly"], 2),  # an unknown transition
    (["transition", "a", "create"], 2),  # not a transition of an existing state
    (["history", "a", "--transition", "fly"], 2),
    (["list", "--type", "alien"], 2),  # an unknown type
    (["graph", "alien"], 2),
    (["show", "bad id!"], 2),  # not a state id
    (["promote", "bad id!"], 2),
    (["keys", "bad pattern!"], 2),  # not a glob
    (["list", "--filter", "data..x=1"], 2),  # not a filter path
    (["transition", "a", "update", "--data", "{nope"], 2),  # not JSON
    (["transition", "a", "update", "--data", "[1]"], 2),  # not an object
    (["transition", "a", "update", "--data", '{"x":' * 200 + "1" + "}" * 200], 2),  # too deep
    (["transition", "a", "suspend", "--actor", "x" * 201], 2),  # too long
    (["history", "a", "--limit", "0"], 2),  # out of range
    (["history", "a", "--limit", "2", "--page", "2"], 2),  # options that go alone
    (["show"], 2),  # a missing argument
    (["show", "a", "--bogus"], 2),  # an unknown option
    (["teleport"], 2),  # an unknown command
]


@pytest.mark.parametrize(
    ("args", "code"), EXIT_CODES, ids=[" ".join(a)[:40] for a, _ in EXIT_CODES]
)
def test_every_command_follows_the_exit_code_table(app: Flask, args: list[str], code: int) -> None:
    result = run(app, *args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    if code:
        errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, result.output
    if code == 2:
        assert "Try '" in result.output  # click's usage hint, as for every usage error


# -- validation errors name the fields -----------------------------------------------------


def test_a_validation_error_prints_the_field_messages_rest_shows(app: Flask) -> None:
    result = run(app, "transition", "crew", "update", "--data", '{"plan": "team", "seats": 0}')
    assert result.exit_code == 1
    rest = rest_json(app, "POST", "/api/states/crew/transitions", 422, transition="update",
                     data={"plan": "team", "seats": 0})  # fmt: skip
    errors = rest["details"]["errors"]
    assert errors == {"plan": ["Unknown field."], "seats": ["Must be greater than or equal to 1."]}
    assert result.stderr == (
        f"Error: {rest['message']}\n"
        "  plan: Unknown field.\n"
        "  seats: Must be greater than or equal to 1.\n"
    )
    assert result.stdout == ""
    assert get_app_state(app).manager.get_state("crew")["version"] == 1  # type: ignore[index]


def test_merged_data_refused_by_the_schema_names_the_field(app: Flask) -> None:
    result = run(app, "transition", "crew", "update", "--data", '{"plan": "x"}', "--merge")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[1:] == ["  plan: Unknown field."]


# -- promote and demote report each id -----------------------------------------------------


def test_promote_reports_each_ids_outcome_and_fails_on_any_failure(app: Flask) -> None:
    assert cli_json(app, "promote", "t1")["moved"] == ["t1"]
    result = run(app, "promote", "a", "t1", "ghost", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "moved": ["a"],
        "unchanged": ["t1"],  # promoted already (by this process: the test's)
        "failed": {"ghost": "No state with id 'ghost' exists."},
    }
    assert (
        result.stderr.splitlines()[-1] == "Error: 1 of 3 states failed (1 promoted, 1 unchanged)."
    )
    text = run(app, "promote", "a", "ghost")
    assert text.exit_code == 1
    assert text.stdout.splitlines()[0].startswith("promoted: ")
    assert "  failed: ghost: No state with id 'ghost' exists." in text.stdout.splitlines()


def test_demote_counts_a_partial_failure_right(app: Flask) -> None:
    result = run(app, "demote", "a", "ghost", "a", "b")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "demoted: 2, unchanged: 0, failed: 1",
        "  demoted: a, b",
        "  failed: ghost: No state with id 'ghost' exists.",
    ]
    assert result.stderr.splitlines()[-1] == "Error: 1 of 3 states failed (2 demoted, 0 unchanged)."
    again = run(app, "demote", "a", "--json")
    assert again.exit_code == 0
    assert json.loads(again.stdout) == {"moved": [], "unchanged": ["a"], "failed": {}}
    assert run(app, "demote", "a").stdout.splitlines()[1] == "  unchanged (already in COLD): a"
    none = run(app, "demote", "--pattern", "zz*")  # a glob that matches nothing: no error
    assert none.exit_code == 0 and none.stdout == "demoted: 0, unchanged: 0, failed: 0\n"
    assert none.stderr == "No state id matches 'zz*'.\n"


def test_promote_and_demote_warn_in_embedded_mode_only(app: Flask, backend: str) -> None:
    promoted = run(app, "promote", "a", "--json")
    demoted = run(app, "demote", "b", "--json")
    assert promoted.exit_code == demoted.exit_code == 0
    assert (HOT_COPY_WARNING in promoted.stderr) == (backend == "embedded")
    assert (DEMOTE_WARNING in demoted.stderr) == (backend == "embedded")
    assert json.loads(promoted.stdout)["moved"] == ["a"]  # stdout stays JSON
    nothing = run(app, "demote", "b")  # unchanged: nothing to warn about
    assert nothing.exit_code == 0 and "Warning" not in nothing.stderr


# -- progress without a terminal -----------------------------------------------------------


def test_progress_labels_are_plain_lines_without_a_terminal(app: Flask) -> None:
    assert run(app, "promote", "--pattern", "t*").stderr.splitlines()[0] == "Promoted 1 state"
    assert run(app, "promote", "a", "b").stderr.splitlines()[0] == "Promoted 2 states"
    assert run(app, "demote", "--pattern", "?").stderr.splitlines()[0] == "Demoted 2 states"
    assert run(app, "gc").stderr == "Planning 4 states\n"
    for result in (run(app, "promote", "a", "b"), run(app, "gc"), run(app, "backup", "create")):
        assert result.exit_code == 0, result.output
        for line in result.stderr.splitlines():
            assert line == line.rstrip() and "\r" not in line and "[" not in line, line


def test_the_demos_progress_labels_are_not_padded_without_a_terminal() -> None:
    from example_app.cli import _bar

    @click.command()
    def seed_some() -> None:
        with _bar("Creating users", 3) as advance:
            advance(3)

    result = CliRunner().invoke(seed_some)
    assert result.exit_code == 0 and result.output == "Creating users\n"

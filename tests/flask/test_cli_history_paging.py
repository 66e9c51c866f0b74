"""``flask state history`` pages like ``GET /states/<id>/history``: 50 changes by default,
``--page`` up to 1,000,000 and ``--per-page`` up to 1,000. It printed the whole history
before (issue 13's unbounded history, on the CLI)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import Result
from flask import Flask

from flask_tiered_state.domain.paging import MAX_PAGE, MAX_PER_PAGE
from flask_tiered_state.extension import get_app_state

CHANGES = 120


@pytest.fixture
def long_app(app: Flask) -> Flask:
    """``u1`` with 120 changes: created, activated, then 118 updates."""
    manager = get_app_state(app).manager
    manager.register_state("u1", "user", {"data": {"n": 1}})
    manager.update_state("u1", None, "activate", actor="ops")
    for n in range(3, CHANGES + 1):
        manager.update_state("u1", {"data": {"n": n}})
    return app


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["state", "history", *args])


def versions(result: Result) -> list[int]:
    assert result.exit_code == 0, result.output
    return [int(line.split()[0][1:]) for line in result.output.splitlines() if line[:1] == "v"]


def last_line(result: Result) -> str:
    return result.output.strip().splitlines()[-1]


def as_json(app: Flask, *args: str) -> Any:
    result = run(app, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_page_of_50_by_default(long_app: Flask) -> None:
    result = run(long_app, "u1")
    assert versions(result) == list(range(1, 51))
    assert last_line(result) == "page 1 of 3, 120 changes"
    assert [row["version"] for row in as_json(long_app, "u1")["items"]] == list(range(1, 51))


def test_pages_and_their_size(long_app: Flask) -> None:
    last = run(long_app, "u1", "--page", "3")
    assert versions(last) == list(range(101, 121))
    assert last_line(last) == "page 3 of 3, 120 changes"
    assert versions(run(long_app, "u1", "--page", "2", "--per-page", "7")) == list(range(8, 15))
    rows = as_json(long_app, "u1", "--per-page", str(MAX_PER_PAGE))["items"]
    assert len(rows) == CHANGES
    assert rows == get_app_state(long_app).manager.get_state_history("u1")


def test_a_page_past_the_last_one_says_so(long_app: Flask) -> None:
    result = run(long_app, "u1", "--page", "4")
    assert versions(result) == []
    assert result.output.strip() == "Page 4 is past the last page (3); 120 changes."
    assert as_json(long_app, "u1", "--page", "4")["items"] == []


def test_a_transition_is_paged_too(long_app: Flask) -> None:
    result = run(long_app, "u1", "--transition", "update", "--per-page", "10", "--page", "2")
    assert versions(result) == list(range(13, 23))
    assert last_line(result) == "page 2 of 12, 118 changes"
    activate = run(long_app, "u1", "--transition", "ACTIVATE")
    assert versions(activate) == [2] and last_line(activate) == "page 1 of 1, 1 change"
    assert run(long_app, "u1", "--transition", "rollback").output.strip() == "No changes match."


@pytest.mark.parametrize(
    "args",
    [
        ["--page", "0"],
        ["--page", str(MAX_PAGE + 1)],
        ["--page", "288230376151711744"],
        ["--per-page", "0"],
        ["--per-page", str(MAX_PER_PAGE + 1)],
        ["--limit", "5", "--page", "2"],
        ["--limit", "5", "--per-page", "10"],
        ["--limit", "5", "--transition", "update"],
    ],
)
def test_out_of_bounds_and_mixed_options_are_usage_errors(long_app: Flask, args: list[str]) -> None:
    result = run(long_app, "u1", *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_limit_still_gives_the_latest_changes(long_app: Flask) -> None:
    assert versions(run(long_app, "u1", "--limit", "3")) == [120, 119, 118]
    assert run(long_app, "u1", "--limit", "3").output.count("\n") == 3  # no page line


def test_an_unknown_state_exits_1(long_app: Flask) -> None:
    result = run(long_app, "nobody", "--page", "2")
    assert result.exit_code == 1 and "No state with id 'nobody'" in result.output

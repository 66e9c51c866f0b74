"""``flask state audit verify`` and ``flask state audit seal``: output, ``--json`` and exit
codes, on the embedded defaults and on the servers."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import Result
from flask import Flask

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import get_app_state
from tests.conftest import SERVICES, services_config

from .conftest import AppFactory

KEY = "cli-audit-key-" + "c" * 32
NEW_KEY = "cli-audit-newer-key-" + "n" * 32


@pytest.fixture(params=["embedded", SERVICES])
def config(request: pytest.FixtureRequest) -> dict[str, Any]:
    return services_config(request) if request.param == "services" else {}


def seed(manager: StateManager) -> None:
    manager.register_state("u1", "user", {"data": {"plan": "free"}})
    manager.update_state("u1", None, "activate", actor="ops")
    manager.update_state("u1", {"data": {"plan": "pro"}}, "update", reason="upgrade")
    manager.register_state("u2", "user")
    manager.register_state("t1", "transaction", {"data": {"amount": 5}})


@pytest.fixture
def audited(make_app: AppFactory, config: dict[str, Any]) -> Flask:
    app = make_app(TIERED_STATE_AUDIT_KEYS=[KEY], **config)
    seed(get_app_state(app).manager)
    return app


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["state", "audit", *args])


def sql(app: Flask, statement: str) -> None:
    manager = get_app_state(app).manager
    with manager.history.engine.begin() as connection:
        connection.execute(sa.text(statement.format(h=manager.history.table.name)))


def test_verify_passes_on_an_untouched_history(audited: Flask) -> None:
    result = run(audited, "verify")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Checked 3 states: 3 verified, 0 broken, 0 unsealed.\n"
    assert "Verifying 3 states" in result.stderr  # the progress bar
    report = json.loads(run(audited, "verify", "--json").stdout)
    key_id = get_app_state(audited).manager.audit_sealer.key_ids[0]  # type: ignore[union-attr]
    assert report == {
        "checked": 3,
        "counts": {"verified": 3, "unsealed": 0, "broken": 0, "not_found": 0},
        "states": [],
        "key_ids": [key_id],
    }


def test_verify_names_the_broken_state_its_first_bad_version_and_what(audited: Flask) -> None:
    sql(audited, "UPDATE {h} SET actor = 'mallory', reason = 'x' "
        "WHERE state_id = 'u1' AND version >= 2")  # fmt: skip
    result = run(audited, "verify")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "u1  broken at version 2: actor, reason",
        "  version 2: its actor differs from the sealed one",
        "  version 2: its reason differs from the sealed one",
        "Checked 3 states: 2 verified, 1 broken, 0 unsealed.",
    ]
    assert "Error: 1 state failed the audit" in result.stderr
    as_json = run(audited, "verify", "--json")
    assert as_json.exit_code == 1
    [state] = json.loads(as_json.stdout)["states"]
    assert (state["state_id"], state["status"], state["version"]) == ("u1", "broken", 2)
    assert [p["what"] for p in state["problems"]] == ["actor", "reason"]
    assert run(audited, "verify", "u2", "t1").exit_code == 0
    assert run(audited, "verify", "--type", "transaction").exit_code == 0
    assert run(audited, "verify", "--type", "USER").exit_code == 1


def test_verify_of_ids_reports_unknown_ids(audited: Flask) -> None:
    result = run(audited, "verify", "u2", "nobody")
    assert result.exit_code == 1
    assert "nobody  not found: no history and no record" in result.stdout
    assert "Checked 2 states: 1 verified, 0 broken, 0 unsealed, 1 not found." in result.stdout
    bad_type = run(audited, "verify", "--type", "alien")
    assert bad_type.exit_code == 2 and "Unknown state type 'alien'" in bad_type.output
    bad_id = run(audited, "verify", "no spaces allowed")
    assert bad_id.exit_code == 2 and "no spaces allowed" in bad_id.output


def test_seal_seals_rows_written_before_the_keys(
    make_app: AppFactory, config: dict[str, Any], tmp_path: Any
) -> None:
    plain = make_app(TIERED_STATE_LOCAL_DIR=str(tmp_path / "shared"), **config)
    seed(get_app_state(plain).manager)
    missing = run(plain, "verify")
    assert missing.exit_code == 1
    assert "No audit key is configured" in missing.stderr and "TIERED_STATE_AUDIT_KEYS" in (
        missing.stderr
    )
    assert run(plain, "seal").exit_code == 1
    get_app_state(plain).close()

    app = make_app(TIERED_STATE_LOCAL_DIR=str(tmp_path / "shared"), TIERED_STATE_AUDIT_KEYS=KEY,
                   **config)  # fmt: skip
    unsealed = run(app, "verify")
    assert unsealed.exit_code == 1
    assert "u1  unsealed: 3 of 3 rows have no seal (from version 1)" in unsealed.stdout
    assert "'flask state audit seal'" in unsealed.stderr
    assert run(app, "verify", "--allow-unsealed").exit_code == 0
    sealed = run(app, "seal")
    key_id = get_app_state(app).manager.audit_sealer.key_ids[0]  # type: ignore[union-attr]
    assert sealed.exit_code == 0, sealed.output
    assert sealed.stdout == f"Sealed 5 rows of 3 states with key id {key_id}.\n"
    assert json.loads(run(app, "seal", "--json").stdout) == {"rows": 0, "states": 0,
                                                            "key_id": key_id}  # fmt: skip
    assert run(app, "verify").exit_code == 0
    get_app_state(app).close()

    rotated = make_app(TIERED_STATE_LOCAL_DIR=str(tmp_path / "shared"),
                       TIERED_STATE_AUDIT_KEYS=[NEW_KEY, KEY], **config)  # fmt: skip
    get_app_state(rotated).manager.update_state("u2", None, "activate")
    assert run(rotated, "verify").exit_code == 0
    get_app_state(rotated).close()
    retired = make_app(TIERED_STATE_LOCAL_DIR=str(tmp_path / "shared"),
                       TIERED_STATE_AUDIT_KEYS=[NEW_KEY], **config)  # fmt: skip
    result = run(retired, "verify", "u2")
    assert result.exit_code == 1
    assert "which is not among the configured audit keys" in result.stdout

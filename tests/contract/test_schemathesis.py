"""The REST API against its OpenAPI document: schemathesis, every check, every phase.

The example app (with its token hook, rate limits off) is served by werkzeug on a free
port, on the embedded defaults and on Redis + PostgreSQL + S3 (moto); schemathesis' CLI
runs against it in a subprocess with all checks and the examples, coverage, fuzzing and
stateful phases, a bounded number of cases and deterministic generation, so each run
sends the same requests. Its NDJSON event stream gives the cases and responses per
phase; the test writes them to ``schemathesis-summary.json`` in its tmp dir, prints
them (``-s``), and asserts no failure and no 5xx answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from example_app import create_app
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import get_app_state
from flask_tiered_state.settings import SETTINGS
from tests.conftest import SERVICES, services_config

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
TOKEN = "admin-token-of-the-contract-test"
PHASES = ("examples", "coverage", "fuzzing", "stateful")
#: Cases per operation and phase: enough for every operation to be reached with valid
#: and invalid input, few enough for the module to take about a minute per backend.
MAX_EXAMPLES = 25
SEED = 13
#: A state type without validators, registered beside the demo's.
FREE_FORM_TYPE = "contract_note"
#: The command is `st`, beside the interpreter that runs the tests.
ST = Path(sys.executable).with_name("st")


@pytest.fixture(params=["embedded", SERVICES])
def served_app(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The example app served over HTTP; yields its base URL."""
    for setting in SETTINGS:  # create_app reads TIERED_STATE_* from the environment
        monkeypatch.delenv(setting.key, raising=False)
    config: dict[str, Any] = {
        "TIERED_STATE_LOCAL_DIR": str(tmp_path / "local"),
        "TIERED_STATE_RATE_LIMIT": False,
        "CREDIT_API_TOKENS": {"admin": TOKEN},
    }
    if request.param == "services":
        config.update(services_config(request))
    app: Flask = create_app(config)
    # The demo's types all have validators the document cannot state (they answer 422 to
    # most generated data); a free-form type lets the stateful phase create states and
    # follow the links from them to every operation on a state.
    get_app_state(app).manager.register_state_type(FREE_FORM_TYPE)
    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
        get_app_state(app).close()
        StateManager.reset_instance()


def _run_schemathesis(base_url: str, reports: Path) -> subprocess.CompletedProcess[str]:
    reports.mkdir(parents=True, exist_ok=True)
    command = [
        str(ST), "--config-file", str(HERE / "schemathesis.toml"), "--no-color",
        "run", f"{base_url}/api/state/openapi.json",
        "--header", f"Authorization: Bearer {TOKEN}",
        "--checks", "all",
        "--phases", ",".join(PHASES),
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--generation-deterministic",
        "--workers", "1",
        "--request-timeout", "30",
        "--report", "ndjson,json,junit",
        "--report-dir", str(reports),
        "--report-ndjson-path", str(reports / "events.ndjson"),
        "--report-json-path", str(reports / "run.json"),
        "--report-junit-path", str(reports / "junit.xml"),
    ]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    # From the report dir: schemathesis keeps a cache (.schemathesis/) in its working dir.
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, check=False, cwd=reports
    )


def summarise(events: Path) -> dict[str, Any]:
    """Cases, responses by status class, and the 5xx answers, per phase, from the
    NDJSON events of a run."""
    cases: Counter[str] = Counter()
    statuses: dict[str, Counter[str]] = {phase: Counter() for phase in PHASES}
    server_errors: list[dict[str, Any]] = []
    for line in events.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if finished is None:
            continue
        phase = finished["phase"]
        recorder = finished.get("recorder") or {}
        cases[phase] += len(recorder.get("cases", {}))
        for interaction in (recorder.get("interactions") or {}).values():
            response = interaction.get("response") or {}
            status = response.get("status_code")
            if not isinstance(status, int):
                continue
            statuses.setdefault(phase, Counter())[f"{status // 100}xx"] += 1
            if status >= 500:
                request = interaction.get("request") or {}
                server_errors.append(
                    {
                        "phase": phase,
                        "status": status,
                        "method": request.get("method"),
                        "url": request.get("uri") or request.get("url"),
                    }
                )
    return {
        "cases": {phase: cases.get(phase, 0) for phase in PHASES},
        "responses": {phase: dict(sorted(statuses[phase].items())) for phase in PHASES},
        "server_errors": server_errors,
    }


def test_the_api_keeps_its_openapi_contract(
    served_app: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    reports = tmp_path / "schemathesis"
    result = _run_schemathesis(served_app, reports)
    assert (reports / "run.json").is_file(), result.stdout[-20000:] + result.stderr[-5000:]
    run = json.loads((reports / "run.json").read_text(encoding="utf-8"))
    summary = {
        "backend": request.node.callspec.params["served_app"],
        **summarise(reports / "events.ndjson"),
        "phase_status": {name: phase["status"] for name, phase in run["phases"].items()},
        "operations": run["operations"],
        "test_cases": run["test_cases"],
        "failures": len(run["failures"]),
        "errors": len(run["errors"]),
        "exit_code": result.returncode,
    }
    (tmp_path / "schemathesis-summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nschemathesis ({summary['backend']}):", json.dumps(summary, indent=2))
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert summary["failures"] == 0 and summary["errors"] == 0
    assert summary["server_errors"] == [], summary["server_errors"]
    # Every phase ran and reached every operation: the stateful phase through the links.
    assert all(summary["cases"][phase] > 0 for phase in PHASES), summary["cases"]
    assert run["operations"]["tested"] == run["operations"]["selected"]

"""``flask state dispatch``, ``events`` and ``timers``: asynchronous callbacks delivered
from the outbox, failures listed and retried, timers listed and applied, one dispatcher
per SQLite file, and a graceful stop on SIGTERM of a real ``flask`` process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask

from flask_tiered_state.domain.dispatcher import EventDispatcher
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import get_app_state
from tests.conftest import SERVICES

from .conftest import BOTH_BACKENDS, AppFactory
from .test_cli import fails, ok_json, run

ROOT = Path(__file__).resolve().parents[2]


def manager_of(app: Flask) -> StateManager:
    return get_app_state(app).manager


def backend(app: Flask) -> str:
    return manager_of(app).history.engine.dialect.name


def suspended_users(manager: StateManager, *state_ids: str) -> list[str]:
    """Register and suspend each user; the ``user_suspended`` event ids, in order."""
    for state_id in state_ids:
        manager.register_state(state_id, "user", {"data": {"plan": "free"}})
        manager.update_state(state_id, None, "suspend")
    return [manager.get_recent_changes(i, 1)[0]["event_id"] for i in state_ids]


def passes(text: str) -> str:
    """The ``N passes`` of a totals line."""
    found = re.search(r"\b\d+ pass(es)?\b", text)
    assert found is not None, text
    return found.group()


def totals(result: Result) -> dict[str, int]:
    """The totals of ``dispatch --json``."""
    assert result.exit_code == 0, result.output
    found: dict[str, int] = json.loads(result.stdout)
    return found


@BOTH_BACKENDS
def test_dispatch_once_delivers_to_the_apps_asynchronous_callback(app: Flask) -> None:
    manager = manager_of(app)
    effects: list[tuple[str, str]] = []

    def notify(state_id: str, old: Any, new: Any, transition: Any, *, event_id: str) -> None:
        effects.append((state_id, event_id))

    manager.register_callback("user_suspended", notify, asynchronous=True, key="notify")
    event_ids = suspended_users(manager, "u1", "u2")
    assert effects == []  # not called at commit: the dispatcher delivers

    result = run(app, "dispatch", "--once")
    assert result.exit_code == 0, result.output
    assert sorted(effects) == sorted(zip(["u1", "u2"], event_ids, strict=True))
    assert result.stdout == (
        "Done: delivered 2, failed 0, dead 0; timers applied 0, skipped 0, failed 0; "
        f"{passes(result.stdout)}\n"
    )
    startup = result.stderr.splitlines()[0]
    assert f"({backend(app)}): batch 100, concurrency 1, poll 0.5 s" in startup
    assert "1 asynchronous callback." in startup

    listed = ok_json(app, "events", "--status", "delivered")
    assert {row["event_id"] for row in listed["deliveries"]} == set(event_ids)
    assert listed["counts"] == {"pending": 0, "failed": 0, "dead": 0, "delivered": 2}
    again = totals(run(app, "dispatch", "--once", "--json", "--batch", "5"))
    assert again["delivered"] == 0 and again["passes"] >= 1
    assert len(effects) == 2  # delivered once


@BOTH_BACKENDS
def test_failed_and_dead_deliveries_are_listed_and_retried(app: Flask) -> None:
    manager = manager_of(app)

    def broken(state_id: str, old: Any, new: Any, transition: Any, *, event_id: str) -> None:
        raise RuntimeError(f"mail server refused {state_id}")

    # Dies after two quick attempts; the other waits an hour after its first failure.
    manager.register_callback("user_suspended", broken, asynchronous=True, key="quick",
                              max_attempts=2, backoff=0)  # fmt: skip
    manager.register_callback("user_suspended", broken, asynchronous=True, key="patient",
                              max_attempts=5, backoff=3600)  # fmt: skip
    suspended_users(manager, "u1")

    done = totals(run(app, "dispatch", "--once", "--json"))
    assert (done["delivered"], done["failed"], done["dead"]) == (0, 2, 1)

    failed = ok_json(app, "events", "--status", "failed")
    assert [(r["callback"], r["attempts"]) for r in failed["deliveries"]] == [("patient", 1)]
    assert failed["deliveries"][0]["last_error"] == "RuntimeError: mail server refused u1"
    assert failed["counts"] == {"pending": 1, "failed": 1, "dead": 1, "delivered": 0}
    dead = ok_json(app, "events", "--status", "DEAD")["deliveries"]
    assert [(r["callback"], r["attempts"], r["status"]) for r in dead] == [("quick", 2, "dead")]

    text = run(app, "events").output.splitlines()
    assert text[0].split() == ["ID", "EVENT", "CALLBACK", "STATE", "VERSION", "STATUS",
                               "ATTEMPTS", "NEXT", "ATTEMPT", "LAST", "ERROR"]  # fmt: skip
    rows = {line.split()[2]: line.split() for line in text[1:-1]}
    assert rows["patient"][3:7] == ["u1", "2", "failed", "1"]
    assert rows["quick"][3:8] == ["u1", "2", "dead", "2", "-"]
    assert "RuntimeError: mail server refused u1" in text[1]
    assert text[-1] == "pending: 1 (failed: 1), dead: 1, delivered: 0"

    result = run(app, "events", "retry", "--all-dead")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Retried 1 delivery: due now")
    pending = ok_json(app, "events", "--status", "pending")["deliveries"]
    assert sorted((r["callback"], r["attempts"]) for r in pending) == [
        ("patient", 1), ("quick", 0)
    ]  # fmt: skip
    assert ok_json(app, "events", "retry", "--all-dead") == {"retried": 0}

    patient = failed["deliveries"][0]["id"]
    assert ok_json(app, "events", "retry", str(patient), str(patient)) == {"retried": 1}
    assert ok_json(app, "events", "--status", "failed")["deliveries"] == []
    missing = run(app, "events", "retry", str(patient), "987654")
    assert missing.exit_code == 1
    assert missing.stdout == "Retried 1 delivery: due now, attempts counted from zero.\n"
    assert missing.stderr == (
        "Error: 1 of 2 deliveries were not retried: no delivery has the id, or it was "
        "delivered already (see 'flask state events').\n"
    )


@pytest.mark.parametrize("app", ["embedded"], indirect=True)
def test_a_second_dispatcher_on_one_sqlite_file_is_refused(app: Flask) -> None:
    holder = EventDispatcher(manager_of(app))
    try:
        result = run(app, "dispatch", "--once")
        fails(result, f"Another dispatcher (pid {os.getpid()} on ")
        assert "SQLite supports one dispatcher. Stop it first" in result.output
    finally:
        holder.close()
    assert run(app, "dispatch", "--once").exit_code == 0
    fails(run(app, "dispatch", "--concurrency", "2"), "On SQLite the dispatcher runs one thread")


@pytest.mark.parametrize("app", [SERVICES], indirect=True)
def test_dispatchers_share_one_postgresql_database(app: Flask) -> None:
    manager = manager_of(app)
    effects: list[str] = []
    manager.register_callback(
        "user_suspended", lambda *a, event_id: effects.append(event_id),
        asynchronous=True, key="record",
    )  # fmt: skip
    event_ids = suspended_users(manager, "u1", "u2", "u3")
    with EventDispatcher(manager):
        done = totals(run(app, "dispatch", "--once", "--concurrency", "3", "--json"))
    assert done["delivered"] == 3 and sorted(effects) == sorted(event_ids)


@BOTH_BACKENDS
def test_timers_are_listed_applied_when_due_and_cancelled(app: Flask) -> None:
    manager = manager_of(app)
    suspended_users(manager, "u1")
    soon = manager.schedule_transition("u1", "resume", after=timedelta(seconds=0.3),
                                       reason="suspension over", if_version=2)  # fmt: skip
    later = manager.schedule_transition(
        "u1", "expire", at=datetime.now(timezone.utc) + timedelta(days=30)
    )
    listed = ok_json(app, "timers")
    assert [(t["timer_id"], t["status"]) for t in listed] == [
        (soon["timer_id"], "scheduled"), (later["timer_id"], "scheduled")
    ]  # fmt: skip
    text = run(app, "timers", "--state", "u1").output.splitlines()
    assert text[0].split()[:5] == ["TIMER", "STATE", "TRANSITION", "DUE", "STATUS"]
    assert text[1].split()[:3] == [soon["timer_id"], "u1", "resume"]
    assert text[1].split()[4:6] == ["scheduled", "2"] and "suspension over" in text[1]

    time.sleep(max(0.0, soon["due_at"] - time.time()) + 0.05)
    done = totals(run(app, "dispatch", "--once", "--json"))
    assert (done["timers_applied"], done["timers_skipped"], done["timers_failed"]) == (1, 0, 0)
    record = manager.get_state("u1")
    assert record is not None and record["status"] == "active" and record["version"] == 3
    assert manager.get_recent_changes("u1", 1)[0]["actor"] == "scheduler"

    applied = ok_json(app, "timers", "--status", "applied")
    assert [t["timer_id"] for t in applied] == [soon["timer_id"]]
    assert applied[0]["outcome"] == "applied: version 3, status active"
    assert "applied: version 3, status active" in run(app, "timers", "--status", "all").output
    assert [t["timer_id"] for t in ok_json(app, "timers")] == [later["timer_id"]]  # not early

    assert run(app, "timers", "cancel", later["timer_id"]).output == "Cancelled 1 timer.\n"
    fails(run(app, "timers", "cancel", later["timer_id"]),
          f"No scheduled timer has the id {later['timer_id']!r}")  # fmt: skip
    assert run(app, "timers").output == "No timers match.\n"
    cancelled = ok_json(app, "timers", "--status", "cancelled", "--state", "u1")
    assert [t["timer_id"] for t in cancelled] == [later["timer_id"]]

    manager.schedule_transition("u1", "suspend", after=timedelta(hours=1))
    manager.schedule_transition("u1", "expire", after=timedelta(hours=2))
    assert ok_json(app, "timers", "cancel", "--state", "u1", "--transition", "expire") == {
        "cancelled": 1
    }
    assert ok_json(app, "timers", "cancel", "--state", "u1") == {"cancelled": 1}


@pytest.mark.parametrize("app", ["embedded"], indirect=True)
def test_bad_input_gives_one_line_and_the_documented_exit_code(app: Flask) -> None:
    fails(run(app, "dispatch", "--batch", "0"), "Invalid value for '--batch'", code=2)
    fails(run(app, "dispatch", "--batch", "1001"), "Invalid value for '--batch'", code=2)
    fails(run(app, "dispatch", "--concurrency", "65"), "Invalid value for '--concurrency'",
          code=2)  # fmt: skip
    fails(run(app, "dispatch", "--poll", "0"), "Invalid value for '--poll'", code=2)
    fails(run(app, "events", "--status", "bogus"), "Invalid value for '--status'", code=2)
    fails(run(app, "events", "--limit", "0"), "Invalid value for '--limit'", code=2)
    fails(run(app, "events", "retry"), "Give delivery ids or --all-dead, one of them.", code=2)
    fails(run(app, "events", "retry", "1", "--all-dead"), "one of them", code=2)
    fails(run(app, "events", "retry", "0"), "Invalid value for '[DELIVERY_IDS]...'", code=2)
    fails(run(app, "events", "--json", "retry", "1"), "--json belongs to the listing", code=2)
    fails(run(app, "timers", "--status", "all", "--limit", "3", "cancel", "x"),
          "--status, --limit belong to the listing ('flask state timers')", code=2)  # fmt: skip
    fails(run(app, "events", "resend"), "No such command 'resend'", code=2)
    fails(run(app, "events", "retry", "42"), "1 of 1 deliveries were not retried")
    fails(run(app, "timers", "--status", "bogus"), "Invalid value for '--status'", code=2)
    fails(run(app, "timers", "--state", "ghost"), "No state with id 'ghost' exists.")
    fails(run(app, "timers", "--state", "bad id!"), "Invalid state id", code=2)
    fails(run(app, "timers", "cancel"), "Give a TIMER_ID or --state, one of them.", code=2)
    fails(run(app, "timers", "cancel", "abc", "--state", "u1"), "one of them", code=2)
    fails(run(app, "timers", "cancel", "--transition", "expire"), "one of them", code=2)
    fails(run(app, "timers", "cancel", "--state", "ghost"), "No state with id 'ghost'")
    fails(run(app, "timers", "cancel", "nope"), "No scheduled timer has the id 'nope'")


def test_the_retention_setting_prunes_delivered_deliveries(make_app: AppFactory) -> None:
    app = make_app(TIERED_STATE_EVENT_RETENTION_SECONDS=0.5)
    manager = manager_of(app)
    manager.register_callback("user_suspended", lambda *a, event_id: None, asynchronous=True,
                              key="noop")  # fmt: skip
    suspended_users(manager, "u1")
    assert totals(run(app, "dispatch", "--once", "--json"))["delivered"] == 1
    assert ok_json(app, "events")["counts"]["delivered"] == 1
    time.sleep(0.6)
    totals(run(app, "dispatch", "--once", "--json"))  # a new dispatcher prunes first
    assert ok_json(app, "events")["counts"]["delivered"] == 0


def test_a_dispatchers_pass_runs_in_the_app_context(make_app: AppFactory) -> None:
    from flask import current_app

    app = make_app()
    manager = manager_of(app)
    seen: list[str] = []
    manager.register_callback(
        "user_suspended", lambda *a, event_id: seen.append(current_app.name),
        asynchronous=True, key="ctx",
    )  # fmt: skip
    suspended_users(manager, "u1")
    assert totals(run(app, "dispatch", "--once", "--json"))["delivered"] == 1
    assert seen == [app.name]


# -- a real ``flask`` process, stopped by a signal ----------------------------------------


@pytest.fixture(params=["embedded", SERVICES])
def dispatch_env(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The environment of ``tests.flask.dispatch_app``, set in this process too."""
    env = {
        "TIERED_STATE_LOCAL_DIR": str(tmp_path / "local"),
        "DISPATCH_APP_EFFECTS": str(tmp_path / "effects"),
        "DISPATCH_APP_DELAY": "0.2",
    }
    if request.param == "services":
        request.getfixturevalue("postgres_engine")
        env["TIERED_STATE_WARM_URL"] = request.getfixturevalue("postgres_url")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_dispatcher_after_the_pass_under_way(
    dispatch_env: dict[str, str], stop: signal.Signals
) -> None:
    from tests.flask import dispatch_app

    app = dispatch_app.create_app()
    try:
        manager = manager_of(app)
        event_ids = suspended_users(manager, *(f"u{n}" for n in range(10)))
        effects = Path(dispatch_env["DISPATCH_APP_EFFECTS"])
        process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "tests.flask.dispatch_app", "state",
             "dispatch", "--batch", "1", "--poll", "0.1"],
            cwd=ROOT, env={**os.environ, **dispatch_env}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not (effects.exists() and effects.read_text()):
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "no delivery within 60 s"
                time.sleep(0.02)
            process.send_signal(stop)
            stdout, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == 0, stderr
        assert "SIGTERM or Ctrl-C stops after the pass under way" in stderr
        delivered = effects.read_text().split()
        assert 1 <= len(delivered) < 10 and set(delivered) <= set(event_ids)
        assert stdout == (
            f"Stopped by {stop.name}: delivered {len(delivered)}, failed 0, dead 0; timers applied "
            f"0, skipped 0, failed 0; {passes(stdout)}\n"
        )
        # The pass under way finished: every effect is recorded as delivered, nothing
        # was claimed and left failed.
        assert manager.outbox.counts() == {
            "pending": 10 - len(delivered), "failed": 0, "dead": 0, "delivered": len(delivered)
        }  # fmt: skip
    finally:
        get_app_state(app).close()

"""What answers and files do not give away: hosts, ports and a driver's text in error
answers (the log keeps them, on one line each), and the SQLite files' contents."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_tiered_state.extension import TieredState, get_app_state
from flask_tiered_state.http_errors import escape_control
from tests.conftest import free_port


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    made: list[Flask] = []
    yield made
    for app in made:
        get_app_state(app).close()


def make(apps: list[Flask], tmp_path: Path, **config: Any) -> Flask:
    app = Flask(f"leaks_{len(apps)}", instance_path=str(tmp_path / f"i{len(apps)}"))
    app.config.update(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_ACCESS_CONTROL="allow-all")
    app.config.update(config)
    TieredState(app)
    apps.append(app)
    return app


@pytest.mark.postgres
def test_a_503_names_no_host_and_no_port(
    apps: list[Flask], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there: the connection is refused
    app = make(
        apps,
        tmp_path,
        TIERED_STATE_WARM_URL=f"postgresql+psycopg://postgres@127.0.0.1:{port}/app",
        TIERED_STATE_DASHBOARD_PREFIX="/dash",
    )
    client = app.test_client()
    for url in ("/api/states/alice", "/api/health", "/api/states"):
        response = client.get(url)
        assert response.status_code == 503, url
        body = response.get_json()
        assert body["error"] == "tier_unavailable"
        assert body["message"] == (
            "The WARM tier is unavailable; retry later, and quote the correlation id if it "
            "persists."
        )
        assert body["details"] == {"tier": "warm"}
        assert "127.0.0.1" not in response.get_data(as_text=True)
        assert str(port) not in response.get_data(as_text=True)
    page = client.get("/dash/states/alice")
    assert page.status_code == 503
    assert "127.0.0.1" not in page.get_data(as_text=True)
    assert str(port) not in page.get_data(as_text=True)
    # The operator's log has the whole story.
    assert f'connection to server at "127.0.0.1", port {port} failed' in caplog.text


@pytest.mark.postgres
def test_a_400_does_not_echo_the_databases_text(
    apps: list[Flask],
    tmp_path: Path,
    postgres_url: str,
    postgres_engine: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make(apps, tmp_path, TIERED_STATE_WARM_URL=postgres_url)
    client = app.test_client()
    assert client.post("/api/states", json={"state_id": "acct", "type": "user"}).status_code == 201
    # The reason goes to a text column of the history, which PostgreSQL refuses NUL in
    # (NUL in data is refused before any backend sees it, on every backend).
    secret = {"transition": "update", "reason": "4111-1111\u0000"}
    response = client.post("/api/states/acct/transitions", json=secret)
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert body["error"] == "invalid_request"
    text = response.get_data(as_text=True)
    for leaked in ("4111", "0x00", "CONTEXT", "DETAIL", "psycopg"):
        assert leaked not in text, leaked
    assert "server log" in body["message"]
    assert "error" not in body["details"]
    assert "cannot contain NUL" in caplog.text  # the log keeps the driver's text


@pytest.mark.parametrize("prefix", ["/api", "/dash"])
def test_a_newline_in_the_path_of_a_500_forges_no_log_line(
    apps: list[Flask], tmp_path: Path, caplog: pytest.LogCaptureFixture, prefix: str
) -> None:
    def buggy_hook(request: Any, action: str) -> bool:
        raise RuntimeError(f"the hook broke on {request.path}")

    app = make(
        apps,
        tmp_path,
        TIERED_STATE_ACCESS_CONTROL=buggy_hook,
        TIERED_STATE_DASHBOARD_PREFIX="/dash",
    )
    caplog.set_level(logging.ERROR)
    forged = "%0A2024-01-01 00:00:00 CRITICAL admin logged in%0D%1B[2J"
    response = app.test_client().get(f"{prefix}/states/x{forged}")
    assert response.status_code == 500
    # Every line of the log as a handler writes it, the traceback included.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    written = "\n".join(handler.format(r) for r in caplog.records)
    assert (
        f"GET {prefix}/states/x\\n2024-01-01 00:00:00 CRITICAL admin logged in\\r\\x1b[2J"
        in written
    )
    assert f"RuntimeError: the hook broke on {prefix}/states/x\\n2024" in written
    for line in written.splitlines():
        assert not line.startswith("2024-01-01"), line
        assert "\x1b" not in line and "\r" not in line


def test_escape_control_keeps_a_text_on_one_line() -> None:
    assert escape_control("a\nb\r\tc\x00\x7f\x85\u2028é") == "a\\nb\\r\\tc\\x00\\x7f\\x85\\u2028é"
    assert escape_control("plain /api/states?x=1") == "plain /api/states?x=1"


def test_the_sqlite_files_are_the_owners_only(apps: list[Flask], tmp_path: Path) -> None:
    old = os.umask(0o022)  # the common default, which would make them 0644
    try:
        app = make(apps, tmp_path)
        with app.app_context():
            manager = get_app_state(app).manager
            manager.register_state("alice", "user", {"data": {"card": "4111"}})
            local = get_app_state(app).local_dir
            files = sorted(p.name for p in local.iterdir() if p.name.startswith("tiered_state."))
            assert files == [
                "tiered_state.sqlite3",
                "tiered_state.sqlite3-shm",
                "tiered_state.sqlite3-wal",
            ]
            for name in files:
                assert stat.S_IMODE((local / name).stat().st_mode) == 0o600, name
            assert stat.S_IMODE(local.stat().st_mode) == 0o700
    finally:
        os.umask(old)


def test_an_existing_sqlite_file_keeps_its_mode(apps: list[Flask], tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    path.touch(mode=0o640)
    path.chmod(0o640)
    app = make(apps, tmp_path, TIERED_STATE_WARM_URL=f"sqlite:///{path}")
    with app.app_context():
        get_app_state(app).manager.register_state("alice", "user")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640

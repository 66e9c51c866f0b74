"""Apps with the dashboard, a live server for the browser, and headless Chromium.

The browser and the screenshot folder are the session's (``browser`` and ``artifacts``
in tests/conftest.py).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import TieredState, get_app_state
from tests.conftest import SERVICES, services_config

_names = itertools.count(1)


def build_app(tmp_path: Path, **config: Any) -> Flask:
    """An app with the REST API at /api and the dashboard at /dash."""
    number = next(_names)
    app = Flask(f"dashboard_test_{number}", instance_path=str(tmp_path / f"instance{number}"))
    defaults = {"TIERED_STATE_API_PREFIX": "/api", "TIERED_STATE_DASHBOARD_PREFIX": "/dash"}
    app.config.update(TESTING=True, **{**defaults, **config})
    TieredState(app)
    return app


def populate(manager: StateManager) -> None:
    """A small, known data set: users in every status, a subscription, a session."""
    manager.batch_set_state(
        {
            f"user-{n:02d}": {
                "type": "user",
                "name": f"User {n:02d}",
                "data": {
                    "plan": "pro" if n % 3 == 0 else "free",
                    "country": "DE" if n < 5 else "FR",
                },
            }
            for n in range(12)
        }
    )
    for n in range(1, 12):
        manager.update_state(f"user-{n:02d}", None, "activate")
    manager.update_state("user-01", None, "suspend", reason="payment failed", actor="billing")
    manager.update_state("user-02", None, "expire")
    manager.update_state("user-03", {"data": {"plan": "team", "country": "NL"}}, "update")
    manager.register_state("sub-01", "subscription", {"data": {"user": "user-01"}})
    manager.register_state("sess-01", "session", {"data": {"user": "user-03"}})


@pytest.fixture(params=["embedded", SERVICES])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    return services_config(request) if request.param == "services" else {}


@pytest.fixture
def dash_app(backend: dict[str, Any], tmp_path: Path) -> Iterator[Flask]:
    """The app under test, populated, on each backend; closed before the services' cleanup."""
    app = build_app(tmp_path, **backend)
    populate(get_app_state(app).manager)
    yield app
    get_app_state(app).close()
    StateManager.reset_instance()


class LiveServer:
    """An app served on a free loopback port from a thread."""

    def __init__(self, app: Flask) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


class Watched:
    """A page whose console errors, page errors and failed requests are collected."""

    def __init__(self, browser: Any, width: int = 1280) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url}"))

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type}: {message.text}")

    def close(self) -> None:
        self.context.close()

"""With ``CREDIT_CRM_URL`` set, users' suspensions and resumptions reach a CRM (a real
HTTP server of the test) once per event, through the outbox; a CRM that does not answer
leaves failed deliveries that ``flask state events`` lists and a later run delivers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from example_app import create_app
from example_app.crm import CRM_KEY
from flask_tiered_state.domain.dispatcher import EventDispatcher
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import ConfigurationError
from flask_tiered_state.extension import get_app_state
from tests.conftest import free_port

from .conftest import active_user, admin_client, ok


class CRM:
    """A CRM on a loopback port: the requests it received."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], str | None]] = []
        crm = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                crm.received.append((body, self.headers.get("Idempotency-Key")))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/users"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def crm() -> Iterator[CRM]:
    server = CRM()
    yield server
    server.close()


def app_with_crm(backend_config: dict[str, Any], url: str) -> Flask:
    return create_app({**backend_config, "CREDIT_CRM_URL": url})


def dispatch(manager: StateManager) -> Any:
    with EventDispatcher(manager) as dispatcher:
        return dispatcher.run(once=True)


def test_suspensions_and_resumptions_reach_the_crm_once_each(
    backend_config: dict[str, Any], crm: CRM
) -> None:
    app = app_with_crm(backend_config, crm.url)
    try:
        client, manager = admin_client(app), get_app_state(app).manager
        user = active_user(client)
        user_id = user["state_id"]
        for transition, reason in (("suspend", "chargeback"), ("resume", "paid")):
            ok(client.post(f"/api/users/{user_id}/{transition}", json={"reason": reason}))
        assert crm.received == []  # delivered by the dispatcher, not in the request
        report = dispatch(manager)
        assert report.failed == 0 and report.dead == 0
        bodies = [(b["user_id"], b["transition"], b["status"]) for b, _ in crm.received]
        assert bodies == [(user_id, "suspend", "suspended"), (user_id, "resume", "active")]
        assert all(key == body["event_id"] for body, key in crm.received)
        dispatch(manager)  # nothing is sent twice
        assert len(crm.received) == 2
    finally:
        get_app_state(app).close()


def test_a_crm_that_does_not_answer_leaves_failed_deliveries_then_gets_them(
    backend_config: dict[str, Any], crm: CRM
) -> None:
    down = f"http://127.0.0.1:{free_port()}/users"  # nothing listens there
    app = app_with_crm(backend_config, down)
    try:
        client, manager = admin_client(app), get_app_state(app).manager
        user_id = active_user(client)["state_id"]
        ok(client.post(f"/api/users/{user_id}/suspend", json={"reason": "chargeback"}))
        assert dispatch(manager).failed == 1
        listed = app.test_cli_runner().invoke(args=["state", "events", "--status", "failed"])
        assert listed.exit_code == 0, listed.output
        [row] = [line for line in listed.output.splitlines() if CRM_KEY in line]
        assert row.split()[1:3] == ["user_suspended", CRM_KEY] and "failed" in row.split()
        assert "URLError" in row and "Connection refused" in row
    finally:
        get_app_state(app).close()

    # The CRM answers at last (at its new address): the retry, when due, delivers it.
    app = app_with_crm(backend_config, crm.url)
    try:
        manager = get_app_state(app).manager
        assert dispatch(manager).delivered == 0  # not due yet: backoff
        later = time.time() + 3600
        with EventDispatcher(manager, clock=lambda: later) as dispatcher:
            assert dispatcher.run(once=True).delivered == 1
        assert [(b["user_id"], b["transition"]) for b, _ in crm.received] == [(user_id, "suspend")]
    finally:
        get_app_state(app).close()


def test_a_crm_url_that_is_not_http_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"CREDIT_CRM_URL is 'crm\.internal'; expected"):
        create_app({"TIERED_STATE_LOCAL_DIR": str(tmp_path), "CREDIT_CRM_URL": "crm.internal"})

"""50 concurrent requests with one ``Idempotency-Key``, over real HTTP, on PostgreSQL and
Redis: exactly one history row; the others get the stored response or 409; a changed
body gets 422.

Two apps (two managers, each with its own connection pools, as two processes would
have) share the servers and are each served by a threaded werkzeug server; the
requests alternate between them and are released together by a barrier.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from tests.conftest import services_config

from .conftest import AppFactory

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.s3]

REQUESTS = 50
KEY = "0b5e4c1e-7f8a-4d2b-9c61-charge-42"
BODY = {"transition": "update", "data": {"plan": "pro", "paid": 42}, "reason": "charge-42"}


class Served:
    """An app served on a free loopback port by a threaded server in a thread."""

    def __init__(self, app: Flask) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def servers(request: pytest.FixtureRequest, make_app: AppFactory) -> Any:
    config = {"TIERED_STATE_API_PREFIX": "/api", **services_config(request)}
    served = [Served(make_app(**config)) for _ in range(2)]
    yield [s.url for s in served]
    for s in served:
        s.stop()


def post(url: str, body: dict[str, Any], key: str = KEY) -> requests.Response:
    return requests.post(url, json=body, headers={"Idempotency-Key": key}, timeout=60)


def test_fifty_concurrent_requests_with_one_key_apply_once(servers: list[str]) -> None:
    first = servers[0]
    created = requests.post(
        f"{first}/api/states", json={"state_id": "acct-1", "type": "user"}, timeout=30
    )
    assert created.status_code == 201, created.text
    barrier = threading.Barrier(REQUESTS)

    def attempt(number: int) -> requests.Response:
        url = f"{servers[number % len(servers)]}/api/states/acct-1/transitions"
        barrier.wait(timeout=30)
        return post(url, BODY)

    with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
        answers = list(pool.map(attempt, range(REQUESTS)))

    succeeded = [a for a in answers if a.status_code == 200]
    busy = [a for a in answers if a.status_code == 409]
    assert len(succeeded) + len(busy) == REQUESTS, sorted({a.status_code for a in answers})
    for answer in busy:
        assert answer.json()["error"] == "idempotency_key_in_use", answer.text
    applied = [a for a in succeeded if "Idempotent-Replayed" not in a.headers]
    assert len(applied) == 1, f"{len(applied)} requests applied the change"
    assert all(
        a.headers.get("Idempotent-Replayed") == "true" for a in succeeded if a not in applied
    )
    assert {a.content for a in succeeded} == {applied[0].content}
    record = applied[0].json()
    assert record["version"] == 2 and record["data"] == BODY["data"]

    history = requests.get(f"{first}/api/states/acct-1/history", timeout=30).json()["items"]
    assert [(row["transition"], row["reason"]) for row in history] == [
        ("create", None),
        ("update", "charge-42"),
    ]

    # Once the first request ended, every retry -- on either server -- gets its answer.
    for url in servers:
        replay = post(f"{url}/api/states/acct-1/transitions", BODY)
        assert replay.status_code == 200
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.content == applied[0].content

    changed = post(
        f"{servers[1]}/api/states/acct-1/transitions", {**BODY, "data": {"plan": "team"}}
    )
    assert changed.status_code == 422
    assert changed.json()["error"] == "idempotency_key_reused"
    final = requests.get(f"{first}/api/states/acct-1", timeout=30).json()
    assert final["version"] == 2 and final["data"] == BODY["data"]
    again = requests.get(f"{first}/api/states/acct-1/history", timeout=30).json()["items"]
    assert len(again) == 2

"""A handled 5xx (a tier down) is logged on one line with its correlation id and the
driver's text, without a traceback; an unexpected exception keeps its traceback."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.conftest import free_port

from .conftest import AppFactory


def written(records: list[logging.LogRecord]) -> str:
    """The records as a handler writes them (a traceback included)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    return "\n".join(handler.format(r) for r in records)


@pytest.mark.postgres
def test_a_503_is_one_line_with_the_correlation_id(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there: the connection is refused
    app = make_app(
        TIERED_STATE_WARM_URL=f"postgresql+psycopg://postgres@127.0.0.1:{port}/app",
        TIERED_STATE_API_PREFIX="/api",
        TIERED_STATE_ACCESS_CONTROL="allow-all",
    )
    app.config["TESTING"] = False
    caplog.set_level(logging.ERROR)
    response = app.test_client().get("/api/states/alice", headers={"X-Correlation-ID": "req-42"})
    assert response.status_code == 503
    assert response.get_json()["correlation_id"] == "req-42"
    records = [r for r in caplog.records if r.name == "flask_tiered_state.http_errors"]
    assert len(records) == 1
    (record,) = records
    assert record.exc_info is None
    line = written(records)
    assert "\n" not in line
    assert line.startswith(
        "ERROR flask_tiered_state.http_errors GET /api/states/alice answered 503 "
        "tier_unavailable (correlation id req-42): "
    )
    assert f'connection to server at "127.0.0.1", port {port} failed' in line  # the cause


def test_an_unexpected_exception_keeps_its_traceback(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(request: Any, action: str) -> bool:
        raise ZeroDivisionError("a bug")

    app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_ACCESS_CONTROL=hook)
    app.config["TESTING"] = False
    caplog.set_level(logging.ERROR)
    assert app.test_client().get("/api/states").status_code == 500
    text = written(caplog.records)
    assert "Traceback (most recent call last)" in text
    assert "ZeroDivisionError: a bug" in text

"""The dashboard's errors are its own pages, whatever error handlers the host app has."""

from __future__ import annotations

import itertools
from pathlib import Path

from flask import Flask

from flask_tiered_state.errors import TieredStateError
from flask_tiered_state.extension import TieredState, get_app_state
from tests.flask.test_host_app import app_handlers

_names = itertools.count(1)


def host_app(tmp_path: Path, *, handlers_first: bool) -> Flask:
    number = next(_names)
    app = Flask(f"dashboard_host_{number}", instance_path=str(tmp_path / f"host{number}"))
    app.config.update(
        TESTING=True, TIERED_STATE_API_PREFIX="/api", TIERED_STATE_DASHBOARD_PREFIX="/dash"
    )

    def handlers() -> None:
        app_handlers(app)

        @app.errorhandler(TieredStateError)
        def library_error(exc: TieredStateError) -> tuple[str, int]:
            return "app library error", 418

    if handlers_first:
        handlers()
    TieredState(app)
    if not handlers_first:
        handlers()
    return app


def dashboard_page(app: Flask, url: str, status: int, *, method: str = "GET") -> str:
    response = app.test_client().open(url, method=method)
    text = response.get_data(as_text=True)
    assert response.status_code == status, text[:2000]
    assert response.mimetype == "text/html"
    assert '<section class="card error-page">' in text, text[:2000]
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    return text


def test_the_dashboards_errors_are_its_own_pages(tmp_path: Path) -> None:
    for handlers_first in (True, False):
        app = host_app(tmp_path, handlers_first=handlers_first)
        try:
            assert "No state with id" in dashboard_page(app, "/dash/states/nobody", 404)
            assert "Invalid state id" in dashboard_page(app, "/dash/lookup?state_id=bad+id", 400)
            page = dashboard_page(app, "/dash/static/no-such.css", 404)
            assert "404 · not found" in page
            assert "404 · not found" in dashboard_page(app, "/dash/no-such-page", 404)
            assert "404 · not found" in dashboard_page(app, "/dash/states/u1/more", 404)
            page = dashboard_page(app, "/dash/states", 405, method="POST")
            assert "405 · method not allowed" in page
            response = app.test_client().post("/dash/health")
            assert response.headers["Allow"] == "GET, HEAD, OPTIONS"
            # The app's own URLs keep the app's pages.
            assert app.test_client().get("/elsewhere").get_data(as_text=True) == "app 404 page"
        finally:
            get_app_state(app).close()

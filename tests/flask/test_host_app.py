"""A good guest in the host app: the app's error handlers, logger and request hooks are
its own; the extension answers for its blueprints and its exceptions only."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask, abort
from werkzeug.exceptions import HTTPException

from flask_tiered_state.correlation import (
    CorrelationMiddleware,
    get_correlation_id,
    install_correlation_hooks,
)
from flask_tiered_state.errors import InvalidTransitionError, StateNotFoundError, TieredStateError
from flask_tiered_state.extension import TieredState

from .conftest import AppFactory
from .test_errors import assert_error


def app_handlers(app: Flask) -> None:
    """The host app's own error handling: a catch-all for HTTP errors, and 404 and 405."""

    @app.errorhandler(HTTPException)
    def any_http_error(exc: HTTPException) -> tuple[str, int]:
        return f"app handled {exc.code}", exc.code or 500

    @app.errorhandler(404)
    def not_found(exc: HTTPException) -> tuple[str, int]:
        return "app 404 page", 404

    @app.errorhandler(405)
    def wrong_method(exc: HTTPException) -> tuple[str, int]:
        return "app 405 page", 405


def app_routes(app: Flask) -> None:
    @app.get("/teapot")
    def teapot() -> str:
        abort(418)

    @app.get("/api/custom")  # the app's own route under the API prefix
    def custom() -> str:
        abort(418)


def host_apps(make_app: AppFactory) -> list[Flask]:
    """Two apps with the API at /api: one registers its handlers before ``init_app``, one
    after."""
    apps = []
    for before in (True, False):
        app = make_app(init=False, TIERED_STATE_API_PREFIX="/api")
        app_routes(app)
        if before:
            app_handlers(app)
        TieredState(app)
        if not before:
            app_handlers(app)
        apps.append(app)
    return apps


def test_the_apps_handlers_answer_the_apps_routes(make_app: AppFactory) -> None:
    for app in host_apps(make_app):
        client = app.test_client()
        for url in ("/teapot", "/api/custom"):
            response = client.get(url)
            assert (response.status_code, response.get_data(as_text=True)) == (
                418,
                "app handled 418",
            )
        assert client.get("/elsewhere").get_data(as_text=True) == "app 404 page"
        assert client.post("/teapot").get_data(as_text=True) == "app 405 page"


def test_unknown_urls_and_wrong_methods_under_the_prefix_answer_json(
    make_app: AppFactory,
) -> None:
    for app in host_apps(make_app):
        client = app.test_client()
        for url in ("/api/nothing-here", "/api/states/u1/nothing", "/api", "/api/"):
            response = client.get(url, headers={"X-Correlation-ID": "lost-1"})
            body = assert_error(response, 404, "not_found")
            assert body["correlation_id"] == "lost-1"
        assert_error(client.post("/api/nothing-here", json={}), 404, "not_found")
        assert_error(client.options("/api/nothing-here"), 404, "not_found")
        response = client.delete("/api/states")
        body = assert_error(response, 405, "method_not_allowed")
        assert body["details"]["allowed_methods"] == ["GET", "HEAD", "OPTIONS", "POST"]
        assert response.headers["Allow"] == "GET, HEAD, OPTIONS, POST"
        assert_error(client.put("/api/states/u1/history"), 405, "method_not_allowed")
        # A wrong method on the app's own URL under the prefix is a routing error there.
        body = assert_error(client.post("/api/custom"), 405, "method_not_allowed")
        assert body["details"]["allowed_methods"] == ["GET", "HEAD", "OPTIONS"]
        # The API's own answers are unchanged.
        assert_error(client.get("/api/states/nobody"), 404, "not_found")
        assert client.get("/api/states").status_code == 200
        assert client.options("/api/states").headers["Allow"] == "GET, HEAD, OPTIONS, POST"


def test_an_unexpected_failure_of_the_api_is_a_json_500_and_the_apps_stays_the_apps(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_hook(request: Any, action: str) -> bool:
        raise ZeroDivisionError("a bug")

    app = make_app(init=False, TIERED_STATE_API_PREFIX="/api")
    app_routes(app)

    @app.errorhandler(500)
    def app_500(exc: HTTPException) -> tuple[str, int]:
        return "app 500 page", 500

    @app.get("/api/boom")
    def boom() -> str:
        raise ZeroDivisionError("the app's bug")

    TieredState(app, access_control=broken_hook)
    app.config["TESTING"] = False  # answer instead of propagating to the test
    client = app.test_client()
    body = assert_error(client.get("/api/states"), 500, "internal_server_error")
    assert "correlation id" in body["message"] and "a bug" not in body["message"]
    assert any(r.exc_info and str(r.exc_info[1]) == "a bug" for r in caplog.records)
    assert client.get("/api/boom").get_data(as_text=True) == "app 500 page"


def test_init_app_registers_no_app_wide_http_handler(make_app: AppFactory) -> None:
    app = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_DASHBOARD_PREFIX="/dash")
    assert {code: dict(spec) for code, spec in app.error_handler_spec[None].items() if spec} == {
        None: {TieredStateError: app.error_handler_spec[None][None][TieredStateError]}
    }
    off = make_app(TIERED_STATE_API_PREFIX="/api", TIERED_STATE_REGISTER_ERROR_HANDLERS=False)
    assert not any(off.error_handler_spec[None].values())


def test_library_exceptions_of_the_apps_views_answer_json_unless_the_app_handles_them(
    make_app: AppFactory,
) -> None:
    app = make_app(init=False, TIERED_STATE_API_PREFIX="/api")

    @app.errorhandler(TieredStateError)  # registered before init_app: still the app's
    def own(exc: TieredStateError) -> tuple[str, int]:
        return f"app handled {exc.code}", 400

    @app.get("/missing")
    def missing() -> str:
        raise StateNotFoundError("nobody")

    TieredState(app)

    @app.errorhandler(InvalidTransitionError)  # registered after: the app's too
    def own_refusal_after(exc: InvalidTransitionError) -> tuple[str, int]:
        return "app refusal after", 409

    @app.get("/refused")
    def refused_after() -> str:
        raise InvalidTransitionError("u1", "active", "resume", ["suspend"])

    client = app.test_client()
    assert client.get("/missing").get_data(as_text=True) == "app handled not_found"
    assert client.get("/refused").get_data(as_text=True) == "app refusal after"
    # The REST API answers its own errors as JSON whatever the app handles.
    assert_error(client.get("/api/states/nobody"), 404, "not_found")
    assert_error(client.post("/api/states", json={"state_id": "u1"}), 422, "validation_error")

    plain = make_app(TIERED_STATE_API_PREFIX="/api")

    @plain.get("/missing")
    def plain_missing() -> str:
        raise StateNotFoundError("nobody")

    @plain.get("/refused")
    def refused() -> str:
        raise InvalidTransitionError("u1", "active", "resume", ["suspend"])

    @plain.errorhandler(InvalidTransitionError)  # a subclass handler of the app wins
    def own_refusal(exc: InvalidTransitionError) -> tuple[str, int]:
        return "app refusal", 409

    client = plain.test_client()
    body = assert_error(client.get("/missing"), 404, "not_found")
    assert body["details"] == {"state_id": "nobody"}
    assert client.get("/refused").get_data(as_text=True) == "app refusal"


def _logger_setup(logger: logging.Logger) -> list[Any]:
    return [
        logger.level,
        logger.propagate,
        list(logger.filters),
        [(handler, list(handler.filters)) for handler in logger.handlers],
    ]


def test_init_app_leaves_the_apps_logger_alone(make_app: AppFactory) -> None:
    app = make_app(init=False, TIERED_STATE_API_PREFIX="/api")
    handler = logging.NullHandler()
    app.logger.addHandler(handler)
    try:
        before = _logger_setup(app.logger)
        TieredState(app)
        app.test_client().get("/api/states")
        assert _logger_setup(app.logger) == before
    finally:
        app.logger.removeHandler(handler)


def test_the_apps_before_request_functions_keep_their_order_and_see_the_id(
    make_app: AppFactory,
) -> None:
    seen: list[tuple[str, str | None]] = []
    app = make_app(init=False, TIERED_STATE_API_PREFIX="/api")

    @app.before_request
    def first() -> None:
        seen.append(("first", get_correlation_id()))

    TieredState(app)

    @app.before_request
    def second() -> None:
        seen.append(("second", get_correlation_id()))

    @app.get("/work")
    def work() -> str:
        return "ok"

    assert app.before_request_funcs[None] == [first, second]  # the blueprints' own aside
    client = app.test_client()
    for url, status in (("/work", 200), ("/api/states", 200), ("/api/nothing", 404)):
        seen.clear()
        response = client.get(url, headers={"X-Correlation-ID": "order-1"})
        assert response.status_code == status
        assert response.headers["X-Correlation-ID"] == "order-1"
        assert seen == [("first", "order-1"), ("second", "order-1")]


def test_teardown_and_after_request_functions_see_the_id_and_it_ends_with_the_request(
    make_app: AppFactory,
) -> None:
    seen: list[tuple[str, str | None]] = []
    app = make_app(init=False)
    TieredState(app)
    install_correlation_hooks(app)  # once per app, however often asked
    assert isinstance(app.wsgi_app, CorrelationMiddleware)
    assert not isinstance(app.wsgi_app.wsgi_app, CorrelationMiddleware)

    @app.after_request
    def after(response: Any) -> Any:
        seen.append(("after", get_correlation_id()))
        response.headers["X-Correlation-ID"] = "set-by-the-view"  # replaced, not doubled
        return response

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        seen.append(("teardown", get_correlation_id()))

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    app.config["PROPAGATE_EXCEPTIONS"] = False  # answered as a 500, as in production
    client = app.test_client()
    response = client.get("/boom", headers={"X-Request-ID": "job-9"})
    assert response.status_code == 500
    assert response.headers.getlist("X-Correlation-ID") == ["job-9"]
    assert seen == [("after", "job-9"), ("teardown", "job-9")]
    assert get_correlation_id() is None  # reset once the request ended

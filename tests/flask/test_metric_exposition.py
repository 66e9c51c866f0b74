"""The repository metrics of an app, as its ``/metrics`` view would expose them."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from flask_tiered_state import current_state_manager
from flask_tiered_state.observability.metrics import PrometheusMetricsCollector

from .conftest import BOTH_BACKENDS, AppFactory

pytestmark = BOTH_BACKENDS
prometheus_client = pytest.importorskip("prometheus_client")

#: The WARM series of each backend set.
WARM = {
    "embedded": 'state_repository_sqlite_operations_{}_total{{backend="sqlite",tier="warm"}}',
    "services": 'state_repository_postgres_operations_{}_total{{backend="postgresql",tier="warm"}}',
}
HOT = {
    "embedded": 'state_repository_memory_operations_{}_total{{backend="memory",tier="hot"}}',
    "services": 'state_repository_redis_operations_{}_total{{backend="redis",tier="hot"}}',
}


def samples(app: Flask) -> dict[str, float]:
    """The sample lines of the app's collector in the Prometheus text format."""
    with app.app_context():
        collector = current_state_manager.store.metrics_collector
    assert isinstance(collector, PrometheusMetricsCollector)
    text = prometheus_client.generate_latest(collector.registry).decode()
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in text.splitlines())
        if name and not name.startswith("#")
    }


def read_through_every_tier(app: Flask, state_id: str) -> None:
    with app.app_context():
        current_state_manager.register_state(state_id, "user", {"data": {"plan": "free"}})
        current_state_manager.store.cache.clear()
        assert current_state_manager.get_state(state_id) is not None


def test_an_app_exposes_the_document_names_of_its_backends(
    app: Flask, request: pytest.FixtureRequest
) -> None:
    backends = request.node.callspec.params["app"]
    before = samples(app)
    assert before[WARM[backends].format("store")] == 0.0  # there before the first call
    assert before[WARM[backends].format("errors")] == 0.0
    read_through_every_tier(app, "alice")
    after = samples(app)
    assert after[WARM[backends].format("store")] >= 1.0
    assert after[WARM[backends].format("fetch")] >= 1.0
    assert after[HOT[backends].format("fetch")] >= 1.0
    assert after[WARM[backends].format("errors")] == 0.0
    assert after[HOT[backends].format("errors")] == 0.0


def test_two_apps_in_one_process_each_have_their_own_series(
    app: Flask, make_app: AppFactory, request: pytest.FixtureRequest
) -> None:
    backends = request.node.callspec.params["app"]
    other = make_app()  # embedded defaults, its own collector: no duplicate registration
    read_through_every_tier(app, "bob")
    fetched: Any = samples(app)[WARM[backends].format("fetch")]
    assert fetched >= 1.0
    assert samples(other)[WARM["embedded"].format("fetch")] == 0.0
    read_through_every_tier(other, "carol")
    assert samples(other)[WARM["embedded"].format("fetch")] >= 1.0
    assert samples(app)[WARM[backends].format("fetch")] == fetched

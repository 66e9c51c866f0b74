"""Apps with the extension, for pytest-flask's ``app`` / ``client`` fixtures.

``app`` runs on the embedded defaults (no configuration at all besides the API
prefix); a test module that sets ``pytestmark = BOTH_BACKENDS`` runs each test also
on Redis + PostgreSQL + S3 (moto server), chosen by configuration alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import EXTENSION_KEY, AppState, TieredState
from tests.conftest import SERVICES, services_config

#: ``pytestmark = BOTH_BACKENDS`` runs a module's tests on both backend sets.
BOTH_BACKENDS = pytest.mark.parametrize("app", ["embedded", SERVICES], indirect=True)

_names = itertools.count(1)
AppFactory = Callable[..., Flask]


@pytest.fixture(autouse=True)
def _no_default_manager() -> Iterator[None]:
    yield
    StateManager.reset_instance()


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[AppFactory]:
    """``make_app(**config)``: a new app (own instance folder) with the extension.

    ``extension=`` passes a TieredState to use; ``init=False`` leaves it off.
    """
    apps: list[Flask] = []

    def factory(*, extension: TieredState | None = None, init: bool = True, **config: Any) -> Flask:
        number = next(_names)
        app = Flask(f"tiered_state_test_app_{number}", instance_path=str(tmp_path / f"i{number}"))
        app.config.update(TESTING=True, **config)
        if init:
            (extension or TieredState()).init_app(app)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        state = app.extensions.get(EXTENSION_KEY)
        if isinstance(state, AppState):
            state.close()


@pytest.fixture
def app(request: pytest.FixtureRequest) -> Flask:
    """The app under test: embedded defaults, or the services when parametrised so."""
    backend = getattr(request, "param", "embedded")
    config = services_config(request) if backend == "services" else {}
    # Requested after the services, so the app is closed before their fixtures clean up.
    make_app: AppFactory = request.getfixturevalue("make_app")
    return make_app(TIERED_STATE_API_PREFIX="/api", **config)


def register(client: Any, state_id: str, state_type: str = "user", **extra: Any) -> Any:
    """POST /api/states and check it was created."""
    body = {"state_id": state_id, "type": state_type, "data": {"plan": "free"}, **extra}
    response = client.post("/api/states", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()

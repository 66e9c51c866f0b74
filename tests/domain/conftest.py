"""Managers on real stores: embedded (SQLite + memory + filesystem) and servers
(PostgreSQL + Redis + S3 on moto's server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flask_tiered_state.domain.manager import StateManager
from tests.conftest import s3_url

SERVERS = pytest.param("servers", marks=[pytest.mark.redis, pytest.mark.postgres, pytest.mark.s3])


@pytest.fixture(autouse=True)
def _reset_default_manager() -> Iterator[None]:
    """No app's resolver (an earlier test's app may still be alive) and no default."""
    StateManager.set_context_resolver(None)
    StateManager.reset_instance()
    yield
    StateManager.reset_instance()
    StateManager.set_context_resolver(None)


def build_test_store(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, **options: Any
) -> Any:
    """A store on ``kind`` ("embedded" or "servers"); ``options`` go to build_store."""
    from flask_tiered_state.storage.factory import build_store

    if kind == "embedded":
        return build_store(local_dir=tmp_path / "embedded", **options)
    return build_store(
        hot_url=request.getfixturevalue("redis_url"),
        key_prefix=request.getfixturevalue("redis_prefix"),
        engine=request.getfixturevalue("postgres_engine"),
        cold_url=s3_url(
            request.getfixturevalue("s3_bucket"), request.getfixturevalue("s3_endpoint_url")
        ),
        local_dir=tmp_path / "servers",
        **options,
    )


@pytest.fixture(params=["embedded", SERVERS])
def backend(request: pytest.FixtureRequest) -> str:
    """The backend set: "embedded" or "servers"."""
    kind: str = request.param
    return kind


@pytest.fixture
def store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A TieredStore on each backend set."""
    built = build_test_store(backend, request, tmp_path)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def manager(store: Any) -> Iterator[StateManager]:
    """A manager on each backend set."""
    created = StateManager.create(store=store)
    try:
        yield created
    finally:
        created.close()


@pytest.fixture
def embedded_manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateManager]:
    """A manager on the embedded backends only, for behaviour that is not backend-specific."""
    created = StateManager.create(store=build_test_store("embedded", request, tmp_path))
    try:
        yield created
    finally:
        created.close()

"""The ``repository`` fixture: one instance of every tier backend, on real servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flask_tiered_state.storage.base import StateCategory, StateRepository

BACKENDS = ["memory", "redis", "postgresql", "sqlite", "s3", "filesystem"]


def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> StateRepository:
    from flask_tiered_state.storage.memory import MemoryStateRepository

    return MemoryStateRepository(StateCategory.HOT)


def _redis(request: pytest.FixtureRequest, tmp_path: Path) -> StateRepository:
    from flask_tiered_state.storage.redis import RedisStateRepository

    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    return RedisStateRepository(url, key_prefix=prefix)


def _postgresql(request: pytest.FixtureRequest, tmp_path: Path) -> StateRepository:
    from flask_tiered_state.storage.sql import SQLStateRepository

    return SQLStateRepository(request.getfixturevalue("postgres_engine"))


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> StateRepository:
    from flask_tiered_state.storage.sql import SQLStateRepository

    return SQLStateRepository(f"sqlite:///{tmp_path / 'warm.sqlite3'}")


def _s3(request: pytest.FixtureRequest, tmp_path: Path) -> StateRepository:
    from flask_tiered_state.storage.s3 import S3StateRepository

    return S3StateRepository(
        request.getfixturevalue("s3_bucket"),
        prefix="contract/",
        endpoint_url=request.getfixturevalue("s3_endpoint_url"),
        region_name="us-east-1",
    )


def _filesystem(request: pytest.FixtureRequest, tmp_path: Path) -> StateRepository:
    from flask_tiered_state.storage.filesystem import FilesystemStateRepository

    return FilesystemStateRepository(tmp_path / "cold")


FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], StateRepository]] = {
    "memory": _memory,
    "redis": _redis,
    "postgresql": _postgresql,
    "sqlite": _sqlite,
    "s3": _s3,
    "filesystem": _filesystem,
}


@pytest.fixture(params=BACKENDS)
def repository(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    repo = FACTORIES[request.param](request, tmp_path)
    try:
        yield repo
    finally:
        repo.close()


@pytest.fixture
def backend_name(repository: StateRepository) -> str:
    return repository.backend

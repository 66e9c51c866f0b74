"""Which StateManager get_instance() / StateManager() return, and reset_instance()."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateType
from flask_tiered_state.errors import ConfigurationError

from .conftest import build_test_store


def test_embedded_default_is_shared_and_reset_removes_it() -> None:
    first = StateManager()
    assert first is StateManager.get_instance() is StateManager()
    first.register_state("u1", StateType.USER, {"data": {"a": 1}})
    assert StateManager().get_state("u1")["data"] == {"a": 1}  # type: ignore[index]
    temp_dir = first._temp_dir
    assert temp_dir is not None and temp_dir.exists()
    StateManager.reset_instance()
    StateManager.reset_instance()  # safe twice
    assert first.closed and not temp_dir.exists()
    second = StateManager.get_instance()
    assert second is not first and second.get_state("u1") is None


def test_components_build_the_default_once(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    store = build_test_store("embedded", request, tmp_path)
    manager = StateManager.get_instance(store=store)
    assert manager.store is store
    assert StateManager.get_instance(store=store) is manager
    assert StateManager() is manager
    other = build_test_store("embedded", request, tmp_path / "other")
    try:
        with pytest.raises(ConfigurationError, match="reset_instance"):
            StateManager.get_instance(store=other)
        with pytest.raises(ConfigurationError, match="already exists"):
            StateManager(hot_ttl_seconds=5)
    finally:
        other.close()


def test_create_is_independent(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    created = StateManager.create(store=build_test_store("embedded", request, tmp_path))
    try:
        assert StateManager.get_instance() is not created
    finally:
        created.close()
        created.close()  # idempotent


def test_context_resolver_wins(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    app_manager = StateManager.create(store=build_test_store("embedded", request, tmp_path))
    current: list[StateManager | None] = [app_manager]
    StateManager.set_context_resolver(lambda: current[0])
    try:
        assert StateManager.get_instance() is app_manager is StateManager()
        with pytest.raises(ConfigurationError):
            StateManager.get_instance(store=object())
        current[0] = None  # outside an app context
        default = StateManager.get_instance()
        assert default is not app_manager
    finally:
        StateManager.set_context_resolver(None)
        app_manager.close()


def test_first_use_is_thread_safe() -> None:
    seen: list[StateManager] = []
    barrier = threading.Barrier(6)

    def grab() -> None:
        barrier.wait()
        seen.append(StateManager.get_instance())

    threads = [threading.Thread(target=grab) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 6 and len({id(m) for m in seen}) == 1


def test_closed_default_is_replaced() -> None:
    first = StateManager.get_instance()
    first.close()
    assert StateManager.get_instance() is not first


@pytest.mark.parametrize(
    ("options", "fragment"),
    [({"hot_ttl_seconds": 0}, "hot_ttl_seconds"), ({"max_attempts": "3"}, "max_attempts")],
)
def test_bad_options(
    options: dict[str, Any], fragment: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = build_test_store("embedded", request, tmp_path)
    try:
        with pytest.raises(ConfigurationError, match=fragment):
            StateManager.create(store=store, **options)
    finally:
        store.close()


def test_store_without_sql_warm_tier() -> None:
    with pytest.raises(ConfigurationError, match="SQLStateRepository"):
        StateManager.create(store=object())  # type: ignore[arg-type]

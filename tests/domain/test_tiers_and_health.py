"""HOT-home expiry, health with a dead tier, shared metadata, batches of sessions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateType
from flask_tiered_state.errors import StateAlreadyExistsError, StateNotFoundError
from flask_tiered_state.storage.base import StateCategory


def test_history_table_shares_the_store_metadata(store: Any) -> None:
    first = StateManager.create(store=store, close_store=False)
    second = StateManager.create(store=store, close_store=False)
    assert first.history.table is second.history.table
    assert first.history.table.metadata is store.warm.table.metadata
    first.register_state("u1", StateType.USER, {})
    assert second.get_state_history("u1")[0]["transition"] == "create"


def test_batch_of_sessions_lands_in_hot(manager: StateManager) -> None:
    manager.batch_set_state({"s1": {"data": {"a": 1}}, "s2": {}}, state_type=StateType.SESSION)
    hot = manager.get_repositories().hot
    assert hot.fetch("state:s1") is not None and hot.fetch("state:s2") is not None
    assert manager.get_repositories().warm.fetch("state:s1") is None
    assert [h["version"] for h in manager.get_state_history("s2")] == [1]
    updated = manager.batch_set_state({"s1": {"data": {"a": 2}}})
    assert updated["s1"]["version"] == 2


def test_expired_session_is_gone_and_its_id_is_not_reused(
    embedded_manager: StateManager,
) -> None:
    manager = embedded_manager
    manager.register_state_type("otp", home_tier=StateCategory.HOT, hot_ttl_seconds=1)
    manager.register_state("o1", "otp", {"data": {"code": 123}})
    time.sleep(1.2)
    assert manager.get_state("o1") is None
    with pytest.raises(StateAlreadyExistsError, match="was used before"):
        manager.register_state("o1", "otp", {})
    with pytest.raises(StateNotFoundError):
        manager.update_state("o1", {"data": {}})


@pytest.mark.redis
def test_health_degrades_when_redis_dies(
    disposable_redis: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from flask_tiered_state.storage.factory import build_store

    manager = StateManager.create(
        store=build_store(hot_url=disposable_redis.url, local_dir=tmp_path)
    )
    try:
        manager.register_state("u1", StateType.USER, {})
        assert manager.get_health_status()["status"] == "healthy"
        disposable_redis.stop()
        health = manager.get_health_status()
        assert health["status"] == "degraded"
        hot = health["tiers"]["hot"]
        assert (hot["backend"], hot["available"]) == ("redis", False) and hot["failures"] >= 1
        assert health["tiers"]["warm"]["available"] and health["state_count"] == 1
        # WARM-home states keep working with HOT down
        assert manager.update_state("u1", {"data": {"x": 1}})["version"] == 2
        assert manager.get_state("u1")["data"] == {"x": 1}  # type: ignore[index]
    finally:
        manager.close()

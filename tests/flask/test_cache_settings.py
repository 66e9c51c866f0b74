"""CACHE_TTL_SECONDS, INVALIDATION and SQL_USE_COPY reach the store and do what they say:
two apps (two processes' worth of stores) share Redis and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import get_app_state
from tests.conftest import services_config

from .conftest import AppFactory


def manager_of(app: Flask) -> StateManager:
    return get_app_state(app).manager


def plan_of(app: Flask, state_id: str) -> Any:
    record = manager_of(app).get_state(state_id)
    assert record is not None
    return record["data"]["plan"]


def eventually(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_the_cache_settings_reach_the_store(make_app: AppFactory) -> None:
    store = manager_of(make_app(TIERED_STATE_CACHE_TTL_SECONDS=7)).store
    assert store.cache.max_age_seconds == 7
    assert store.invalidation is None  # nothing to publish through without Redis
    assert manager_of(make_app()).store.cache.max_age_seconds == 300
    unbounded = manager_of(make_app(TIERED_STATE_CACHE_TTL_SECONDS=None)).store
    assert unbounded.cache.max_age_seconds is None


@pytest.fixture
def two_apps(
    request: pytest.FixtureRequest, make_app: AppFactory
) -> Callable[..., tuple[Flask, Flask]]:
    """``two_apps(**config)``: two apps on the same Redis prefix and PostgreSQL database,
    as two processes of one deployment would be."""
    shared = services_config(request)

    def build(**config: Any) -> tuple[Flask, Flask]:
        return make_app(**shared, **config), make_app(**shared, **config)

    return build


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.s3
def test_with_invalidation_a_change_in_one_app_reaches_the_others_cache(
    two_apps: Callable[..., tuple[Flask, Flask]],
) -> None:
    reader, writer = two_apps(TIERED_STATE_CACHE_TTL_SECONDS=None)
    assert manager_of(reader).store.invalidation is not None
    manager_of(writer).register_state("u1", "user", {"data": {"plan": "free"}})
    assert plan_of(reader, "u1") == "free"  # now in the reader's cache
    manager_of(writer).update_state("u1", {"data": {"plan": "pro"}}, "update")
    assert eventually(lambda: plan_of(reader, "u1") == "pro")


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.s3
def test_without_invalidation_only_the_cache_ttl_ends_staleness(
    two_apps: Callable[..., tuple[Flask, Flask]],
) -> None:
    reader, writer = two_apps(TIERED_STATE_INVALIDATION=False, TIERED_STATE_CACHE_TTL_SECONDS=1)
    assert manager_of(reader).store.invalidation is None
    manager_of(writer).register_state("u1", "user", {"data": {"plan": "free"}})
    assert plan_of(reader, "u1") == "free"
    manager_of(writer).update_state("u1", {"data": {"plan": "pro"}}, "update")
    assert plan_of(reader, "u1") == "free"  # stale: nobody told the reader
    time.sleep(1.05)
    assert plan_of(reader, "u1") == "pro"  # the entry aged out


def load_tables(engine: sa.Engine) -> int:
    """COPY's temporary load tables in the pooled session (one connection in use)."""
    query = sa.text(
        "SELECT count(*) FROM pg_class "
        "WHERE relnamespace = pg_my_temp_schema() AND relname LIKE '\\_tsl\\_%'"
    )
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


@pytest.mark.postgres
@pytest.mark.parametrize("use_copy", [True, False])
def test_sql_use_copy_chooses_how_batches_are_written(
    make_app: AppFactory, postgres_url: str, postgres_engine: sa.Engine, use_copy: bool
) -> None:
    app = make_app(
        TIERED_STATE_WARM_URL=postgres_url, TIERED_STATE_WARM_OPTIONS={"use_copy": use_copy}
    )
    store = manager_of(app).store
    written = store.batch_set({f"k{i}": {"n": i} for i in range(3)})
    assert sorted(written) == ["k0", "k1", "k2"]
    store.cache.clear()
    assert store.batch_get(["k0", "k1", "k2"]) == {f"k{i}": {"n": i} for i in range(3)}
    assert load_tables(store.warm.engine) == (1 if use_copy else 0)

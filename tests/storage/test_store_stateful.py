"""A stateful Hypothesis test of :class:`TieredStore` against a plain dict.

Random sequences of writes to every home tier, reads, deletes, promotions,
demotions, batch calls and cache evictions must always read back exactly what the
model says, on the embedded backends and on Redis + PostgreSQL + S3.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from flask_tiered_state.storage.base import StateCategory
from flask_tiered_state.storage.factory import build_store
from flask_tiered_state.storage.store import TieredStore
from tests.conftest import s3_url

# Few keys, so that sequences often touch one key in several tiers.
KEYS = st.sampled_from(["k:1", "k:2", "user_1", "user.1"])
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
CATEGORIES = st.sampled_from(list(StateCategory))


class StoreMachine(RuleBasedStateMachine):
    """Drives one store; ``make_store`` is set by the test before it runs."""

    make_store: Callable[[], TieredStore]

    def __init__(self) -> None:
        super().__init__()
        self.store = self.make_store()
        self.model: dict[str, Any] = {}

    def teardown(self) -> None:
        self.store.batch_delete(self.store.keys("*"))
        self.store.close()

    @rule(key=KEYS, value=VALUES, category=CATEGORIES)
    def set(self, key: str, value: Any, category: StateCategory) -> None:
        self.store.set(key, value, category=category)
        self.model[key] = value

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        assert self.store.get(key) == self.model.get(key)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        assert self.store.delete(key) is (key in self.model)
        self.model.pop(key, None)

    @rule(key=KEYS)
    def promote(self, key: str) -> None:
        self.store.promote_to_hot(key)
        assert self.store.get(key) == self.model.get(key)

    @rule(key=KEYS)
    def demote(self, key: str) -> None:
        self.store.demote_to_cold(key)
        assert self.store.get(key) == self.model.get(key)

    @rule(items=st.dictionaries(KEYS, VALUES, max_size=4), category=CATEGORIES)
    def batch_set(self, items: dict[str, Any], category: StateCategory) -> None:
        self.store.batch_set(items, category=category)
        self.model.update(items)

    @rule(keys=st.lists(KEYS, max_size=5))
    def batch_get(self, keys: list[str]) -> None:
        expected = {k: self.model[k] for k in keys if k in self.model}
        assert self.store.batch_get(keys) == expected

    @rule(keys=st.lists(KEYS, max_size=4, unique=True))
    def batch_delete(self, keys: list[str]) -> None:
        assert self.store.batch_delete(keys) == sum(k in self.model for k in keys)
        for key in keys:
            self.model.pop(key, None)

    @precondition(lambda self: bool(self.model))
    @rule()
    def forget_local_cache(self) -> None:
        # As after a restart, or another process's write: only the tiers remain.
        self.store.cache.clear()

    @invariant()
    def keys_match_the_model(self) -> None:
        assert self.store.keys("*") == sorted(self.model)


MACHINE_SETTINGS = settings(
    max_examples=150,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def run_machine(make_store: Callable[[], TieredStore], examples: int) -> None:
    machine = type("BoundStoreMachine", (StoreMachine,), {"make_store": staticmethod(make_store)})
    run_state_machine_as_test(machine, settings=settings(MACHINE_SETTINGS, max_examples=examples))


def test_store_agrees_with_a_dict_on_embedded_backends(tmp_path: Path) -> None:
    counter = iter(range(1_000_000))

    def make_store() -> TieredStore:
        # A tiny cache, so evictions happen all the time.
        return build_store(
            local_dir=tmp_path / f"run{next(counter)}", cache_max_entries=3, metrics=None
        )

    run_machine(make_store, examples=150)


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.s3
def test_store_agrees_with_a_dict_on_redis_postgresql_and_s3(
    redis_url: str,
    redis_prefix: str,
    postgres_engine: Any,
    s3_endpoint_url: str,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    def make_store() -> TieredStore:
        return build_store(
            hot_url=redis_url,
            key_prefix=redis_prefix,
            engine=postgres_engine,
            cold_url=s3_url(s3_bucket, s3_endpoint_url),
            local_dir=tmp_path,
            cache_max_entries=3,
        )

    run_machine(make_store, examples=25)

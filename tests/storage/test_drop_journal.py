"""The journal of drops a process could not do, and its replay by every store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flask_tiered_state.storage.base import (
    StaleCopy,
    StateCategory,
    StateRepositories,
)
from flask_tiered_state.storage.filesystem import FilesystemStateRepository
from flask_tiered_state.storage.memory import MemoryStateRepository
from flask_tiered_state.storage.sql import SQLStateRepository
from flask_tiered_state.storage.store import TieredStore

from .store_support import FaultyRepository, doc

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def warm(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "postgresql":
        repository = SQLStateRepository(request.getfixturevalue("postgres_engine"))
    else:
        repository = SQLStateRepository(f"sqlite:///{tmp_path / 'warm.sqlite3'}")
    yield repository
    repository.close()


def test_record_pending_and_forget_keep_the_latest_fence(warm: Any) -> None:
    journal = warm.journal
    journal.record(HOT, {"a": StaleCopy(3), "b": StaleCopy(2, "c" * 64, 10.0)})
    journal.record(HOT, {"a": StaleCopy(5)})  # a later write of "a"
    journal.record(COLD, {"a": StaleCopy(4)})
    assert journal.pending() == {
        HOT: {"a": StaleCopy(5), "b": StaleCopy(2, "c" * 64, 10.0)},
        COLD: {"a": StaleCopy(4)},
    }
    journal.forget(HOT, {"a": StaleCopy(3), "b": StaleCopy(2, "c" * 64, 10.0)})
    assert journal.pending() == {HOT: {"a": StaleCopy(5)}, COLD: {"a": StaleCopy(4)}}
    assert journal.count() == 2


def test_a_store_replays_the_drops_another_left_behind(warm: Any, tmp_path: Path) -> None:
    """A process that could not reach a tier journals its drops; any store on the same
    WARM database does them (at start, here), with the fences: a newer copy stays."""
    hot = MemoryStateRepository(HOT)
    cold = FilesystemStateRepository(tmp_path / "cold")
    hot.store("stale", doc("old"), version=1)
    hot.store("newer", doc("new"), version=9)
    cold.store("stale", doc("old"), version=1)
    warm.journal.record(HOT, {"stale": StaleCopy(2), "newer": StaleCopy(2)})
    warm.journal.record(COLD, {"stale": StaleCopy(2)})
    store = TieredStore(StateRepositories(hot, warm, cold), drop_replay_interval=None)
    try:
        assert hot.fetch("stale") is None and cold.fetch("stale") is None
        assert hot.fetch("newer") is not None
        assert warm.journal.count() == 0
    finally:
        store.close()


def test_a_drop_that_cannot_be_done_is_journaled_before_the_write_returns(
    warm: Any, tmp_path: Path
) -> None:
    base = StateRepositories(
        MemoryStateRepository(HOT), warm, FilesystemStateRepository(tmp_path / "cold")
    )
    hot, cold = FaultyRepository(base.hot), FaultyRepository(base.cold)
    store = TieredStore(StateRepositories(hot, warm, cold), drop_replay_interval=None)
    try:
        store.set("k", {"v": 1})
        cold.inner.store("k", doc({"v": 0}), version=1)  # an old archived copy
        cold.failing.add("delete_stale")
        store.set("k", {"v": 2}, category=HOT, expected_version=1)  # COLD cannot drop it
        assert "k" in store.coordinator.pending[COLD]
        assert warm.journal.pending() == {COLD: {"k": StaleCopy(2)}}
        cold.failing.clear()
        assert store.coordinator.guard.replay_journal() == 1
        assert cold.inner.fetch("k") is None and warm.journal.count() == 0
    finally:
        store.close()

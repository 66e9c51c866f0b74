"""Invariant 5 (no lost update) and invariant 4 (one history row per success) under threads."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateType
from flask_tiered_state.errors import ConcurrencyError

THREADS = 4
ROUNDS = 8


def _run(target: Any) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)


def test_counter_with_expected_version(manager: StateManager) -> None:
    manager.register_state("c1", StateType.USER, {"data": {"count": 0}})
    errors: list[BaseException] = []

    def work(_: int) -> None:
        done = 0
        while done < ROUNDS:
            record = manager.get_state("c1")
            assert record is not None
            try:
                manager.update_state(
                    "c1",
                    {"data": {"count": record["data"]["count"] + 1}},
                    expected_version=record["version"],
                )
            except ConcurrencyError:
                continue
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return
            done += 1

    _run(work)
    assert errors == []
    final = manager.get_state("c1")
    assert final is not None
    assert final["data"]["count"] == THREADS * ROUNDS
    assert final["version"] == 1 + THREADS * ROUNDS
    history = manager.get_state_history("c1")
    assert [h["version"] for h in history] == list(range(1, final["version"] + 1))


def test_blind_merges_never_lose_an_update(manager: StateManager) -> None:
    manager.register_state("m1", StateType.USER, {"data": {}})
    successes = [0] * THREADS
    last: dict[str, int] = {}
    lock = threading.Lock()

    def work(i: int) -> None:
        for j in range(ROUNDS):
            try:
                manager.update_state("m1", {"data": {f"t{i}": j}}, merge=True)
            except ConcurrencyError:
                continue  # retries exhausted: nothing was written
            with lock:
                successes[i] += 1
                last[f"t{i}"] = j

    _run(work)
    final = manager.get_state("m1")
    assert final is not None
    assert final["data"] == last
    assert final["version"] == 1 + sum(successes)
    assert manager.history.count("m1") == 1 + sum(successes)


def test_a_stale_hot_copy_never_decides_a_version_check(manager: StateManager) -> None:
    """A HOT copy older than the record (another process could not drop it) must not wedge
    the state: a conflict re-reads the home tier, the refusal of a stale expected_version
    names the version at home, and the stale copy is dropped on the way."""
    from flask_tiered_state.json_codec import dumps

    manager.register_state("h1", StateType.USER, {"data": {"n": 0}})
    stale = manager.get_state("h1")
    assert stale is not None
    manager.update_state("h1", {"data": {"n": 1}})
    hot = manager.store.get_repositories().hot
    hot.store("state:h1", dumps(stale), version=1, ttl_seconds=3600)  # an old copy
    manager.store.cache.clear()
    assert manager.get_state("h1") == stale  # readers see the copy first...

    with pytest.raises(ConcurrencyError) as refused:
        manager.update_state("h1", {"data": {"n": 2}}, expected_version=1)
    assert refused.value.actual == 2  # ...but a version check goes to the home tier
    assert "version 2" in str(refused.value)
    assert hot.fetch("state:h1") is None  # and the stale copy is gone
    manager.store.cache.clear()
    hot.store("state:h1", dumps(stale), version=1, ttl_seconds=3600)
    updated = manager.update_state("h1", {"data": {"n": 2}})  # no expected_version: retried
    assert updated["version"] == 3
    assert [h["version"] for h in manager.get_state_history("h1")] == [1, 2, 3]

"""Idempotency keys on every mutation (Stripe's semantics): a repeat replays the stored
result and applies nothing; other parameters are refused; a running first call makes
the repeat wait; a failed call frees its key; keys expire."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from flask_tiered_state.domain.idempotency import fingerprint, idempotent_call
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import (
    ConcurrencyError,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    InvalidRequestError,
    ValidationError,
)

from .conftest import build_test_store


def rows(manager: StateManager, state_id: str) -> list[tuple[int, str]]:
    return [(r["version"], r["transition"]) for r in manager.get_state_history(state_id)]


def test_a_repeat_replays_the_first_result_and_applies_nothing(manager: StateManager) -> None:
    manager.register_state("u1", "user", {"data": {"credit": 0}})
    with idempotent_call() as first:
        record = manager.update_state(
            "u1", {"data": {"credit": 42}}, merge=True, reason="charge-42",
            idempotency_key="charge-42",
        )  # fmt: skip
    manager.update_state("u1", {"data": {"note": "later"}}, merge=True)  # v3 by someone else
    with idempotent_call() as repeat:
        replayed = manager.update_state(
            "u1", {"data": {"credit": 42}}, merge=True, reason="charge-42",
            idempotency_key="charge-42",
        )  # fmt: skip

    assert not first.replayed and repeat.replayed
    assert replayed == record  # the first answer (version 2), not the current state
    assert replayed["version"] == 2
    assert rows(manager, "u1") == [(1, "create"), (2, "update"), (3, "update")]


def test_other_parameters_with_a_used_key_are_refused(manager: StateManager) -> None:
    manager.register_state("u1", "user", {}, idempotency_key="k1")
    with pytest.raises(IdempotencyKeyReusedError) as info:
        manager.register_state("u2", "user", {}, idempotency_key="k1")
    assert info.value.http_status == 422 and info.value.code == "idempotency_key_reused"
    assert "first used for another request" in info.value.message
    with pytest.raises(IdempotencyKeyReusedError):  # another operation, same key
        manager.update_state("u1", None, "suspend", idempotency_key="k1")
    assert manager.get_state("u2") is None
    assert rows(manager, "u1") == [(1, "create")]


def test_every_mutation_takes_a_key(manager: StateManager) -> None:
    def twice(call: Callable[[], Any]) -> Any:
        first = call()
        assert call() == first
        return first

    created = twice(lambda: manager.register_state(state_type="user", idempotency_key="reg"))
    state_id = created["state_id"]  # a generated id, the same on the replay
    twice(lambda: manager.update_state(state_id, {"name": "x"}, idempotency_key="upd"))
    twice(lambda: manager.rollback_state(state_id, 1, idempotency_key="rb"))
    twice(lambda: manager.delete_state(state_id, idempotency_key="del"))
    assert rows(manager, state_id) == [(1, "create"), (2, "update"), (3, "rollback"),
                                       (4, "delete")]  # fmt: skip

    items = {f"b{n}": {"type": "feature", "data": {"n": n}} for n in range(3)}
    assert list(twice(lambda: manager.batch_set_state(items, idempotency_key="bs"))) == list(items)
    changes = {f"b{n}": {"data": {"n": -n}} for n in range(3)}
    twice(lambda: manager.batch_update_state(changes, idempotency_key="bu", chunk_size=1))
    assert twice(lambda: manager.batch_delete_state(list(items), idempotency_key="bd")) == 3
    assert twice(lambda: manager.batch_delete_state(["nobody"], idempotency_key="none")) == 0
    for n in range(3):
        assert rows(manager, f"b{n}") == [(1, "create"), (2, "update"), (3, "delete")]


def test_a_failed_call_frees_its_key_so_a_retry_runs(embedded_manager: StateManager) -> None:
    manager = embedded_manager
    refuse = {"on": True}

    def downstream(record: dict[str, Any]) -> None:
        if refuse["on"] and record["data"].get("credit"):
            raise ValueError("the ledger is closed")

    manager.register_validator("user", downstream)
    manager.register_state("u1", "user", {})
    with pytest.raises(ValidationError):
        manager.update_state("u1", {"data": {"credit": 5}}, idempotency_key="c5")
    refuse["on"] = False
    with idempotent_call() as call:
        manager.update_state("u1", {"data": {"credit": 5}}, idempotency_key="c5")
    assert not call.replayed
    assert rows(manager, "u1") == [(1, "create"), (2, "update")]

    with pytest.raises(ConcurrencyError):
        manager.update_state("u1", {"name": "n"}, expected_version=1, idempotency_key="stale")
    assert manager.update_state(
        "u1", {"name": "n"}, expected_version=2, idempotency_key="stale2"
    )["version"] == 3  # fmt: skip


def test_a_running_key_is_in_use_until_its_lease_runs_out(embedded_manager: StateManager) -> None:
    manager = embedded_manager
    manager.register_state("u1", "user", {})
    parameters = {
        "state_id": "u1", "new_data": None, "transition": "suspend", "expected_version": None,
        "actor": None, "reason": None, "merge": False,
    }  # fmt: skip
    digest = fingerprint("update_state", parameters)
    manager.idempotency.begin("s1", "update_state", digest, lease_seconds=0.5)  # elsewhere
    with pytest.raises(IdempotencyKeyInUseError) as info:
        manager.update_state("u1", None, "suspend", idempotency_key="s1")
    assert info.value.http_status == 409 and info.value.code == "idempotency_key_in_use"
    time.sleep(0.6)  # the first caller died: its lease runs out and this call takes over
    assert manager.update_state("u1", None, "suspend", idempotency_key="s1")["version"] == 2
    assert rows(manager, "u1") == [(1, "create"), (2, "suspend")]


def test_a_call_that_outlived_its_lease_is_rolled_back(embedded_manager: StateManager) -> None:
    """Two calls must never both apply: the one whose lease was taken over loses."""
    manager = embedded_manager
    manager.register_state("u1", "user", {})
    started = threading.Event()
    go_on = threading.Event()

    def slow(record: dict[str, Any]) -> None:
        if record["data"].get("slow"):
            started.set()
            go_on.wait(5)

    manager.register_validator("user", slow)
    manager.idempotency.ttl = 3600
    original = manager.store.call_timeout
    manager.store.call_timeout = None
    errors: list[BaseException] = []

    def first() -> None:
        try:
            manager.update_state("u1", {"data": {"slow": 1}}, idempotency_key="lease")
        except BaseException as exc:
            errors.append(exc)

    try:
        thread = threading.Thread(target=first)
        thread.start()
        assert started.wait(5)
        # its lease (60 s + 5 s) runs out, and another process takes the key over
        table = manager.idempotency.table
        with manager.history.engine.begin() as connection:
            connection.execute(table.update().values(locked_until=0))
        parameters = {
            "state_id": "u1", "new_data": {"data": {"slow": 1}}, "transition": "update",
            "expected_version": None, "actor": None, "reason": None, "merge": False,
        }  # fmt: skip
        other = manager.idempotency.begin(
            "lease", "update_state", fingerprint("update_state", parameters), lease_seconds=60
        )
        go_on.set()
        thread.join(10)
        assert rows(manager, "u1") == [(1, "create")]  # the first call applied nothing
        manager.idempotency.release(other)  # the other process failed in its turn
        second = manager.update_state("u1", {"data": {"slow": 1}}, idempotency_key="lease")
    finally:
        go_on.set()
        manager.store.call_timeout = original
    assert second["version"] == 2
    assert [type(e) for e in errors] == [IdempotencyKeyInUseError]
    assert "taken over by another call" in str(errors[0])
    assert rows(manager, "u1") == [(1, "create"), (2, "update")]


def test_keys_expire_and_are_pruned(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    store = build_test_store("embedded", request, tmp_path)
    manager = StateManager.create(store=store, idempotency_ttl_seconds=0.3)
    try:
        manager.register_state("u1", "user", {}, idempotency_key="k")
        with pytest.raises(IdempotencyKeyReusedError):
            manager.register_state("u2", "user", {}, idempotency_key="k")
        time.sleep(0.35)
        manager.register_state("u2", "user", {}, idempotency_key="k")  # as good as new
        manager.register_state("u3", "user", {}, idempotency_key="k3")
        time.sleep(0.35)
        assert manager.idempotency.prune() == 2
    finally:
        manager.close()


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "a\nb", 42, b"k"])
def test_bad_keys_are_refused_before_anything_runs(
    embedded_manager: StateManager, key: Any
) -> None:
    with pytest.raises(InvalidRequestError, match="1 to 255 printable ASCII"):
        embedded_manager.register_state("u1", "user", {}, idempotency_key=key)
    assert embedded_manager.get_state("u1") is None


def test_a_keyed_batch_update_is_one_transaction(embedded_manager: StateManager) -> None:
    manager = embedded_manager
    manager.batch_set_state({f"f{n}": {"type": "feature"} for n in range(4)})
    manager.update_state("f3", None, "suspend")
    with pytest.raises(Exception, match="f3"):  # f3 cannot be suspended twice
        manager.batch_update_state(
            {f"f{n}": None for n in range(4)}, "suspend", chunk_size=1, idempotency_key="all"
        )
    assert [manager.get_state(f"f{n}")["status"] for n in range(3)] == ["created"] * 3  # type: ignore[index]
    with pytest.raises(InvalidRequestError, match="at most 5000 states"):
        manager.batch_update_state({f"x{n}": None for n in range(5001)}, idempotency_key="big")


@pytest.mark.postgres
def test_concurrent_repeats_apply_once(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    store = build_test_store("servers", request, tmp_path)
    manager = StateManager.create(store=store)
    try:
        manager.register_state("u1", "user", {"data": {"credit": 0}})
        barrier = threading.Barrier(16)

        def charge(_: int) -> tuple[str, Any]:
            barrier.wait()
            try:
                with idempotent_call() as call:
                    record = manager.update_state(
                        "u1", {"data": {"credit": 7}}, merge=True, idempotency_key="charge-7"
                    )
            except IdempotencyKeyInUseError:
                return "in use", None
            return ("replayed" if call.replayed else "applied"), record["version"]

        with ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(charge, range(16)))
        assert [o for o in outcomes if o[0] == "applied"] == [("applied", 2)]
        expected = (("replayed", 2), ("in use", None), ("applied", 2))
        assert all(o in expected for o in outcomes), outcomes
        assert rows(manager, "u1") == [(1, "create"), (2, "update")]
    finally:
        manager.close()

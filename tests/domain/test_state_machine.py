"""A Hypothesis state machine: the manager agrees with a plain in-memory model.

Register, update, each transition, batches of transitions, rollback, delete, promote,
demote and cache eviction run in random orders on the embedded store, for WARM-home types and a
HOT-home session; after every step each state's
status, version, data and history match the model.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from flask_tiered_state.domain.lifecycle import DEFAULT_LIFECYCLE
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateTransition as T
from flask_tiered_state.errors import (
    InvalidRequestError,
    InvalidTransitionError,
    StateAlreadyExistsError,
    StateNotFoundError,
)
from flask_tiered_state.storage.factory import build_store

IDS = st.sampled_from(["a", "b", "s"])
#: "s" is a session: its home is HOT (history still in SQL).
TYPES = {"a": "user", "b": "transaction", "s": "session"}
DATA = st.dictionaries(st.sampled_from(["x", "y"]), st.integers(0, 3), max_size=2)
TABLE: dict[T, tuple[set[str], str | None]] = {
    T.UPDATE: ({"created", "active", "suspended"}, None),
    T.ACTIVATE: ({"created", "suspended"}, "active"),
    T.SUSPEND: ({"created", "active"}, "suspended"),
    T.RESUME: ({"suspended"}, "active"),
    T.EXPIRE: ({"created", "active", "suspended"}, "expired"),
    T.DELETE: ({"created", "active", "suspended", "expired"}, "deleted"),
}


class Model:
    """One state: its versions as (status, data) and its history's transitions."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.versions: list[tuple[str, dict[str, Any]]] = [("created", data)]
        self.transitions = ["create"]

    @property
    def status(self) -> str:
        return self.versions[-1][0]

    @property
    def data(self) -> dict[str, Any]:
        return self.versions[-1][1]

    def record(self, transition: str, status: str, data: dict[str, Any]) -> None:
        self.versions.append((status, data))
        self.transitions.append(transition)


class ManagerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="tiered_state_sm_"))
        self.manager = StateManager.create(store=build_store(local_dir=self.dir))
        self.model: dict[str, Model] = {}

    def teardown(self) -> None:
        self.manager.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(state_id=IDS, data=DATA)
    def register(self, state_id: str, data: dict[str, Any]) -> None:
        try:
            record = self.manager.register_state(state_id, TYPES[state_id], {"data": data})
        except StateAlreadyExistsError:
            assert state_id in self.model
            return
        assert state_id not in self.model
        assert (record["status"], record["version"]) == ("created", 1)
        self.model[state_id] = Model(data)

    def _apply(self, state_id: str, transition: T, data: dict[str, Any] | None) -> None:
        model = self.model.get(state_id)
        try:
            record = self.manager.update_state(
                state_id, None if data is None else {"data": data}, transition
            )
        except StateNotFoundError:
            assert model is None
            return
        except InvalidTransitionError:
            assert model is not None and model.status not in TABLE[transition][0]
            return
        assert model is not None and model.status in TABLE[transition][0]
        status = TABLE[transition][1] or model.status
        model.record(transition.value, status, model.data if data is None else data)
        assert record["status"] == status and record["version"] == len(model.versions)

    @rule(state_id=IDS, data=DATA)
    def update(self, state_id: str, data: dict[str, Any]) -> None:
        self._apply(state_id, T.UPDATE, data)

    @rule(
        state_id=IDS,
        transition=st.sampled_from([T.ACTIVATE, T.SUSPEND, T.RESUME, T.EXPIRE, T.DELETE]),
    )
    def transition(self, state_id: str, transition: T) -> None:
        self._apply(state_id, transition, None)

    @rule(
        state_ids=st.lists(IDS, min_size=1, max_size=3, unique=True),
        transition=st.sampled_from(list(TABLE)),
        data=DATA,
        chunk_size=st.integers(1, 2),
    )
    def batch_transition(
        self, state_ids: list[str], transition: T, data: dict[str, Any], chunk_size: int
    ) -> None:
        changes = {"data": data} if transition is T.UPDATE else None
        allowed = TABLE[transition][0]
        committed, refused = 0, None
        for start in range(0, len(state_ids), chunk_size):
            chunk = state_ids[start : start + chunk_size]
            refused = next(
                (i for i in chunk if i not in self.model or self.model[i].status not in allowed),
                None,
            )
            if refused is not None:
                break
            committed += len(chunk)
        try:
            result = self.manager.batch_update_state(
                dict.fromkeys(state_ids, changes), transition, chunk_size=chunk_size
            )
        except (StateNotFoundError, InvalidTransitionError) as exc:
            assert refused is not None and exc.details["state_id"] == refused
            assert isinstance(exc, StateNotFoundError) == (refused not in self.model)
            assert exc.details["batch_committed"] == committed
        else:
            assert refused is None and list(result) == state_ids
        for state_id in state_ids[:committed]:
            model = self.model[state_id]
            status = TABLE[transition][1] or model.status
            model.record(transition.value, status, model.data if changes is None else data)

    @rule(state_id=IDS)
    def delete(self, state_id: str) -> None:
        model = self.model.get(state_id)
        try:
            self.manager.delete_state(state_id)
        except StateNotFoundError:
            assert model is None
            return
        except InvalidTransitionError:
            assert model is not None and model.status == "deleted"
            return
        assert model is not None
        model.record("delete", "deleted", model.data)

    @rule(state_id=IDS, back=st.integers(1, 4))
    def rollback(self, state_id: str, back: int) -> None:
        model = self.model.get(state_id)
        current = 0 if model is None else len(model.versions)
        to_version = max(1, current - back)
        try:
            record = self.manager.rollback_state(state_id, to_version)
        except StateNotFoundError:
            assert model is None
            return
        except InvalidRequestError:
            assert model is not None and to_version >= current
            return
        except InvalidTransitionError:
            assert model is not None and to_version < current
            target = model.versions[to_version - 1][0]
            assert not DEFAULT_LIFECYCLE.allows_status_change(model.status, target)
            return
        assert model is not None
        status, data = model.versions[to_version - 1]
        assert DEFAULT_LIFECYCLE.allows_status_change(model.status, status)
        model.record("rollback", status, data)
        assert record["version"] == len(model.versions)

    @rule(state_id=IDS, hot=st.booleans())
    def move(self, state_id: str, hot: bool) -> None:
        try:
            if hot:
                self.manager.promote_to_hot(state_id)
            else:
                self.manager.demote_to_cold(state_id)
        except StateNotFoundError:
            assert state_id not in self.model
            return
        assert state_id in self.model

    @rule()
    def evict_cache(self) -> None:
        self.manager.store.cache.clear()

    @invariant()
    def agrees_with_model(self) -> None:
        for state_id, model in self.model.items():
            record = self.manager.get_state(state_id, include_deleted=True)
            assert record is not None
            assert (record["status"], record["version"], record["data"]) == (
                model.status,
                len(model.versions),
                model.data,
            )
            visible = self.manager.get_state(state_id)
            assert (visible is None) == (model.status == "deleted")
            history = self.manager.get_state_history(state_id)
            assert [h["version"] for h in history] == list(range(1, len(model.versions) + 1))
            assert [h["transition"] for h in history] == model.transitions
            assert [h["to_status"] for h in history] == [s for s, _ in model.versions]


ManagerMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_manager_agrees_with_model = ManagerMachine.TestCase

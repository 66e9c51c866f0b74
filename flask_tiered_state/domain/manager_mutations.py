"""Changing one state: register, update (every transition), delete and roll back.

Each change is a read-modify-write: the record is read (from the local cache when it
is there, so a cached record costs no read round trip), the next record is built and
validated, and :class:`~flask_tiered_state.domain.writer.RecordWriter` commits it with
its history row, compare-and-set on the version read. A lost race re-reads bypassing
the cache and tries again, up to the manager's ``max_attempts``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConcurrencyError, InvalidRequestError, StateNotFoundError, VersionNotFoundError
from ..storage.deadlines import within_budget
from .arguments import (
    UPDATE_TRANSITIONS,
    check_actor_reason,
    check_positive_int,
    check_transition,
)
from .manager_base import ManagerBase
from .model import StateTransition, state_key, validate_state_id
from .registry import StateTypeSpec
from .writer import Write

__all__ = ["MutationsMixin"]

#: ``build(current_record, spec) -> new_record`` of one read-modify-write.
_Build = Callable[[dict[str, Any], StateTypeSpec], dict[str, Any]]


class MutationsMixin(ManagerBase):
    """``register_state``, ``update_state``, ``delete_state`` and ``rollback_state``."""

    @within_budget
    def register_state(
        self,
        state_id: str,
        state_type: object,
        initial_data: Mapping[str, Any] | None,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Create a state (CREATE) from ``{"name", "type", "data", "metadata"}``.

        ``name`` defaults to the id. The type's validators run on ``data``.

        :raises StateAlreadyExistsError: the id is taken, or was used by a deleted or
            expired state (ids are never reused).
        """
        started = time.perf_counter()
        validate_state_id(state_id)
        check_actor_reason(actor, reason)
        spec = self.types.get(state_type)
        record = self._records.new_record(state_id, spec, initial_data)
        key = state_key(state_id)
        write = Write(key, spec, StateTransition.CREATE, None, record, 0)
        try:
            self._writer.commit([write], actor=actor, reason=reason)
        except ConcurrencyError:
            raise self._writer.already_exists(state_id, key) from None
        self._committed(write, actor, reason, started)
        return record

    @within_budget
    def update_state(
        self,
        state_id: str,
        new_data: Mapping[str, Any] | None,
        transition: StateTransition | str = StateTransition.UPDATE,
        *,
        expected_version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
        merge: bool = False,
    ) -> dict[str, Any]:
        """Apply ``transition`` to a state, with the changes in ``new_data``.

        ``name``, ``data`` and ``metadata``, when given, replace the record's (with
        ``merge=True``, ``data`` and ``metadata`` are merged key by key instead);
        fields not given are kept. Validators run when ``data`` is given.

        :raises StateNotFoundError: no state has the id.
        :raises InvalidTransitionError: the lifecycle does not allow it from the status.
        :raises ConcurrencyError: ``expected_version`` is not the state's version.
        """
        started = time.perf_counter()
        validate_state_id(state_id)
        step = check_transition(transition, UPDATE_TRANSITIONS, what="transition")
        check_actor_reason(actor, reason)
        if expected_version is not None:
            check_positive_int(expected_version, "expected_version")

        def build(current: dict[str, Any], spec: StateTypeSpec) -> dict[str, Any]:
            return self._records.changed_record(current, spec, step, new_data, merge=merge)

        return self._mutate(state_id, step, build, expected_version, actor, reason, started)

    def delete_state(
        self, state_id: str, *, actor: str | None = None, reason: str | None = None
    ) -> dict[str, Any]:
        """The DELETE transition: returns the tombstone (status ``deleted``)."""
        return self.update_state(state_id, None, StateTransition.DELETE, actor=actor, reason=reason)

    @within_budget
    def rollback_state(
        self,
        state_id: str,
        to_version: int,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Restore ``name, status, data, metadata`` of an earlier version, as a new
        recorded mutation (ROLLBACK) with the next version number.

        Allowed where the lifecycle allows the status change it implies (some
        transition leads from the current status to the restored one); validators run
        on the restored data.
        """
        started = time.perf_counter()
        validate_state_id(state_id)
        check_positive_int(to_version, "to_version")
        check_actor_reason(actor, reason)

        def build(current: dict[str, Any], spec: StateTypeSpec) -> dict[str, Any]:
            if to_version >= current["version"]:
                raise InvalidRequestError(
                    f"Cannot roll {state_id!r} back to version {to_version}: it is at version "
                    f"{current['version']}; to_version must be an earlier version.",
                    details={"state_id": state_id, "to_version": to_version},
                )
            target = self.history.records_at(state_id, [to_version]).get(to_version)
            if target is None:
                raise VersionNotFoundError(state_id, to_version, self.history.versions(state_id))
            return self._records.restored_record(current, spec, target, to_version)

        return self._mutate(state_id, StateTransition.ROLLBACK, build, None, actor, reason, started)

    def _mutate(
        self,
        state_id: str,
        transition: StateTransition,
        build: _Build,
        expected_version: int | None,
        actor: str | None,
        reason: str | None,
        started: float,
    ) -> dict[str, Any]:
        key = state_key(state_id)
        fresh = False
        last_version = 0
        for attempt in range(self._max_attempts):
            current, home_version = self._writer.read(key, fresh=fresh)
            if current is None:
                raise StateNotFoundError(state_id)
            last_version = current["version"]
            if expected_version is not None and current["version"] != expected_version:
                if not fresh:  # the cached copy may be stale: look again before refusing
                    fresh = True
                    continue
                raise ConcurrencyError(state_id, expected_version, current["version"])
            spec = self.types.get(current["type"])
            new = build(current, spec)
            write = Write(key, spec, transition, current, new, home_version)
            try:
                self._writer.commit([write], actor=actor, reason=reason)
            except ConcurrencyError:
                fresh = True
                if expected_version is not None:
                    latest, _ = self._writer.read(key, fresh=True)
                    actual = None if latest is None else latest["version"]
                    raise ConcurrencyError(state_id, expected_version, actual) from None
                time.sleep(random.uniform(0, 0.002 * 2**attempt))
                continue
            self._committed(write, actor, reason, started)
            return new
        latest, _ = self._writer.read(key, fresh=True)
        raise ConcurrencyError(
            state_id, last_version, None if latest is None else latest["version"]
        )

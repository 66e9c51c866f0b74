"""Building new records from a caller's structure: registration and transitions.

Every record the manager writes is built here (single and batch writes, registration,
transitions, rollback), so this is where the data and metadata a write brings are held
to ``max_json_depth`` (``TIERED_STATE_MAX_JSON_DEPTH``): before the schema, the
validators and the encoders, whose recursion a deeper value could exhaust.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidTransitionError
from ..json_codec import DEFAULT_MAX_JSON_DEPTH, check_json_depth, check_max_json_depth
from .arguments import check_name_metadata
from .model import StateTransition, utc_now_iso
from .registry import StateTypeSpec
from .validation import ValidatorRegistry, check_json, parse_structure, run_checks

__all__ = ["RecordBuilder"]


class RecordBuilder:
    """Checks structures, runs validators and lifecycles, and returns the next record.

    :param max_json_depth: the levels of arrays and objects the data and the metadata
        of a record may nest (each counts itself: ``{"a": [1]}`` is 2).
    """

    def __init__(
        self, validators: ValidatorRegistry, *, max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    ) -> None:
        self.validators = validators
        self.max_json_depth = check_max_json_depth(max_json_depth)

    def _check_json(self, value: dict[str, Any], *, state_id: str, field: str) -> None:
        """``value`` (the data or metadata a write brings) is plain JSON, nested at most
        :attr:`max_json_depth` levels.

        :raises JSONTooDeepError: it nests deeper.
        :raises ValidationError: it is not plain JSON.
        """
        check_json_depth(
            value, self.max_json_depth, what=f"the {field} of {state_id!r}", field=field
        )
        check_json(value, state_id=state_id, field=field)

    def _check_data(self, state_id: str, spec: StateTypeSpec, data: dict[str, Any]) -> None:
        """The type's schema, on new data."""
        schema = self.validators.schema(spec.name)
        if schema is not None:
            run_checks((schema,), data, state_id=state_id, state_type=spec.name, what="data")

    def _check_state(self, spec: StateTypeSpec, record: dict[str, Any]) -> None:
        """The type's validators, on the whole proposed record (each gets its own copy,
        so a validator cannot change what is stored)."""
        checks = self.validators.state_checks(spec.name)
        if checks:
            state_id = record["state_id"]
            run_checks(
                checks, copy.deepcopy(record), state_id=state_id, state_type=spec.name,
                what="state",
            )  # fmt: skip

    def new_record(
        self, state_id: str, spec: StateTypeSpec, structure: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """The version-1 record of a registration (status: the lifecycle's initial one)."""
        given = parse_structure(structure, state_id=state_id, state_type=spec.name)
        data = {} if given.data is None else given.data
        metadata = {} if given.metadata is None else given.metadata
        self._check_json(data, state_id=state_id, field="data")
        self._check_json(metadata, state_id=state_id, field="metadata")
        check_name_metadata(given.name, metadata, state_id=state_id)
        self._check_data(state_id, spec, data)
        now = utc_now_iso()
        record = {
            "state_id": state_id,
            "name": state_id if given.name is None else given.name,
            "type": spec.name,
            "status": spec.lifecycle.initial_status.value,
            "data": data,
            "metadata": metadata,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        self._check_state(spec, record)
        return record

    def changed_record(
        self,
        current: dict[str, Any],
        spec: StateTypeSpec,
        transition: StateTransition,
        structure: Mapping[str, Any] | None,
        *,
        merge: bool = False,
    ) -> dict[str, Any]:
        """The record after ``transition`` with the changes in ``structure``.

        :raises InvalidTransitionError: the lifecycle (or a guard) refuses it.
        :raises ValidationError: the structure or the resulting data is invalid.
        """
        state_id = current["state_id"]
        status = spec.lifecycle.target(state_id, current["status"], transition)
        given = parse_structure(structure, state_id=state_id, state_type=spec.name, current=current)
        new = dict(current)
        if given.metadata is not None:
            self._check_json(given.metadata, state_id=state_id, field="metadata")
        merged_metadata = (
            {**current["metadata"], **given.metadata}
            if merge and given.metadata is not None
            else given.metadata
        )
        check_name_metadata(given.name, merged_metadata, state_id=state_id)
        if given.name is not None:
            new["name"] = given.name
        if given.data is not None:
            self._check_json(given.data, state_id=state_id, field="data")
            new["data"] = {**current["data"], **given.data} if merge else given.data
        if merged_metadata is not None:
            new["metadata"] = merged_metadata
        new["status"] = status.value
        new["version"] = current["version"] + 1
        new["updated_at"] = utc_now_iso()
        spec.lifecycle.check_guards(transition, current, new)
        if transition is not StateTransition.DELETE:
            if given.data is not None:
                self._check_data(state_id, spec, new["data"])
            self._check_state(spec, new)
        return new

    def restored_record(
        self,
        current: dict[str, Any],
        spec: StateTypeSpec,
        target: dict[str, Any],
        to_version: int,
    ) -> dict[str, Any]:
        """The record after rolling ``current`` back to ``target`` (version ``to_version``):
        its name, status, data and metadata, with the next version number.

        :raises InvalidTransitionError: no transition leads from the current status to
            the restored one.
        :raises JSONTooDeepError: the restored data or metadata nests deeper than
            :attr:`max_json_depth` (a version recorded under a higher limit).
        """
        state_id, status = current["state_id"], current["status"]
        for field in ("data", "metadata"):
            check_json_depth(
                target[field], self.max_json_depth,
                what=f"the {field} of version {to_version} of {state_id!r}", field=field,
            )  # fmt: skip
        if not spec.lifecycle.allows_status_change(status, target["status"]):
            raise InvalidTransitionError(
                state_id,
                status,
                StateTransition.ROLLBACK.value,
                spec.lifecycle.allowed_transitions(status),
                reason=f"restoring version {to_version} would change the status from "
                f"{status} to {target['status']}, which no transition allows",
            )
        new = {
            **current,
            "name": target["name"],
            "status": target["status"],
            "data": target["data"],
            "metadata": target["metadata"],
            "version": current["version"] + 1,
            "updated_at": utc_now_iso(),
        }
        self._check_data(state_id, spec, new["data"])
        self._check_state(spec, new)
        return new

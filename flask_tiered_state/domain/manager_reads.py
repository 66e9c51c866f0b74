"""Reading states: by id, many ids, searches and pages, key patterns and counts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import InvalidRequestError
from ..storage.base import StateCategory
from ..storage.deadlines import within_budget
from ..storage.keys import validate_pattern
from .manager_base import ManagerBase
from .model import KEY_PREFIX, StateStatus, validate_state_id
from .paging import Page, validate_paging
from .search import COUNT_FIELDS

__all__ = ["ReadsMixin"]

_DELETED = StateStatus.DELETED.value


class ReadsMixin(ManagerBase):
    """``get_state``, ``batch_get_state``, ``search_states``, ``get_states_by_type``,
    ``get_keys_by_pattern`` and ``count_states``."""

    @within_budget
    def get_state(self, state_id: str, *, include_deleted: bool = False) -> dict[str, Any] | None:
        """The record of ``state_id``, or None (also for a deleted state, unless
        ``include_deleted``). The dict is the caller's own copy."""
        validate_state_id(state_id)
        record: dict[str, Any] | None = self.store.get(KEY_PREFIX + state_id)
        if record is None or (record["status"] == _DELETED and not include_deleted):
            return None
        return record

    def batch_get_state(
        self, state_ids: Iterable[str], *, include_deleted: bool = False
    ) -> dict[str, dict[str, Any]]:
        """The records of the ids that exist (one round trip per tier per chunk)."""
        ids = self._ids(state_ids)
        found = self.store.batch_get([KEY_PREFIX + i for i in ids])
        cut = len(KEY_PREFIX)
        return {
            key[cut:]: record
            for key, record in found.items()
            if record is not None and (include_deleted or record["status"] != _DELETED)
        }

    def search_states(
        self,
        state_type: object = None,
        filters: Mapping[str, Any] | None = None,
        *,
        page: int = 1,
        per_page: int = 50,
    ) -> Page[dict[str, Any]]:
        """States whose fields equal ``filters`` (dotted paths, AND), newest first.

        Runs in the WARM database; see :mod:`flask_tiered_state.domain.search` for the
        paths allowed and what is covered.
        """
        page, per_page = validate_paging(page, per_page)
        type_name = None
        if state_type is not None:
            spec = self.types.get(state_type)
            if spec.home_tier is not StateCategory.WARM:
                raise InvalidRequestError(
                    f"States of type {spec.name!r} live in the {spec.home_tier.value} tier and "
                    "are not searchable; search covers types whose home tier is warm. Read "
                    "them by id with get_state.",
                    details={"state_type": spec.name, "home_tier": spec.home_tier.value},
                )
            type_name = spec.name
        return self._search.search(type_name, filters, page=page, per_page=per_page)

    def get_states_by_type(
        self, state_type: object, *, page: int = 1, per_page: int = 50
    ) -> Page[dict[str, Any]]:
        """The states of one type (not deleted), newest first."""
        if state_type is None:
            raise InvalidRequestError("get_states_by_type needs a state type, not None.")
        return self.search_states(state_type, None, page=page, per_page=per_page)

    def get_keys_by_pattern(self, pattern: str) -> list[str]:
        """The ids of stored states (tombstones included) matching a glob of ``*`` and
        ``?`` over state ids, sorted."""
        validate_pattern(pattern)
        cut = len(KEY_PREFIX)
        return [key[cut:] for key in self.store.keys(KEY_PREFIX + pattern)]

    def count_states(
        self, *, by: Sequence[str] | str = ("type", "status"), include_deleted: bool = False
    ) -> dict[str, Any]:
        """How many states there are of each type and status, in one SQL query.

        Counts what searches cover: the states of types whose home tier is WARM, held in
        the WARM tier (not sessions, not archived states), without deleted ones unless
        ``include_deleted``. Groups without states are left out.

        :param by: the fields to group by, outermost first: ``("type", "status")``,
            ``("status", "type")``, ``("type",)`` or ``("status",)``.
        :returns: with two fields, nested dicts such as
            ``{"user": {"active": 12, "created": 3}, "feature": {"active": 5}}``; with
            one, ``{"user": 15, "feature": 5}``.
        :raises InvalidRequestError: ``by`` names another field, or one twice.
        """
        fields = _check_group_fields(by)
        if type(include_deleted) is not bool:
            raise InvalidRequestError(
                f"include_deleted must be True or False, not {include_deleted!r}.",
                details={"include_deleted": repr(include_deleted)},
            )
        warm = [
            name
            for name in self.types.names()
            if self.types.get(name).home_tier is StateCategory.WARM
        ]
        counts: dict[str, Any] = {}
        if not warm:
            return counts
        for *keys, count in self._search.counts(fields, warm, include_deleted=include_deleted):
            node = counts
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = count
        return counts


def _check_group_fields(by: object) -> tuple[str, ...]:
    fields = (by,) if isinstance(by, str) else by
    allowed = ", ".join(repr(f) for f in COUNT_FIELDS)
    if (
        not isinstance(fields, (tuple, list))
        or not 1 <= len(fields) <= len(COUNT_FIELDS)
        or any(f not in COUNT_FIELDS for f in fields)
        or len(set(fields)) != len(fields)
    ):
        raise InvalidRequestError(
            f"Invalid by={by!r}: count_states groups by {allowed}, or both (each at most "
            "once), e.g. by=('type', 'status').",
            details={"by": repr(by), "allowed": list(COUNT_FIELDS)},
        )
    return tuple(fields)

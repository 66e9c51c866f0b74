"""Changing many states at once: upserts, one transition for many states, deletes."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InvalidRequestError, TieredStateError, ValidationError
from .arguments import UPDATE_TRANSITIONS, check_actor_reason, check_positive_int, check_transition
from .manager_base import ManagerBase
from .model import StateTransition, validate_state_id
from .validation import STRUCTURE_FIELDS

__all__ = ["DEFAULT_CHUNK_SIZE", "MAX_CHUNK_SIZE", "BatchesMixin"]

#: States per transaction of :meth:`BatchesMixin.batch_update_state`.
DEFAULT_CHUNK_SIZE = 500
MAX_CHUNK_SIZE = 5000


class BatchesMixin(ManagerBase):
    """``batch_set_state``, ``batch_update_state`` and ``batch_delete_state``."""

    def batch_set_state(
        self,
        items: Mapping[str, Mapping[str, Any]],
        *,
        state_type: object = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Upsert many states in one transaction: an absent id is registered (CREATE), an
        existing one updated (UPDATE, replacing the fields given). Each item is a state
        structure; its ``type`` (or ``state_type``) is required for new ids. Every item is
        validated before anything is written; all are written, with their history rows,
        or none."""
        started = time.perf_counter()
        check_actor_reason(actor, reason)
        writes = self._batch.upsert(
            items, state_type, max_attempts=self._max_attempts, actor=actor, reason=reason
        )
        for write in writes:
            self._committed(write, actor, reason, started)
        return {w.new["state_id"]: w.new for w in writes}

    def batch_update_state(
        self,
        items: Mapping[str, Mapping[str, Any] | None],
        transition: StateTransition | str = StateTransition.UPDATE,
        *,
        actor: str | None = None,
        reason: str | None = None,
        merge: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> dict[str, dict[str, Any]]:
        """Apply the same ``transition`` to many existing states, each with its changes:
        ``items`` maps state ids to what :meth:`update_state` takes as ``new_data``
        (a state structure, or None for no change of fields).

        The states go in chunks of ``chunk_size``, each in one store transaction: the
        chunk's records are read with one round trip per tier (none for records in the
        local cache), every item is checked -- lifecycle, guards and validators --
        before anything of the chunk is written, then the records are written
        (compare-and-set on the versions read) with one history row each. A chunk is
        written completely or not at all; a chunk that loses a race with another writer
        is read again and retried. Signals and callbacks follow each chunk's commit, in
        the order of ``items``.

        Refusals raise what :meth:`update_state` raises, naming the state:
        :class:`~flask_tiered_state.errors.StateNotFoundError`,
        :class:`~flask_tiered_state.errors.InvalidTransitionError`,
        :class:`~flask_tiered_state.errors.ValidationError`,
        :class:`~flask_tiered_state.errors.ConcurrencyError`. Nothing of the failing
        chunk is written, while earlier chunks stay committed: the error's
        ``details["batch_committed"]`` counts the items committed before it (always the
        first ones of ``items``). The ids and the shape of every item are checked before
        the first chunk.

        :param merge: merge ``data`` and ``metadata`` key by key, as in
            :meth:`update_state`.
        :param chunk_size: states per transaction (1 to 5,000).
        :returns: the new records, by state id, in the order of ``items``.
        """
        step = check_transition(transition, UPDATE_TRANSITIONS, what="transition")
        check_actor_reason(actor, reason)
        check_positive_int(chunk_size, "chunk_size", maximum=MAX_CHUNK_SIZE)
        if type(merge) is not bool:
            raise InvalidRequestError(
                f"merge must be True or False, not {merge!r}.", details={"merge": repr(merge)}
            )
        _check_update_items(items)
        done: dict[str, dict[str, Any]] = {}
        started = time.perf_counter()
        chunks = self._batch.update(
            items,
            step,
            merge=merge,
            chunk_size=chunk_size,
            max_attempts=self._max_attempts,
            actor=actor,
            reason=reason,
        )
        try:
            for writes in chunks:
                for write in writes:
                    self._committed(write, actor, reason, started)
                    done[write.new["state_id"]] = write.new
                started = time.perf_counter()
        except TieredStateError as exc:
            exc.details.setdefault("batch_committed", len(done))
            raise
        return done

    def batch_delete_state(
        self, state_ids: Iterable[str], *, actor: str | None = None, reason: str | None = None
    ) -> int:
        """Delete (DELETE transition, tombstones) the live states among ``state_ids`` in
        one transaction; missing and already deleted ids are skipped. Returns how many
        were deleted."""
        started = time.perf_counter()
        check_actor_reason(actor, reason)
        writes = self._batch.delete(
            self._ids(state_ids), max_attempts=self._max_attempts, actor=actor, reason=reason
        )
        for write in writes:
            self._committed(write, actor, reason, started)
        return len(writes)


def _check_update_items(items: object) -> None:
    """Ids and item shapes, before anything is read or written."""
    if not isinstance(items, Mapping):
        raise InvalidRequestError(
            "batch_update_state takes a mapping of state id to the changes (a state "
            f"structure, or None), not {type(items).__name__}.",
            details={"items": type(items).__name__},
        )
    for state_id, changes in items.items():
        validate_state_id(state_id)
        if changes is not None and not isinstance(changes, Mapping):
            raise ValidationError(
                f"The state structure for {state_id!r} must be a mapping with the keys "
                f"{', '.join(STRUCTURE_FIELDS)}, or None, not {type(changes).__name__}.",
                {"_schema": [f"Expected a mapping, got {type(changes).__name__}."]},
            )

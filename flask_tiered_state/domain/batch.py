"""Batch mutations: many records and their history rows in one transaction.

Upserts and deletes (:meth:`BatchWriter.upsert`, :meth:`BatchWriter.delete`) read the
tiers directly, a chunked round trip per tier: the history tells which ids were ever
registered (new ids need no read at all), the WARM tier is read first, then HOT and
COLD for what is still missing. Every item is built and validated before anything is
written; then all records and history rows commit in one store transaction, or none
do.

Updates (:meth:`BatchWriter.update`) go chunk by chunk, one store transaction each:
the chunk's records are read like ``batch_get`` (cached records cost nothing, the
rest one ``fetch_many`` per tier), every item is built and validated, then the records
are written compare-and-set on the versions read and the history rows inserted with
one multi-row statement. A lost race re-reads the chunk past the cache and retries it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import ConcurrencyError, InvalidRequestError, StateNotFoundError, ValidationError
from ..json_codec import loads
from ..storage.base import StateCategory
from .model import KEY_PREFIX, StateTransition, state_key, validate_state_id
from .records import RecordBuilder
from .registry import StateTypeSpec
from .writer import Completion, Current, RecordWriter, Write

__all__ = ["BatchWriter"]

_READ_ORDER = (StateCategory.WARM, StateCategory.HOT, StateCategory.COLD)


class BatchWriter:
    """Builds and commits batches of writes."""

    def __init__(self, writer: RecordWriter, records: RecordBuilder) -> None:
        self.writer = writer
        self.records = records

    def read_many(
        self, state_ids: Sequence[str], *, skip_vanished: bool = False
    ) -> dict[str, Current]:
        """``{state_id: Current(record, stored form, storage version of the copy read)}``
        for the ids that have a record (WARM first, then HOT, then COLD).

        :raises StateAlreadyExistsError: an id has history but no record anywhere (it
            expired or was removed; ids are never reused), unless ``skip_vanished``.
        """
        known = self.writer.history.existing_ids(state_ids)
        repositories = self.writer.store.get_repositories()
        found: dict[str, tuple[dict[str, Any], int]] = {}
        missing = [i for i in state_ids if i in known]
        for category in _READ_ORDER:
            if not missing:
                break
            entries = repositories.by_category(category).fetch_many([state_key(i) for i in missing])
            for state_id in missing:
                entry = entries.get(state_key(state_id))
                if entry is not None:
                    found[state_id] = (loads(entry.value), entry.metadata.version)
            missing = [i for i in missing if i not in found]
        if missing and not skip_vanished:
            raise self.writer.already_exists(missing[0], state_key(missing[0]))
        return self.writer.currents(found)

    def _commit(
        self,
        plan: Callable[[], list[Write]],
        *,
        max_attempts: int,
        actor: str | None,
        reason: str | None,
        completion: Completion | None = None,
    ) -> list[Write]:
        """Build with ``plan()`` and commit, re-reading and retrying after lost races."""
        for attempt in range(max_attempts):
            writes = plan()
            if not writes:
                return writes
            try:
                self.writer.commit(writes, actor=actor, reason=reason, completion=completion)
            except ConcurrencyError:  # HistoryConflict included: a racing registration
                if attempt + 1 == max_attempts:
                    raise
                time.sleep(random.uniform(0, 0.002 * 2**attempt))
                continue
            return writes
        raise AssertionError("unreachable")  # pragma: no cover

    def upsert(
        self,
        items: Mapping[str, Mapping[str, Any]],
        state_type: object,
        *,
        max_attempts: int,
        actor: str | None,
        reason: str | None,
        completion: Completion | None = None,
        check: Callable[[Sequence[Write]], None] | None = None,
    ) -> list[Write]:
        """Register the absent ids and update the existing ones; ``check(writes)`` may
        refuse the planned writes before anything is written (the quotas)."""
        if not isinstance(items, Mapping):
            raise InvalidRequestError(
                f"batch_set_state takes a mapping of state id to state structure, not "
                f"{type(items).__name__}."
            )
        ids = [validate_state_id(i) for i in items]
        default_spec = None if state_type is None else self.writer.types.get(state_type)

        def plan() -> list[Write]:
            current = self.read_many(ids)
            writes: list[Write] = []
            for state_id in ids:
                structure = items[state_id]
                key = state_key(state_id)
                if state_id in current:
                    record, stored, version = current[state_id]
                    spec = self.writer.types.get(record["type"])
                    self._same_type(state_id, default_spec, spec)
                    new = self.records.changed_record(
                        record, spec, StateTransition.UPDATE, structure
                    )
                    writes.append(
                        Write(
                            key, spec, StateTransition.UPDATE, record, new, version,
                            stored_old=stored,
                        )
                    )  # fmt: skip
                else:
                    spec = self._type_of(state_id, structure, default_spec)
                    new = self.records.new_record(state_id, spec, structure)
                    writes.append(Write(key, spec, StateTransition.CREATE, None, new, 0))
            if check is not None:
                check(writes)
            return writes

        return self._commit(
            plan, max_attempts=max_attempts, actor=actor, reason=reason, completion=completion
        )

    def update(
        self,
        items: Mapping[str, Mapping[str, Any] | None],
        transition: StateTransition,
        *,
        merge: bool,
        chunk_size: int,
        max_attempts: int,
        actor: str | None,
        reason: str | None,
        completion: Completion | None = None,
    ) -> Iterator[list[Write]]:
        """Apply ``transition`` with each item's changes, committing chunk by chunk; yields
        each chunk's writes once committed (deliver their events before asking for more).

        :raises StateNotFoundError: an id of the chunk has no record; nothing of the
            chunk is written.
        :raises ConcurrencyError: the chunk lost ``max_attempts`` races.
        """
        ids = list(items)
        for start in range(0, len(ids), chunk_size):
            chunk = ids[start : start + chunk_size]
            keys = [state_key(i) for i in chunk]
            fresh = False

            def plan(chunk: list[str] = chunk, keys: list[str] = keys) -> list[Write]:
                nonlocal fresh
                if fresh:  # after a lost race: cached copies may be stale
                    self.writer.store.cache.invalidate_many(keys)
                fresh = True
                found = self.writer.store.batch.batch_get(keys)
                read: dict[str, tuple[dict[str, Any], int]] = {}
                for state_id, key in zip(chunk, keys, strict=True):
                    entry = found.get(key)
                    if entry is not None:
                        read[state_id] = (loads(entry.value), entry.metadata.version)
                current = self.writer.currents(read)
                writes: list[Write] = []
                for state_id in chunk:  # refusals name the first refused id, in order
                    if state_id not in current:
                        raise StateNotFoundError(state_id)
                    record, stored, version = current[state_id]
                    spec = self.writer.types.get(record["type"])
                    new = self.records.changed_record(
                        record, spec, transition, items[state_id], merge=merge
                    )
                    writes.append(
                        Write(
                            state_key(state_id), spec, transition, record, new, version,
                            stored_old=stored,
                        )
                    )  # fmt: skip
                return writes

            try:
                writes = self._commit(
                    plan, max_attempts=max_attempts, actor=actor, reason=reason,
                    completion=completion,
                )  # fmt: skip
            except ConcurrencyError as exc:  # name the state, as update_state does
                key = str(exc.key)
                state_id = key[len(KEY_PREFIX) :] if key.startswith(KEY_PREFIX) else key
                raise ConcurrencyError(state_id, exc.expected, exc.actual) from None
            yield writes

    def delete(
        self,
        state_ids: Sequence[str],
        *,
        max_attempts: int,
        actor: str | None,
        reason: str | None,
        completion: Completion | None = None,
    ) -> list[Write]:
        """Tombstone the live states among ``state_ids``."""

        def plan() -> list[Write]:
            writes: list[Write] = []
            for state_id, (record, stored, version) in self.read_many(
                state_ids, skip_vanished=True
            ).items():
                if record["status"] == "deleted":
                    continue
                spec = self.writer.types.get(record["type"])
                new = self.records.changed_record(record, spec, StateTransition.DELETE, None)
                writes.append(
                    Write(
                        state_key(state_id), spec, StateTransition.DELETE, record, new, version,
                        stored_old=stored,
                    )
                )  # fmt: skip
            return writes

        return self._commit(
            plan, max_attempts=max_attempts, actor=actor, reason=reason, completion=completion
        )

    @staticmethod
    def _same_type(state_id: str, expected: StateTypeSpec | None, actual: StateTypeSpec) -> None:
        if expected is not None and expected.name != actual.name:
            raise ValidationError(
                f"State {state_id!r} is of type {actual.name!r}, not {expected.name!r}.",
                {"type": [f"The state is of type {actual.name!r}."]},
            )

    def _type_of(
        self, state_id: str, structure: object, default: StateTypeSpec | None
    ) -> StateTypeSpec:
        given = structure.get("type") if isinstance(structure, Mapping) else None
        if given is not None:
            return self.writer.types.get(given)
        if default is None:
            raise ValidationError(
                f"Item {state_id!r} is a new state and names no type; give it a 'type' or "
                "pass state_type= to batch_set_state.",
                {"type": ["Required for new states."]},
            )
        return default

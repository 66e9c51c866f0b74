"""The write path: read-modify-write of records with compare-and-set and history.

Every mutation of one or more records runs in ONE store transaction: the records
are written with ``expected_version`` (compare-and-set on the home tier) and their
history rows are inserted on the transaction's SQL connection. For WARM-home types
both are statements of the same SQL transaction; for HOT-home types the store
applies the HOT write just before the SQL commit, and a failure there rolls the
history back (and a failed commit undoes the HOT write). So a mutation either
commits with exactly one history row or leaves nothing behind (invariant 4), and
two writers racing on one version cannot both commit (invariant 5).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa

from ..errors import ConcurrencyError, InvalidStateTypeError, StateAlreadyExistsError
from ..json_codec import loads
from ..storage.base import StateCategory, StoredValue
from ..storage.transaction import Resolve, TransactionWrite, write_with_row
from .audit import HistorySealer
from .context import get_correlation_id
from .encryption import RecordCipher
from .history import HistoryRepository
from .model import StateTransition
from .outbox import Outbox
from .registry import StateTypeSpec, TypeRegistry

if TYPE_CHECKING:
    from ..storage.store import TieredStore

__all__ = ["Completion", "Current", "HistoryConflict", "RecordWriter", "Write"]

#: The most deliveries (asynchronous callbacks of one event) a change writes in its one
#: statement; more take the transaction (a bounded statement, and few cached shapes).
MAX_SINGLE_DELIVERIES = 16

#: ``completion(connection, writes)``: more of the mutation, on its transaction's
#: connection (storing an idempotency key's result).
Completion = Callable[[sa.Connection, Sequence["Write"]], None]


@dataclass(slots=True)
class Write:
    """One record to write: ``new`` replaces ``old`` where the home tier is at
    ``expected_version`` (0: the key must be absent from the home tier)."""

    key: str
    spec: StateTypeSpec
    transition: StateTransition
    old: dict[str, Any] | None
    new: dict[str, Any]
    expected_version: int
    #: Identifies the write: in its history row, and in the event it delivers.
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: ``old`` as stored (its encrypted fields sealed), when it differs from ``old``.
    stored_old: dict[str, Any] | None = None
    #: ``new`` as stored: set by :meth:`RecordWriter.commit` (see :mod:`.encryption`).
    stored_new: dict[str, Any] | None = None

    @property
    def old_as_stored(self) -> dict[str, Any] | None:
        return self.old if self.stored_old is None else self.stored_old

    @property
    def new_as_stored(self) -> dict[str, Any]:
        return self.new if self.stored_new is None else self.stored_new


class Current(NamedTuple):
    """A record read for writing: as the caller sees it, as stored, and the storage
    version to expect."""

    record: dict[str, Any]
    stored: dict[str, Any]
    version: int


class HistoryConflict(ConcurrencyError):
    """A history row for the same (state_id, version) exists: another writer won, or
    (for version 1) the id was registered before."""


class RecordWriter:
    """Reads records for writing and commits writes with their history rows."""

    def __init__(
        self,
        store: TieredStore,
        history: HistoryRepository,
        types: TypeRegistry,
        *,
        default_hot_ttl_seconds: int,
        outbox: Outbox | None = None,
        cipher: RecordCipher | None = None,
        sealer: HistorySealer | None = None,
    ) -> None:
        self.store = store
        self.history = history
        self.types = types
        self.outbox = outbox
        #: Seals records for storage and opens stored ones.
        self.cipher = cipher or RecordCipher(types, None)
        #: Seals the history rows (see :mod:`.audit`); None: rows are written unsealed.
        self.sealer = sealer
        self.default_hot_ttl_seconds = default_hot_ttl_seconds

    def read(self, key: str, *, fresh: bool = False) -> Current | None:
        """The current record under ``key`` and the storage version to expect when writing it.

        The store checks ``expected_version`` in the home tier, or, while the key is absent
        there, against the newest copy another tier holds (an archived record moving
        home), so the version of whichever copy was read is the one to expect. A cached or
        HOT copy is fast but may be stale; with ``fresh`` the record is read from its home
        tier itself (after a conflict, and before refusing an ``expected_version``), and
        the stale copies found on the way are dropped.
        """
        entry = self.store.get_entry(key)
        if entry is None and not fresh:
            return None
        if fresh:
            home = self._home_of(entry)
            entry = self.store.coordinator.read_home(key, home)
            if entry is None:
                return None
        assert entry is not None
        return self.current(loads(entry.value), entry.metadata.version)

    def current(self, stored: dict[str, Any], version: int) -> Current:
        """A stored record read at storage ``version``, opened."""
        record = self.cipher.open(stored)
        assert record is not None
        return Current(record, stored, version)

    def currents(self, found: dict[str, tuple[dict[str, Any], int]]) -> dict[str, Current]:
        """:meth:`current` of many ``{id: (stored record, version)}``, with one key lookup."""
        ids = list(found)
        opened = self.cipher.open_many([found[i][0] for i in ids])
        return {i: Current(r, found[i][0], found[i][1]) for i, r in zip(ids, opened, strict=True)}

    def _home_of(self, entry: StoredValue | None) -> StateCategory:
        """The home tier of the record a (possibly stale) copy shows: its type's."""
        if entry is None:
            return StateCategory.WARM  # unknown: the store looks in every other tier too
        type_name = loads(entry.value).get("type")
        try:
            return self.types.get(type_name).home_tier
        except InvalidStateTypeError:
            return entry.metadata.category

    def ttl_for(self, spec: StateTypeSpec) -> int | None:
        if spec.home_tier is not StateCategory.HOT:
            return None
        return spec.hot_ttl_seconds or self.default_hot_ttl_seconds

    def commit(
        self,
        writes: Sequence[Write],
        *,
        actor: str | None,
        reason: str | None,
        completion: Completion | None = None,
    ) -> None:
        """Write every record, its history row and the outbox's deliveries of its event
        (one per asynchronous callback) in one transaction; ``completion`` runs in it too.

        :raises ConcurrencyError: a home tier was not at the expected version.
        :raises HistoryConflict: a history row of the same version exists.
        """
        correlation_id = get_correlation_id()
        key_rows = self._seal(writes)
        rows = [
            HistoryRepository.row(
                transition=w.transition.value,
                old=w.old_as_stored,
                new=w.new_as_stored,
                actor=actor,
                reason=reason,
                correlation_id=correlation_id,
                event_id=w.event_id,
            )
            for w in writes
        ]
        if self.sealer is not None:
            for w, row in zip(writes, rows, strict=True):
                row["seal"] = self.sealer.seal(row, old=w.old_as_stored, new=w.new_as_stored)
        deliveries = (
            []
            if self.outbox is None
            else self.outbox.rows_for(
                (w.event_id, w.spec.name, w.new, w.transition) for w in writes
            )
        )
        resolve = self._resolver(writes[0])
        single = (
            len(writes) == 1 and len(deliveries) <= MAX_SINGLE_DELIVERIES and completion is None
        )
        single = single and not key_rows
        if single and self._commit_single(writes[0], rows[0], deliveries, resolve):
            return
        try:
            with self.store.transaction(resolve=resolve) as txn:
                if key_rows:  # new states' data keys commit with them, or not at all
                    assert self.cipher.data_keys is not None
                    self.cipher.data_keys.insert(txn.connection, key_rows)
                txn.set_many(
                    [
                        TransactionWrite(
                            w.key,
                            w.new_as_stored,
                            category=w.spec.home_tier,
                            ttl_seconds=self.ttl_for(w.spec),
                            expected_version=w.expected_version,
                        )
                        for w in writes
                    ]
                )
                self.history.insert(txn.connection, rows)
                if deliveries:
                    assert self.outbox is not None
                    self.outbox.insert(txn.connection, deliveries)
                if completion is not None:
                    completion(txn.connection, writes)
        except sa.exc.IntegrityError as exc:  # rolled back; now name the state
            taken = self._conflicting(writes)
            raise HistoryConflict(taken["state_id"], taken["version"] - 1, None) from exc
        if key_rows:
            assert self.cipher.data_keys is not None
            self.cipher.data_keys.remember(key_rows)

    def _seal(self, writes: Sequence[Write]) -> list[dict[str, Any]]:
        """Set each write's stored form (one data key lookup for the batch); the data key
        rows of new states, to insert in the transaction (see :mod:`.data_keys`). A write
        that brings its stored form already (a restore from a backup) keeps it."""
        writes = [w for w in writes if w.stored_new is None]
        if not any(self.types.encrypted_paths(w.spec.name) for w in writes):
            return []
        new_ids = {w.new["state_id"] for w in writes if w.transition is StateTransition.CREATE}
        sealed, key_rows = self.cipher.seal([w.new for w in writes], new_ids=new_ids)
        for w, stored in zip(writes, sealed, strict=True):
            w.stored_new = stored
        return key_rows

    def _resolver(self, write: Write) -> Resolve:
        """How a commit of ``write`` (and of the writes with it) whose reply was lost is
        found out: its history row, with its event id, is there or not."""
        new = write.new
        return lambda: self.history.committed(new["state_id"], new["version"], write.event_id)

    def _commit_single(
        self,
        w: Write,
        row: dict[str, Any],
        deliveries: Sequence[dict[str, Any]],
        resolve: Resolve,
    ) -> bool:
        """A change of a WARM-home record as ONE statement where the WARM database offers
        it (PostgreSQL): the compare-and-set UPDATE feeding the history INSERT and the
        INSERTs of the event's deliveries, in one round trip instead of BEGIN, a statement
        each and COMMIT. A lost reply is resolved by the history row, which commits with
        the deliveries or not at all. False when nothing was written (not applicable, or
        the record is not in WARM at the expected version): the transaction then runs and
        raises or moves the record as it always does."""
        if w.spec.home_tier is not StateCategory.WARM or w.expected_version < 1:
            return False
        rows: list[tuple[sa.Table, dict[str, Any]]] = [
            (self.history.table, self.history.insert_values(row))
        ]
        if deliveries:
            assert self.outbox is not None
            rows.extend((self.outbox.table, d) for d in deliveries)
        try:
            metadata = write_with_row(
                self.store,
                w.key,
                w.new_as_stored,
                expected_version=w.expected_version,
                rows=rows,
                resolve=resolve,
            )
        except sa.exc.IntegrityError as exc:  # nothing was written; name the state
            raise HistoryConflict(w.new["state_id"], w.new["version"] - 1, None) from exc
        return metadata is not None

    def _conflicting(self, writes: Sequence[Write]) -> dict[str, Any]:
        """The first new record whose (state_id, version) the history already holds."""
        if len(writes) > 1:
            taken = self.history.taken([(w.new["state_id"], w.new["version"]) for w in writes])
            for w in writes:
                if (w.new["state_id"], w.new["version"]) in taken:
                    return w.new
        return writes[0].new

    def already_exists(self, state_id: str, key: str) -> StateAlreadyExistsError:
        """The error for registering a taken id, saying what holds it."""
        current = self.read(key, fresh=True)
        record = None if current is None else current.record
        if record is None:
            return StateAlreadyExistsError(
                state_id,
                f"State id {state_id!r} was used before (its record expired or was removed); "
                "state ids are never reused. Register the state under a new id.",
            )
        if record["status"] == "deleted":
            return StateAlreadyExistsError(
                state_id,
                f"State {state_id!r} was deleted and is kept as a tombstone; state ids are "
                "never reused. Register the state under a new id.",
            )
        return StateAlreadyExistsError(state_id)

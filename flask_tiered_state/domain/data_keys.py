"""The per-state data keys of field encryption (envelope encryption), in the WARM database.

One row per state whose type encrypts fields::

    state_id       VARCHAR(200) PRIMARY KEY
    wrapped_key    TEXT      the state's 256-bit data key, wrapped by a master key
                             (Fernet); NULL once the state is erased
    master_key_id  VARCHAR(16)  which master key wrapped it (see MasterKeys.key_ids)
    created_at     DOUBLE    seconds since the epoch
    erased_at      DOUBLE    when erase_state destroyed the key; NULL while it lives

The records, the history rows and every copy of them hold only ciphertext; the key lives
here alone, so destroying the row's ``wrapped_key`` makes every copy of the state's
encrypted fields unreadable at once (crypto-shredding), and rotating a master key
re-wraps these rows and touches no record.

Unwrapped keys are kept in process memory for :data:`CACHE_SECONDS` (bounded LRU), as
ready AES-GCM ciphers: a process that did not erase a state can decrypt it from its cache
for at most that long after the erasure.

A registration makes its state's key in the process and inserts the row in the
registration's own transaction (:meth:`DataKeys.made`, :meth:`DataKeys.insert`): no round
trip of its own, and a registration that fails leaves no key behind.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cachetools import TTLCache
from sqlalchemy.dialects import postgresql, sqlite

from ..errors import StateErasedError
from .encryption import MasterKeys, aead

__all__ = [
    "CACHE_SECONDS",
    "DEFAULT_DATA_KEY_TABLE",
    "DataKeys",
    "RotationReport",
    "define_data_key_table",
]

DEFAULT_DATA_KEY_TABLE = "tiered_state_data_keys"
#: How long an unwrapped data key stays in a process's memory.
CACHE_SECONDS = 60.0
_CACHE_ENTRIES = 100_000
_CHUNK = 1000
_KEY_BYTES = 32
#: A state without a key row (as opposed to None: erased).
_NO_KEY: Any = object()


def define_data_key_table(metadata: sa.MetaData, name: str = DEFAULT_DATA_KEY_TABLE) -> sa.Table:
    """The data key table on ``metadata`` (the existing one if already defined there)."""
    existing = metadata.tables.get(name)
    if existing is not None:
        return existing
    return sa.Table(
        name,
        metadata,
        sa.Column("state_id", sa.String(200), primary_key=True),
        sa.Column("wrapped_key", sa.Text, nullable=True),
        sa.Column("master_key_id", sa.String(16), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("erased_at", sa.Float, nullable=True),
    )


@dataclass
class RotationReport:
    """What :meth:`DataKeys.rotate` did."""

    rewrapped: int = 0
    #: Changed by someone else between the read and the update (re-wrapped by another
    #: run, or erased): left as they are.
    already_current: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"rewrapped": self.rewrapped, "already_current": self.already_current}


class DataKeys:
    """Creates, reads, destroys and re-wraps the data keys of states.

    :param engine: the WARM database's engine.
    :param table: from :func:`define_data_key_table`.
    :param master: the master keys.
    """

    def __init__(self, engine: sa.Engine, table: sa.Table, master: MasterKeys) -> None:
        self.engine = engine
        self.table = table
        self.master = master
        #: state id -> its AES-GCM cipher, or None (erased, or no key)
        self._cache: TTLCache[str, Any] = TTLCache(_CACHE_ENTRIES, CACHE_SECONDS)
        self._aesgcm = aead().AESGCM
        self._lock = threading.Lock()
        dialect = engine.dialect.name
        self._insert: Any = (
            postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
        )

    def create(self) -> None:
        """Create the table where missing."""
        self.table.create(self.engine, checkfirst=True)

    # -- reading and creating --------------------------------------------------------

    def for_reading(self, state_ids: Sequence[str]) -> dict[str, Any]:
        """The AES-GCM cipher of each state's data key; None for an erased state or one
        without a key."""
        return {
            state_id: None if cipher is _NO_KEY else cipher
            for state_id, cipher in self._lookup(state_ids).items()
        }

    def for_writing(self, state_ids: Sequence[str]) -> dict[str, Any]:
        """The AES-GCM cipher of each state's data key, made for the states that have none
        yet (in a transaction of its own; registrations use :meth:`made`).

        :raises StateErasedError: a state was erased.
        """
        found = self._lookup(state_ids)
        absent = [i for i, cipher in found.items() if cipher is _NO_KEY]
        if absent:  # written before its type encrypted fields
            self._make(absent)
            with self._lock:
                for state_id in absent:
                    self._cache.pop(state_id, None)
            found.update(self._lookup(absent))
        keys: dict[str, Any] = {}
        for state_id, key in found.items():
            if key is None:
                raise StateErasedError(state_id)
            keys[state_id] = key
        return keys

    def _lookup(self, state_ids: Sequence[str]) -> dict[str, Any]:
        """Each state's cipher, None (erased) or ``_NO_KEY``: from the cache, else loaded."""
        found = self._cached(state_ids)
        missing = [i for i in dict.fromkeys(state_ids) if i not in found]
        if missing:
            loaded = self._load(missing)
            for state_id in missing:
                found[state_id] = loaded.get(state_id, _NO_KEY)
            self._remember(found, missing)
        return found

    def made(self, state_ids: Sequence[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """New data keys for states being registered: their ciphers, and the rows to
        :meth:`insert` in the registration's transaction (then :meth:`remember` them)."""
        ciphers: dict[str, Any] = {}
        rows: list[dict[str, Any]] = []
        now = time.time()
        for state_id in state_ids:
            data_key = os.urandom(_KEY_BYTES)
            wrapped, key_id = self.master.wrap(data_key)
            ciphers[state_id] = self._aesgcm(data_key)
            rows.append(
                {
                    "state_id": state_id,
                    "wrapped_key": wrapped,
                    "master_key_id": key_id,
                    "created_at": now,
                    "erased_at": None,
                    "cipher": ciphers[state_id],
                }
            )
        return ciphers, rows

    def insert(self, connection: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Insert rows of :meth:`made` on ``connection`` (the registration's transaction);
        a state that has a key already makes the transaction fail (IntegrityError)."""
        if rows:
            columns = [c.name for c in self.table.c]
            connection.execute(self.table.insert(), [{c: row[c] for c in columns} for row in rows])

    def _columns_of(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        columns = [c.name for c in self.table.c]
        return [{c: row[c] for c in columns} for row in rows]

    def remember(self, rows: Sequence[dict[str, Any]]) -> None:
        """Keep the keys of rows of :meth:`made` whose transaction committed."""
        with self._lock:
            for row in rows:
                self._cache[row["state_id"]] = row["cipher"]

    def _cached(self, state_ids: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        with self._lock:
            for state_id in state_ids:
                if state_id in self._cache:
                    found[state_id] = self._cache[state_id]
        return found

    def _remember(self, found: dict[str, Any], state_ids: Sequence[str]) -> None:
        with self._lock:
            for state_id in state_ids:
                self._cache[state_id] = found[state_id]

    def _load(self, state_ids: Sequence[str]) -> dict[str, Any]:
        """``{state_id: AES-GCM cipher, or None (erased)}`` of the rows that exist."""
        t = self.table
        loaded: dict[str, Any] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(state_ids), _CHUNK):
                chunk = state_ids[start : start + _CHUNK]
                rows = connection.execute(
                    sa.select(t.c.state_id, t.c.wrapped_key, t.c.master_key_id).where(
                        t.c.state_id.in_(chunk)
                    )
                )
                for state_id, wrapped, key_id in rows:
                    loaded[state_id] = (
                        None
                        if wrapped is None
                        else self._aesgcm(self.master.unwrap(wrapped, key_id, state_id=state_id))
                    )
        return loaded

    def _make(self, state_ids: Sequence[str]) -> None:
        """Insert new wrapped keys for ``state_ids`` in a transaction of their own (states
        written before their type encrypted fields); a racing writer's key wins."""
        _, made = self.made(state_ids)
        rows = self._columns_of(made)
        with self.engine.begin() as connection:
            for start in range(0, len(rows), _CHUNK):
                connection.execute(
                    self._insert.on_conflict_do_nothing(index_elements=["state_id"]),
                    rows[start : start + _CHUNK],
                )

    # -- erasure --------------------------------------------------------------------

    def erase(self, connection: sa.Connection, state_id: str, now: float | None = None) -> None:
        """Destroy the data key of ``state_id`` on ``connection`` (in the caller's
        transaction, with the record's erasure); a state without a key gets an erased row,
        so no key can be made for it later."""
        t = self.table
        when = time.time() if now is None else now
        done = connection.execute(
            t.update()
            .where(t.c.state_id == state_id)
            .values(wrapped_key=None, master_key_id=None, erased_at=when)
        )
        if done.rowcount == 0:
            connection.execute(
                self._insert.on_conflict_do_nothing(index_elements=["state_id"]),
                [
                    {
                        "state_id": state_id,
                        "wrapped_key": None,
                        "master_key_id": None,
                        "created_at": when,
                        "erased_at": when,
                    }
                ],
            )

    def forget(self, state_id: str) -> None:
        """Drop the cached key of ``state_id`` (after its erasure committed)."""
        with self._lock:
            self._cache[state_id] = None

    def is_erased(self, state_id: str) -> bool:
        t = self.table
        with self.engine.connect() as connection:
            erased = connection.execute(
                sa.select(t.c.erased_at).where(t.c.state_id == state_id)
            ).scalar_one_or_none()
        return erased is not None

    # -- rotation -------------------------------------------------------------------

    def count_to_rotate(self) -> int:
        """How many live keys are wrapped by a master key other than the newest."""
        t = self.table
        with self.engine.connect() as connection:
            return int(
                connection.execute(
                    sa.select(sa.func.count()).where(
                        t.c.wrapped_key.is_not(None),
                        t.c.master_key_id != self.master.newest_id,
                    )
                ).scalar_one()
            )

    def rotate(
        self, *, chunk_size: int = _CHUNK, progress: Callable[[int], None] | None = None
    ) -> RotationReport:
        """Re-wrap every live data key with the newest master key, chunk by chunk.

        Each row is updated compare-and-set on the wrapped key read, so a run is safe
        while the app serves and can be stopped and started again: what is done stays
        done, and the next run goes on with the rest.

        :raises EncryptionKeyError: a key is wrapped by a master key no longer configured.
        """
        report = RotationReport()
        newest = self.master.newest_id
        for chunk in self._stale_chunks(chunk_size):
            with self.engine.begin() as connection:
                for state_id, wrapped, key_id in chunk:
                    data_key = self.master.unwrap(wrapped, key_id, state_id=state_id)
                    rewrapped, _ = self.master.wrap(data_key)
                    t = self.table
                    done = connection.execute(
                        t.update()
                        .where(t.c.state_id == state_id, t.c.wrapped_key == wrapped)
                        .values(wrapped_key=rewrapped, master_key_id=newest)
                    )
                    if done.rowcount:
                        report.rewrapped += 1
                    else:  # erased or re-wrapped by another run meanwhile
                        report.already_current += 1
            if progress is not None:
                progress(len(chunk))
        return report

    def _stale_chunks(self, chunk_size: int) -> Iterator[list[tuple[str, str, str]]]:
        t = self.table
        after = ""
        newest = self.master.newest_id
        while True:
            with self.engine.connect() as connection:
                rows = [
                    (r.state_id, r.wrapped_key, r.master_key_id)
                    for r in connection.execute(
                        sa.select(t.c.state_id, t.c.wrapped_key, t.c.master_key_id)
                        .where(
                            t.c.state_id > after,
                            t.c.wrapped_key.is_not(None),
                            t.c.master_key_id != newest,
                        )
                        .order_by(t.c.state_id)
                        .limit(chunk_size)
                    )
                ]
            if not rows:
                return
            yield rows
            after = rows[-1][0]

    def counts(self) -> dict[str, int]:
        """Live keys by master key id, and erased states (``"erased"``)."""
        t = self.table
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(t.c.master_key_id, sa.func.count()).group_by(t.c.master_key_id)
            ).all()
        return {("erased" if key_id is None else key_id): int(n) for key_id, n in rows}

"""Checkpoints: the values of the tiers captured into an archive, verified and put back.

A checkpoint is an archive (:mod:`.archive`, kind ``"checkpoint"``) whose ``records``
section holds one item per key -- ``{"key", "value", "version", "checksum", "tier",
"ttl_seconds", "stored_at"}``, the value in its *stored form* (encrypted fields stay
encrypted: nothing is decrypted) and ``tier`` the tier it was read from, where a restore
puts it back. Every tier is read directly (:class:`~..storage.base.StateRepositories`:
``keys`` + ``fetch_many`` in chunks, or one snapshot of WARM): no cache is filled, no
copy promoted, no access counted.

Three captures:

``capture_hot_state()``
    every HOT key as HOT holds it now.
``capture_full_state(consistent=False)``
    every key of every tier, one item per key: the copy with the highest version wins,
    on a tie the one in the record's home tier (then WARM, COLD, HOT) -- as backups do.
    Each value is as its tier held it when its chunk was read: the checkpoint mixes
    instants.
``capture_full_state()`` (``consistent=True``, the default): a **consistent cut**.
    The WARM part is read in ONE snapshot (``REPEATABLE READ`` on PostgreSQL, one read
    transaction on SQLite; see :mod:`~..storage.sql.snapshot`), chunk by chunk in key
    order, so it is the WARM tier exactly as it was at one instant, the *cut*, however
    long the capture runs and whatever is written meanwhile. Then COLD and HOT are read
    and reconciled against it:

    - a key in the snapshot is taken from the snapshot: a HOT or COLD copy of it with a
      higher version is a write after the cut (a cached copy of a newer WARM value),
      one with a lower version a stale copy; neither is taken;
    - a key only in COLD (an archived record) is taken from COLD;
    - a key only in HOT whose record's type lives in WARM or COLD was created after the
      cut (a HOT copy of a record the snapshot does not have): it is left out, and
      counted as ``after_cut``;
    - records of **HOT-home types** (sessions) are written to HOT directly, so no
      snapshot holds them. With a ``manager`` whose history is in the WARM database, they
      are cut too, through the history: a state's history row commits in the same SQL
      transaction as its change (the HOT write is applied just before that commit), so
      the snapshot holds the latest version of each HOT-home state committed at the cut.
      A HOT record at that version is taken as it is; one at a later version (written
      after the cut, or not committed) is replaced by the record of the snapshot's
      version, from the history row (same fields; its JSON text re-serialised, so its
      checksum differs from the HOT value's); one without any history row in the
      snapshot was created after the cut and is left out. A HOT-home record that expires
      (TTL) while the capture runs is left out.
    - keys that are not records of a known type (raw store keys, types of another
      application) and HOT-home records without a manager have no cut: each is taken as
      its tier holds it when its chunk is read.

    What a consistent checkpoint gives: every record of a WARM-home type (and, with a
    manager, of a HOT-home type) as it was at the one instant of the cut, so a change
    that wrote several states in one transaction (a batch) is either wholly in it or
    not at all. What it does not cover: a record that moves between WARM and COLD
    while the capture runs (a demotion or a write bringing an archived record home) may
    be missing from it; run ``demote`` jobs and checkpoints apart.

A corrupt copy (its value does not match its checksum) is never captured: the key is
taken from another tier where one holds it, and the manifest lists it under
``corrupt``.

:meth:`StateCapture.verify_checkpoint` checks every chunk of the archive and every
value against its checksum; :meth:`StateCapture.restore_checkpoint` verifies first and
refuses a damaged checkpoint before writing anything.

.. versionadded:: 0.15
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..domain.history import newest_rows
from ..errors import (
    ArchiveCorruptError,
    ConcurrencyError,
    ConfigurationError,
    InvalidRequestError,
    InvalidStateTypeError,
)
from ..json_codec import dumps, loads
from ..storage.base import (
    StateCategory,
    StateRepositories,
    StateRepository,
    StoredValue,
    checksum_of,
    fetch_readable,
)
from ..storage.keys import validate_pattern
from .archive import (
    ArchiveReader,
    ArchiveWriter,
    Destination,
    list_archives,
    new_archive_id,
    open_destination,
)

if TYPE_CHECKING:
    from ..domain.manager import StateManager
    from ..storage.sql.snapshot import SQLSnapshot

__all__ = ["KIND", "RECORDS", "SCOPES", "StateCapture"]

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD
#: The archive kind of checkpoints.
KIND = "checkpoint"
#: The section holding the records.
RECORDS = "records"
#: What a checkpoint captured: HOT only, every tier (highest version wins), or a
#: consistent cut of every tier.
SCOPES = ("hot", "full", "consistent")
#: Which tier's copy wins a tie of versions when the record's home is unknown.
_TIE_ORDER = {WARM: 0, COLD: 1, HOT: 2}
_STATE_PREFIX = "state:"
#: Keys named in the manifest per kind of problem, at most.
_LISTED = 100

#: ``progress(n)``: ``n`` more items captured, verified or restored.
Progress = Callable[[int], object]


class _Counts:
    """What a capture took and left out, for the manifest."""

    def __init__(self) -> None:
        self.by_tier = dict.fromkeys((WARM.value, COLD.value, HOT.value), 0)
        self.after_cut = 0
        self.from_history = 0
        self.uncut = 0
        self.corrupt: list[dict[str, str]] = []
        self.corrupt_count = 0

    def corrupt_copy(self, key: str, tier: StateCategory) -> None:
        self.corrupt_count += 1
        if len(self.corrupt) < _LISTED:
            self.corrupt.append({"key": key, "tier": tier.value})

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": sum(self.by_tier.values()),
            "by_tier": dict(self.by_tier),
            "after_cut": self.after_cut,
            "from_history": self.from_history,
            "uncut": self.uncut,
            "corrupt": self.corrupt_count,
        }


def _item(stored: StoredValue, tier: StateCategory) -> dict[str, Any]:
    metadata = stored.metadata
    return {
        "key": stored.key,
        "value": stored.value,
        "version": metadata.version,
        "checksum": metadata.checksum,
        "tier": tier.value,
        "ttl_seconds": metadata.ttl_seconds,
        "stored_at": metadata.stored_at,
    }


def _chunks(keys: Iterable[str], size: int) -> Iterator[list[str]]:
    """``keys`` in lists of ``size``, each without repeats (``scan_keys`` may repeat a
    key)."""
    chunk: dict[str, None] = {}
    for key in keys:
        chunk[key] = None
        if len(chunk) >= size:
            yield list(chunk)
            chunk = {}
    if chunk:
        yield list(chunk)


class StateCapture:
    """Takes, lists, verifies and restores checkpoints (see the module).

    :param repositories: the tiers, read directly (a manager's ``get_repositories()``).
    :param manager: the :class:`~flask_tiered_state.StateManager` of those tiers: it
        knows each record's home tier (the type's), which makes the cut of HOT-home
        records possible, and restores records through its write path (history rows
        with the transition ``restore``). Without it keys are captured and restored by
        tier only.
    :param destination: where checkpoints are kept: a directory, ``file:///...`` or
        ``s3://bucket/prefix?endpoint_url=...`` (see :func:`.archive.open_destination`);
        keep it apart from the tiers it protects.
    :param chunk_size: keys per ``fetch_many`` and per snapshot read.
    """

    def __init__(
        self,
        repositories: StateRepositories,
        *,
        manager: StateManager | None = None,
        destination: str | os.PathLike[str] | Destination | None = None,
        chunk_size: int = 1000,
    ) -> None:
        if not isinstance(repositories, StateRepositories):
            raise ConfigurationError(
                "StateCapture needs the StateRepositories of the tiers (a manager's "
                f"get_repositories()), not {type(repositories).__name__}."
            )
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigurationError(
                f"chunk_size must be a whole number of at least 1, not {chunk_size!r}."
            )
        if manager is not None and not hasattr(manager, "types"):
            raise ConfigurationError(
                f"manager must be a StateManager (or None), not {type(manager).__name__}."
            )
        self.repositories = repositories
        self.manager = manager
        self.chunk_size = chunk_size
        self._destination = None if destination is None else open_destination(destination)

    @classmethod
    def for_manager(
        cls,
        manager: StateManager,
        destination: str | os.PathLike[str] | Destination,
        *,
        chunk_size: int = 1000,
    ) -> StateCapture:
        """The capture of ``manager``'s tiers, keeping checkpoints in ``destination``."""
        return cls(
            manager.get_repositories(),
            manager=manager,
            destination=destination,
            chunk_size=chunk_size,
        )

    @property
    def destination(self) -> Destination:
        """Where the checkpoints are kept (its ``url`` names it)."""
        if self._destination is None:
            raise ConfigurationError(
                "No checkpoint destination: give StateCapture(..., destination=...) a "
                "directory or an s3:// URL (the Flask commands use TIERED_STATE_BACKUP_URL)."
            )
        return self._destination

    # -- capturing -----------------------------------------------------------------

    def capture_hot_state(
        self, pattern: str = "*", *, label: str | None = None, progress: Progress | None = None
    ) -> dict[str, Any]:
        """A checkpoint of every HOT key matching ``pattern``, as HOT holds it; returns
        its manifest (``archive_id``, ``counts``, ...)."""
        validate_pattern(pattern)
        return self._capture("hot", pattern, label, progress, self._hot_items)

    def capture_full_state(
        self,
        pattern: str = "*",
        *,
        consistent: bool = True,
        label: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """A checkpoint of every key of every tier matching ``pattern``: a consistent cut
        (``consistent=True``), else the highest version of each key (see the module);
        returns its manifest.

        :raises ConfigurationError: ``consistent`` and a WARM tier without snapshots (a
            WARM tier that is not SQL).
        """
        validate_pattern(pattern)
        if not isinstance(consistent, bool):
            raise InvalidRequestError(f"consistent must be True or False, not {consistent!r}.")
        if not consistent:
            return self._capture("full", pattern, label, progress, self._full_items)
        if not hasattr(self.repositories.warm, "snapshot"):
            raise ConfigurationError(
                f"A consistent checkpoint reads the WARM tier in one snapshot, which the "
                f"{self.repositories.warm.backend} backend does not offer; use a SQL WARM "
                "tier, or capture_full_state(consistent=False)."
            )
        return self._capture("consistent", pattern, label, progress, self._consistent_items)

    def _capture(
        self,
        scope: str,
        pattern: str,
        label: str | None,
        progress: Progress | None,
        items: Callable[[str, _Counts, dict[str, Any], Progress | None], Iterator[dict[str, Any]]],
    ) -> dict[str, Any]:
        if label is not None and (not isinstance(label, str) or len(label) > 200):
            raise InvalidRequestError(
                f"label must be a string of at most 200 characters, not {label!r}."[:300]
            )
        self._authorize("checkpoints.create")
        started = time.perf_counter()
        counts = _Counts()
        cut: dict[str, Any] = {}
        archive_id = new_archive_id()
        with ArchiveWriter(self.destination, archive_id, KIND) as writer:
            writer.add(RECORDS, items(pattern, counts, cut, progress))
            return writer.close(
                {
                    "scope": scope,
                    "pattern": pattern,
                    "label": label,
                    "counts": counts.to_dict(),
                    "corrupt": counts.corrupt,
                    "cut": cut or None,
                    "tiers": {r.category.value: r.backend for r in self.repositories},
                    "duration_seconds": round(time.perf_counter() - started, 3),
                }
            )

    def _fetch(
        self, repository: StateRepository, keys: Sequence[str], counts: _Counts
    ) -> dict[str, StoredValue]:
        """``fetch_many`` of ``keys``; corrupt copies are counted and left out."""
        return fetch_readable(
            repository, keys, lambda key: counts.corrupt_copy(key, repository.category)
        )

    def _hot_items(
        self, pattern: str, counts: _Counts, cut: dict[str, Any], progress: Progress | None
    ) -> Iterator[dict[str, Any]]:
        hot = self.repositories.hot
        for chunk in _chunks(hot.scan_keys(pattern), self.chunk_size):
            found = self._fetch(hot, chunk, counts)
            for key in sorted(found):
                yield _item(found[key], HOT)
            counts.by_tier[HOT.value] += len(found)
            if progress is not None:
                progress(len(chunk))

    def _full_items(
        self, pattern: str, counts: _Counts, cut: dict[str, Any], progress: Progress | None
    ) -> Iterator[dict[str, Any]]:
        tiers = list(self.repositories)
        present = {r.category: set(r.keys(pattern)) for r in tiers}
        union = sorted(set().union(*present.values()))
        for chunk in _chunks(union, self.chunk_size):
            copies: dict[str, list[StoredValue]] = {}
            for repository in tiers:
                wanted = [k for k in chunk if k in present[repository.category]]
                if wanted:
                    for key, stored in self._fetch(repository, wanted, counts).items():
                        copies.setdefault(key, []).append(stored)
            for key in chunk:
                found = copies.get(key)
                if not found:
                    continue
                best = max(found, key=lambda s: self._rank(s))
                counts.by_tier[best.metadata.category.value] += 1
                yield _item(best, best.metadata.category)
            if progress is not None:
                progress(len(chunk))

    def _rank(self, stored: StoredValue) -> tuple[int, int, int]:
        """Highest version first; on a tie the record's home tier, then WARM, COLD, HOT."""
        category = stored.metadata.category
        home = self._home_of(stored)
        return (stored.metadata.version, int(home is category), -_TIE_ORDER[category])

    def _home_of(self, stored: StoredValue) -> StateCategory | None:
        """The home tier of a record's type, or None (not a record of a known type)."""
        manager = self.manager
        if manager is None or not stored.key.startswith(_STATE_PREFIX):
            return None
        try:
            record = loads(stored.value)
            return manager.types.get(record.get("type")).home_tier
        except (ValueError, AttributeError, InvalidStateTypeError):
            return None

    def _consistent_items(
        self, pattern: str, counts: _Counts, cut: dict[str, Any], progress: Progress | None
    ) -> Iterator[dict[str, Any]]:
        warm: Any = self.repositories.warm
        captured: set[str] = set()
        with warm.snapshot() as snapshot:
            cut["backend"] = warm.backend
            cut["isolation"] = (
                "repeatable read" if warm.backend == "postgresql" else "read transaction"
            )
            for chunk in snapshot.chunks(
                pattern,
                chunk_size=self.chunk_size,
                on_corrupt=lambda key, _: counts.corrupt_copy(key, WARM),
            ):
                if not cut.get("taken_at"):
                    cut["taken_at"] = snapshot.taken_at
                for stored in chunk:
                    captured.add(stored.key)
                    yield _item(stored, WARM)
                counts.by_tier[WARM.value] += len(chunk)
                if progress is not None:
                    progress(len(chunk))
            if not cut.get("taken_at"):
                cut["taken_at"] = snapshot.taken_at
            cold = self.repositories.cold
            for chunk in _chunks(
                (k for k in cold.scan_keys(pattern) if k not in captured), self.chunk_size
            ):
                found = self._fetch(cold, chunk, counts)
                for key in sorted(found):
                    captured.add(key)
                    yield _item(found[key], COLD)
                counts.by_tier[COLD.value] += len(found)
                if progress is not None:
                    progress(len(chunk))
            hot = self.repositories.hot
            history = self._history_in(snapshot)
            for chunk in _chunks(
                (k for k in hot.scan_keys(pattern) if k not in captured), self.chunk_size
            ):
                found = self._fetch(hot, chunk, counts)
                captured.update(found)  # SCAN may list a key again in a later reply
                yield from self._cut_hot(found, counts, snapshot, history)
                if progress is not None:
                    progress(len(chunk))
        cut["history"] = history is not None

    def _history_in(self, snapshot: SQLSnapshot) -> sa.Table | None:
        """The history table when it lives in the snapshot's database (the manager's)."""
        manager = self.manager
        if manager is None:
            return None
        history = getattr(manager, "history", None)
        if history is None or history.engine is not snapshot.repository.engine:
            return None
        table: sa.Table = history.table
        return table

    def _cut_hot(
        self,
        found: dict[str, StoredValue],
        counts: _Counts,
        snapshot: SQLSnapshot,
        history: sa.Table | None,
    ) -> Iterator[dict[str, Any]]:
        """The items of HOT values of keys neither WARM (in the snapshot) nor COLD has."""
        hot_homes: dict[str, tuple[StoredValue, dict[str, Any]]] = {}
        for key in sorted(found):
            stored = found[key]
            home = self._home_of(stored)
            if home is None:
                counts.uncut += 1
                counts.by_tier[HOT.value] += 1
                yield _item(stored, HOT)
            elif home is not HOT:
                counts.after_cut += 1
            elif history is None:
                counts.uncut += 1
                counts.by_tier[HOT.value] += 1
                yield _item(stored, HOT)
            else:
                hot_homes[key] = (stored, loads(stored.value))
        if not hot_homes or history is None:
            return
        ids = {record["state_id"]: key for key, (_, record) in hot_homes.items()}
        latest = dict(
            snapshot.run(
                lambda: newest_rows(snapshot.connection, history, list(ids), records=False)
            )
        )
        older = {
            state_id: int(version)
            for state_id, version in latest.items()
            if int(version) != hot_homes[ids[state_id]][1].get("version")
        }
        records: dict[str, Any] = {}
        if older:
            pairs = list(older.items())
            rows = snapshot.execute(
                sa.select(history.c.state_id, history.c.new_record).where(
                    sa.tuple_(history.c.state_id, history.c.version).in_(pairs)
                )
            )
            records = {state_id: record for state_id, record in rows}
        for key, (stored, record) in hot_homes.items():
            state_id = record["state_id"]
            if state_id not in latest:
                counts.after_cut += 1
                continue
            counts.by_tier[HOT.value] += 1
            if state_id not in older:
                yield _item(stored, HOT)
                continue
            at_cut = records[state_id]
            if isinstance(at_cut, str):  # a JSON column some drivers return as text
                at_cut = loads(at_cut)
            value = dumps(at_cut)
            counts.from_history += 1
            yield {
                "key": key,
                "value": value,
                "version": older[state_id],
                "checksum": checksum_of(value),
                "tier": HOT.value,
                "ttl_seconds": stored.metadata.ttl_seconds,
                "stored_at": stored.metadata.stored_at,
            }

    # -- listing, verifying, restoring -----------------------------------------------

    def list_checkpoints(self) -> list[dict[str, Any]]:
        """The manifests of the complete checkpoints at the destination, newest first."""
        self._authorize("checkpoints.list")
        return list_archives(self.destination, KIND)

    def _reader(self, checkpoint_id: str) -> ArchiveReader:
        reader = ArchiveReader(self.destination, checkpoint_id)
        if reader.kind != KIND:
            raise InvalidRequestError(
                f"Archive {checkpoint_id!r} is a {reader.kind}, not a checkpoint; "
                "list_checkpoints() shows the checkpoints."
            )
        return reader

    def verify_checkpoint(
        self, checkpoint_id: str, *, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Check every chunk of the checkpoint (its sha256, that it decompresses, its item
        count, the manifest's counts) and every record (a key, a version, a tier, and the
        value's sha256 equal to the checksum captured). Returns a report ``{"archive_id",
        "ok": True, "records", "by_tier", "sections"}``.

        :raises ArchiveCorruptError: the first damage found, naming the file and the byte
            offset where it starts (the message counts any further damage).
        :raises ArchiveNotFoundError: no complete checkpoint has this id.
        """
        self._authorize("checkpoints.verify")
        reader = self._reader(checkpoint_id)
        report = reader.verify()
        errors = report["errors"]
        if errors:
            first = errors[0]
            more = f" ({len(errors) - 1} more problems)" if len(errors) > 1 else ""
            raise ArchiveCorruptError(
                checkpoint_id, str(first["file"]), first["offset"], f"{first['message']}{more}"
            )
        by_tier = dict.fromkeys((WARM.value, COLD.value, HOT.value), 0)
        files = _chunk_files(reader)
        count = 0
        for index, item in enumerate(reader.items(RECORDS)):
            problem = _item_problem(item)
            if problem is not None:
                raise ArchiveCorruptError(
                    checkpoint_id,
                    files(index),
                    None,
                    f"Checkpoint {checkpoint_id!r}: record {index + 1} (in {files(index)}) "
                    f"{problem}; it cannot be restored.",
                )
            by_tier[item["tier"]] += 1
            count += 1
            if progress is not None and count % 1000 == 0:
                progress(1000)
        if progress is not None and count % 1000:
            progress(count % 1000)
        return {
            "archive_id": checkpoint_id,
            "ok": True,
            "records": count,
            "by_tier": by_tier,
            "sections": report["sections"],
        }

    def restore_checkpoint(
        self,
        checkpoint_id: str,
        *,
        mode: str = "replace",
        tiers: Sequence[str] = ("hot", "warm", "cold"),
        dry_run: bool = True,
        actor: str | None = None,
        reason: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Put the checkpoint's records back (``dry_run=True``: only say what would be
        done). The checkpoint is verified whole first; a damaged one is refused before
        anything is written.

        Records of the manager's types go through
        :meth:`~flask_tiered_state.StateManager.restore_records`: each restored state is a
        mutation of its own (transition ``restore``, history row, seal, events), with the
        next version number -- never an older one (see
        :mod:`flask_tiered_state.domain.restore`). Other keys are written to the tier
        they were captured from with compare-and-set on the version read, through the
        manager's store (its cache and other processes' caches learn of it); without a
        manager directly in the tier, where caches are not told: restore so only with
        the application stopped.

        :param mode: ``replace`` (default: every key as the checkpoint has it -- the state
            at the cut), ``overwrite-older`` (only keys whose present version is older
            than the checkpoint's) or ``missing`` (only keys absent now).
        :param tiers: restore only the records captured from these tiers.
        :returns: ``{"archive_id", "dry_run", "mode", "counts": {outcome: n}, "errors":
            {key: why}, "missing_keys": [...]}`` (outcomes: see
            :data:`flask_tiered_state.domain.restore.OUTCOMES`).
        :raises ArchiveCorruptError: the checkpoint is damaged (nothing was written).
        """
        from ..domain.restore import OUTCOMES, check_mode

        self._authorize("backups.restore")
        check_mode(mode)
        if type(dry_run) is not bool:
            raise InvalidRequestError(f"dry_run must be True or False, not {dry_run!r}.")
        wanted = _check_tiers(tiers)
        self.verify_checkpoint(checkpoint_id)
        reader = self._reader(checkpoint_id)
        totals: dict[str, Any] = {
            "archive_id": checkpoint_id,
            "dry_run": dry_run,
            "mode": mode,
            "counts": dict.fromkeys(OUTCOMES, 0),
            "errors": {},
            "missing_keys": [],
        }
        for chunk in _item_chunks(reader.items(RECORDS), self.chunk_size):
            chosen = [item for item in chunk if item["tier"] in wanted]
            records, raw = self._split(chosen)
            if records:
                assert self.manager is not None
                result = self.manager.restore_records(
                    records, mode=mode, actor=actor, reason=reason, dry_run=dry_run
                )
                _add(totals, result.counts, result.errors, result.missing_keys)
            if raw:
                counts, errors = self._restore_raw(raw, mode, dry_run)
                _add(totals, counts, errors, [])
            if progress is not None:
                progress(len(chunk))
        return totals

    def _split(
        self, items: Sequence[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The stored-form records of the manager's states, and the other items."""
        if self.manager is None:
            return [], list(items)
        records: list[dict[str, Any]] = []
        raw: list[dict[str, Any]] = []
        for item in items:
            record = None
            if item["key"].startswith(_STATE_PREFIX):
                try:
                    record = loads(item["value"])
                except ValueError:
                    record = None
            if (
                isinstance(record, dict)
                and _STATE_PREFIX + str(record.get("state_id")) == item["key"]
            ):
                records.append(record)
            else:
                raw.append(item)
        return records, raw

    def _restore_raw(
        self, items: Sequence[dict[str, Any]], mode: str, dry_run: bool
    ) -> tuple[dict[str, int], dict[str, str]]:
        """Write keys that are not records of the manager's types back (see
        :meth:`restore_checkpoint`)."""
        counts: dict[str, int] = {}
        errors: dict[str, str] = {}
        keys = [item["key"] for item in items]
        copies: dict[str, dict[StateCategory, StoredValue]] = {k: {} for k in keys}
        for repository in self.repositories:
            for key, stored in self._fetch(repository, keys, _Counts()).items():
                copies[key][repository.category] = stored
        plans: list[tuple[dict[str, Any], int, str]] = []
        for item in items:
            tier = StateCategory(item["tier"])
            found = copies[item["key"]]
            present = found.get(tier)
            if present is None and tier is not HOT:
                others = [s for c, s in found.items() if c is not HOT]
                present = max(others, key=lambda s: s.metadata.version) if others else None
            # The store checks the home's version, else the newest copy in another tier.
            expected = max((s.metadata.version for s in found.values()), default=0)
            if tier in found:
                expected = found[tier].metadata.version
            if present is None:
                outcome = "recreated"
            elif present.value == item["value"]:
                outcome = "unchanged"
            elif mode == "missing":
                outcome = "skipped_present"
            elif mode == "overwrite-older" and present.metadata.version >= item["version"]:
                outcome = "skipped_newer"
            else:
                outcome = "restored"
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome in ("recreated", "restored"):
                plans.append((item, expected, outcome))
        if dry_run or not plans:
            return counts, errors
        for item, expected, outcome in plans:
            error = None
            failed = self._write_raw([(item, expected)])
            if not failed:
                continue
            error = failed[item["key"]]
            counts[outcome] -= 1
            counts["failed"] = counts.get("failed", 0) + 1
            errors[item["key"]] = error
        return counts, errors

    def _write_raw(self, plans: Sequence[tuple[dict[str, Any], int]]) -> dict[str, str]:
        """Write each planned item with compare-and-set on its expected version; the keys
        that failed and why."""
        failed: dict[str, str] = {}
        store = None if self.manager is None else self.manager.store
        for item, expected in plans:
            tier = StateCategory(item["tier"])
            ttl = item.get("ttl_seconds")
            try:
                if store is not None:
                    with store.transaction() as txn:
                        txn.set(
                            item["key"],
                            loads(item["value"]),
                            category=tier,
                            ttl_seconds=ttl,
                            expected_version=expected,
                        )
                else:
                    self.repositories.by_category(tier).store(
                        item["key"],
                        item["value"],
                        version=item["version"] if expected == 0 else None,
                        ttl_seconds=ttl,
                        expected_version=expected,
                    )
            except ConcurrencyError as exc:
                failed[item["key"]] = exc.message
        return failed

    def _authorize(self, action: str) -> None:
        if self.manager is not None:
            self.manager.authorize(action)


def _check_tiers(tiers: Sequence[str]) -> set[str]:
    names = {c.value for c in StateCategory}
    if isinstance(tiers, str) or not tiers or any(t not in names for t in tiers):
        raise InvalidRequestError(
            f"tiers must be a non-empty list of 'hot', 'warm' and 'cold', not {tiers!r}."
        )
    return set(tiers)


def _item_chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _add(
    totals: dict[str, Any], counts: dict[str, int], errors: dict[str, str], missing: list[str]
) -> None:
    for outcome, number in counts.items():
        totals["counts"][outcome] = totals["counts"].get(outcome, 0) + number
    listed = totals["errors"]
    for key, error in errors.items():
        if len(listed) < _LISTED:
            listed[key] = error
    totals["missing_keys"] += missing[: max(0, _LISTED - len(totals["missing_keys"]))]


def _chunk_files(reader: ArchiveReader) -> Callable[[int], str]:
    """``file(index)``: the chunk file that holds item ``index`` of the records."""
    bounds: list[tuple[int, str]] = []
    total = 0
    for chunk in reader.manifest["sections"].get(RECORDS, {}).get("chunks", []):
        total += int(chunk["items"])
        bounds.append((total, str(chunk["file"])))

    def file(index: int) -> str:
        for end, name in bounds:
            if index < end:
                return name
        return bounds[-1][1] if bounds else RECORDS

    return file


def _item_problem(item: Any) -> str | None:
    """Why a checkpoint item cannot be restored, or None."""
    if not isinstance(item, dict):
        return "is not a JSON object"
    key, value, version = item.get("key"), item.get("value"), item.get("version")
    if not isinstance(key, str) or not key:
        return "has no key"
    if not isinstance(value, str):
        return f"of {key!r} has no value text"
    if type(version) is not int or version < 1:
        return f"of {key!r} has version {version!r}, not a whole number of at least 1"
    if item.get("tier") not in ("hot", "warm", "cold"):
        return f"of {key!r} names the tier {item.get('tier')!r}"
    if checksum_of(value) != item.get("checksum"):
        return f"of {key!r} does not match its checksum"
    return None

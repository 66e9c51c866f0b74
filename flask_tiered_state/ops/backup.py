"""Backups of a manager's states: full and incremental, verified, restored through the
write path.

:class:`BackupManager` reads the tiers directly (``keys`` + ``fetch_many`` in chunks,
through :class:`~flask_tiered_state.storage.base.StateRepositories`: no cache, no
promotion, never the manager's per-key path) and writes one archive
(:mod:`~flask_tiered_state.ops.archive`) per backup:

``records``
    one item per state: the copy with the highest version among the tiers backed up (the
    type's home tier on a tie), as *stored* -- the tier's JSON text byte for byte, so
    encrypted fields stay ciphertext -- with its tier, versions and sha256;
``history`` (``include_history``)
    the history rows as stored, seals included;
``events`` (``include_events``)
    the deliveries not delivered yet (pending and dead).

The manifest (written last) counts them, names the tiers' backends (never a password)
and, for an incremental backup, its parent. An *incremental* backup holds the records
updated and the history rows written since its parent started (minus
:data:`INCREMENTAL_OVERLAP_SECONDS` for clocks that differ); deletions are tombstones, so
they are changes too. A restore of an incremental backup restores its whole chain.

Keys are first listed from every tier into a small index on disk (a temporary SQLite
file), then read back in key order a chunk at a time, so memory stays flat however
many states there are. A record moved between tiers between two listings is looked for
in every tier; one that moves twice while a backup runs may be missed (take
checkpoints for a consistent cut).

:meth:`BackupManager.restore_backup` goes through
:meth:`~flask_tiered_state.domain.manager.StateManager.restore_records` (see
:mod:`flask_tiered_state.domain.restore`): compare-and-set, one history row per restored
state (transition ``restore``, the actor, the backup id in the reason), seals, events.

.. versionadded:: 0.15
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..domain.history_archive import HISTORY_KEY_PREFIX
from ..errors import (
    ArchiveCorruptError,
    ArchiveNotFoundError,
    ConfigurationError,
    EncryptionKeyError,
    InvalidRequestError,
)
from ..json_codec import loads
from ..setting_values import fail
from ..storage.base import (
    StateCategory,
    StateRepositories,
    StateRepository,
    StoredValue,
    WriteRequest,
    fetch_readable,
)
from ..storage.keys import glob_to_regex, validate_pattern
from .archive import (
    ArchiveReader,
    ArchiveWriter,
    Destination,
    delete_archive,
    list_archives,
    new_archive_id,
    open_destination,
    parse_destination,
)

if TYPE_CHECKING:
    from ..domain.manager import StateManager

__all__ = [
    "BACKUP_KIND",
    "INCREMENTAL_OVERLAP_SECONDS",
    "BackupManager",
    "Progress",
    "backup_url_setting",
]

logger = logging.getLogger("flask_tiered_state.ops")

BACKUP_KIND = "backup"
KEY_PREFIX = "state:"
#: An incremental backup starts this long before its parent started, so that a record
#: written by a host whose clock is a little behind is not missed (a record in both is
#: restored once, at its highest version).
INCREMENTAL_OVERLAP_SECONDS = 300
#: ``progress(phase, advance, total)``: ``phase`` is ``"records"``, ``"history"``,
#: ``"events"`` or ``"verify"``; ``advance`` items were done; ``total`` is the phase's
#: size when known (given with ``advance=0`` when the phase starts).
Progress = Callable[[str, int, "int | None"], None]
_TIERS = {c.value: c for c in StateCategory}
_BIT = {StateCategory.HOT: 1, StateCategory.WARM: 2, StateCategory.COLD: 4}
#: On a version tie, the tier whose copy wins when the type's home tier has none.
_TIE_ORDER = (StateCategory.WARM, StateCategory.COLD, StateCategory.HOT)
_LIST_LIMIT = 100  # ids a report lists per problem


def backup_url_setting(key: str, value: object) -> str | None:
    """``TIERED_STATE_BACKUP_URL``: None (``<instance_path>/backups``), a directory path,
    ``file:///dir`` or ``s3://bucket/prefix?endpoint_url=...&region_name=...``."""
    if value is None or value == "":
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    try:
        parse_destination(value)
    except ConfigurationError as exc:
        raise fail(
            key,
            value,
            "None (the app's instance folder), a directory path, 'file:///path/to/dir' or "
            f"'s3://bucket/prefix' ({exc.message[:1].lower()}{exc.message[1:].rstrip('.')})",
        ) from None
    return str(value)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _check_tiers(tiers: object, what: str) -> tuple[StateCategory, ...]:
    if isinstance(tiers, (str, bytes)) or not isinstance(tiers, Iterable):
        raise InvalidRequestError(
            f"{what} is a list of tiers (hot, warm, cold), not {tiers!r}.",
            details={"tiers": repr(tiers)},
        )
    chosen: list[StateCategory] = []
    for tier in tiers:
        category = _TIERS.get(str(getattr(tier, "value", tier)).lower())
        if category is None:
            raise InvalidRequestError(
                f"Unknown tier {tier!r} in {what}; the tiers are hot, warm and cold.",
                details={"tiers": repr(tiers)},
            )
        if category not in chosen:
            chosen.append(category)
    if not chosen:
        raise InvalidRequestError(f"{what} names no tier; give one or more of hot, warm, cold.")
    return tuple(chosen)


class BackupManager:
    """Creates, lists, verifies and restores backups of a manager's states.

    :param repositories: the tiers to read (default: the manager's).
    :param manager: the :class:`~flask_tiered_state.domain.manager.StateManager`: needed
        for the history and events sections, for home tiers on version ties, for the
        encryption check of :meth:`verify_backup` and for every restore; without it a
        backup holds the records only.
    :param destination: where backups go (see
        :func:`~flask_tiered_state.ops.archive.open_destination`): a directory, or
        ``s3://bucket/prefix`` -- not the COLD tier's bucket and prefix.
    :param chunk_keys: keys read per ``fetch_many`` (and states per restore transaction,
        at most 5,000).
    :param chunk_items: items per archive chunk.
    """

    def __init__(
        self,
        repositories: StateRepositories | None = None,
        *,
        manager: StateManager | None = None,
        destination: str | os.PathLike[str] | Destination,
        chunk_keys: int = 1000,
        chunk_items: int = 5000,
    ) -> None:
        if repositories is None:
            if manager is None:
                raise ConfigurationError(
                    "BackupManager needs the repositories to read, or a manager: "
                    "BackupManager(manager=manager, destination=...)."
                )
            repositories = manager.get_repositories()
        if not isinstance(repositories, StateRepositories):
            raise ConfigurationError(
                "BackupManager reads a StateRepositories bundle (manager.get_repositories()), "
                f"not {type(repositories).__name__}."
            )
        for name, value, high in (
            ("chunk_keys", chunk_keys, 5000),
            ("chunk_items", chunk_items, 10**6),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise ConfigurationError(
                    f"BackupManager {name} must be an integer from 1 to {high}, not {value!r}."
                )
        self.repositories = repositories
        self.manager = manager
        self.destination = open_destination(destination)
        self.chunk_keys = chunk_keys
        self.chunk_items = chunk_items

    def __repr__(self) -> str:
        return f"<BackupManager to {self.destination.url}>"

    def _authorize(self, action: str, actor: str | None = None) -> str | None:
        if self.manager is None:
            return actor
        return self.manager.authorize(action, actor=actor)

    def _need_manager(self, what: str) -> StateManager:
        if self.manager is None:
            raise ConfigurationError(
                f"{what} needs the manager: BackupManager(manager=manager, destination=...)."
            )
        return self.manager

    # -- creating -------------------------------------------------------------------------

    def create_backup(
        self,
        tiers: Iterable[str | StateCategory] = ("hot", "warm", "cold"),
        types: Iterable[str] | None = None,
        pattern: str = "*",
        include_history: bool = False,
        include_events: bool = False,
        incremental: bool | str = False,
        *,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Back up every state (of ``types``, whose id matches the glob ``pattern``) found
        in ``tiers``; the new backup's manifest.

        :param include_history: add the history rows (as stored, seals included).
        :param include_events: add the deliveries not delivered yet.
        :param incremental: only the changes since a parent backup: True for the newest
            backup at the destination, or a backup id.
        :raises InvalidRequestError: an unknown tier or type, a bad pattern, or
            ``incremental`` without a backup to build on.
        """
        self._authorize("backups.create")
        chosen = _check_tiers(tiers, "tiers")
        validate_pattern(pattern)
        type_names = self._check_types(types)
        for name, flag in (
            ("include_history", include_history),
            ("include_events", include_events),
        ):
            if type(flag) is not bool:
                raise InvalidRequestError(f"{name} must be True or False, not {flag!r}.")
        if (include_history or include_events) and self.manager is None:
            self._need_manager("A backup with history or events")
        parent = self._parent(incremental)
        since: str | None = None
        if parent is not None:
            started = datetime.fromisoformat(str(parent["created_at"]))
            since = _iso(started - timedelta(seconds=INCREMENTAL_OVERLAP_SECONDS))
        backup_id = new_archive_id()
        begun = time.perf_counter()
        counts: dict[str, Any] = {}
        with ArchiveWriter(
            self.destination, backup_id, BACKUP_KIND, chunk_items=self.chunk_items
        ) as writer:
            records = _RecordScan(self, chosen, type_names, pattern, since, progress)
            writer.add("records", records)
            counts.update(records.counts())
            if include_history:
                history = self._history_rows(pattern, type_names, since, progress)
                counts["history"] = writer.add("history", history)
                # rows `flask state gc` moved out of the table live in COLD chunks
                counts["history_archive"] = writer.add(
                    "history_archive", self._history_chunks(pattern, since)
                )
            if include_events:
                counts["events"] = writer.add("events", self._event_rows(pattern, progress))
            manifest = writer.close(
                {
                    "backup_id": backup_id,
                    "parent_id": None if parent is None else parent["archive_id"],
                    "incremental": parent is not None,
                    "since": since,
                    "options": {
                        "tiers": [c.value for c in chosen],
                        "types": None if type_names is None else sorted(type_names),
                        "pattern": pattern,
                        "include_history": include_history,
                        "include_events": include_events,
                    },
                    "counts": counts,
                    "source": self._source(),
                    "duration_seconds": round(time.perf_counter() - begun, 3),
                }
            )
        logger.info(
            "Backup %s written to %s: %d records", backup_id, self.destination.url,
            counts.get("records", 0),
        )  # fmt: skip
        return _summary(manifest)

    def _check_types(self, types: Iterable[str] | None) -> set[str] | None:
        if types is None:
            return None
        if isinstance(types, (str, bytes)) or not isinstance(types, Iterable):
            raise InvalidRequestError(f"types is a list of state type names, not {types!r}.")
        names = {str(getattr(t, "value", t)) for t in types}
        if self.manager is not None:
            for name in names:
                self.manager.types.get(name)  # InvalidStateTypeError names the known ones
        return names

    def _parent(self, incremental: bool | str) -> dict[str, Any] | None:
        if incremental is False:
            return None
        if incremental is True:
            backups = list_archives(self.destination, BACKUP_KIND)
            if not backups:
                raise InvalidRequestError(
                    f"No backup in {self.destination.url} to build an incremental backup on; "
                    "create a full backup first."
                )
            return backups[0]
        if isinstance(incremental, str):
            return ArchiveReader(self.destination, incremental).manifest
        raise InvalidRequestError(
            f"incremental is True, False or a backup id, not {incremental!r}."
        )

    def _home(self, type_name: object) -> StateCategory | None:
        if self.manager is None or not isinstance(type_name, str):
            return None
        try:
            return self.manager.types.get(type_name).home_tier
        except Exception:  # a type this app does not register
            return None

    def _source(self) -> dict[str, Any]:
        """The tiers' backends, without credentials."""
        source: dict[str, Any] = {
            c.value: _describe(self.repositories.by_category(c)) for c in StateCategory
        }
        if self.manager is not None:
            source["history_table"] = self.manager.history.table.name
            source["encryption"] = self.manager.data_keys is not None
            source["audit_keys"] = (
                None
                if self.manager.audit_sealer is None
                else list(self.manager.audit_sealer.key_ids)
            )
        try:
            from importlib.metadata import version

            source["library_version"] = version("flask-tiered-state")
        except Exception:  # not installed as a distribution (a source checkout)
            source["library_version"] = None
        return source

    def _history_rows(
        self,
        pattern: str,
        types: set[str] | None,
        since: str | None,
        progress: Progress | None,
    ) -> Iterator[dict[str, Any]]:
        manager = self._need_manager("The history section")
        t = manager.history.table
        regex = None if pattern == "*" else glob_to_regex(pattern)
        columns = [c for c in t.c if c.name != "id"]
        after = 0
        since_time = None if since is None else datetime.fromisoformat(since)
        if progress is not None:
            progress("history", 0, manager.history.count())
        while True:
            stmt = sa.select(t.c.id, *columns).where(t.c.id > after).order_by(t.c.id)
            if since_time is not None:
                stmt = stmt.where(t.c.created_at >= since_time)
            with manager.history.engine.connect() as connection:
                rows = connection.execute(stmt.limit(self.chunk_keys)).mappings().all()
            for row in rows:
                if regex is not None and not regex.fullmatch(row["state_id"]):
                    continue
                new = _json(row["new_record"])
                if types is not None and (
                    not isinstance(new, dict) or new.get("type") not in types
                ):
                    continue
                yield {
                    "state_id": row["state_id"],
                    "version": int(row["version"]),
                    "transition": row["transition"],
                    "from_status": row["from_status"],
                    "to_status": row["to_status"],
                    "old_record": _json(row["old_record"]),
                    "new_record": new,
                    "actor": row["actor"],
                    "reason": row["reason"],
                    "correlation_id": row["correlation_id"],
                    "created_at": _stored_time(row["created_at"]),
                    "event_id": row["event_id"],
                    "seal": row["seal"],
                }
            if progress is not None:
                progress("history", len(rows), None)
            if len(rows) < self.chunk_keys:
                return
            after = int(rows[-1]["id"])

    def _history_chunks(self, pattern: str, since: str | None) -> Iterator[dict[str, Any]]:
        """The COLD chunks of archived history rows (:mod:`..domain.history_archive`) of
        the states matching ``pattern``, as stored: ``{key, value, version}``. Chunks of
        every type: a chunk names its state, not its type."""
        cold = self.repositories.cold
        after = None if since is None else datetime.fromisoformat(since).timestamp()
        keys = cold.scan_keys(f"{HISTORY_KEY_PREFIX}{pattern}:*")
        for listed in _chunked(keys, self.chunk_keys):
            chunk = list(dict.fromkeys(listed))  # a stream may repeat a key
            found = cold.fetch_many(chunk)
            for key in chunk:
                entry = found.get(key)
                if entry is None or (after is not None and entry.metadata.stored_at < after):
                    continue
                yield {"key": key, "value": entry.value, "version": entry.metadata.version}

    def _event_rows(self, pattern: str, progress: Progress | None) -> Iterator[dict[str, Any]]:
        manager = self._need_manager("The events section")
        t = manager.outbox.table
        regex = None if pattern == "*" else glob_to_regex(pattern)
        columns = [c for c in t.c if c.name != "id"]
        after = 0
        if progress is not None:
            with manager.outbox.engine.connect() as connection:
                total = connection.execute(
                    sa.select(sa.func.count()).where(t.c.status != "delivered")
                ).scalar_one()
            progress("events", 0, int(total))
        while True:
            stmt = (
                sa.select(t.c.id, *columns)
                .where(t.c.id > after, t.c.status != "delivered")
                .order_by(t.c.id)
                .limit(self.chunk_keys)
            )
            with manager.outbox.engine.connect() as connection:
                rows = connection.execute(stmt).mappings().all()
            for row in rows:
                if regex is None or regex.fullmatch(row["state_id"]):
                    yield {c.name: row[c.name] for c in columns}
            if progress is not None:
                progress("events", len(rows), None)
            if len(rows) < self.chunk_keys:
                return
            after = int(rows[-1]["id"])

    # -- listing --------------------------------------------------------------------------

    def list_backups(self) -> list[dict[str, Any]]:
        """The complete backups at the destination, newest first: each manifest's summary
        (``backup_id``, ``created_at``, ``completed_at``, ``incremental``, ``parent_id``,
        ``counts``, ``options``, ``bytes``, ...). A backup that did not finish (no
        manifest) is not listed."""
        self._authorize("backups.list")
        return [_summary(m) for m in list_archives(self.destination, BACKUP_KIND)]

    def get_backup(self, backup_id: str) -> dict[str, Any]:
        """The full manifest of one backup.

        :raises ArchiveNotFoundError: no complete backup has the id.
        """
        self._authorize("backups.list")
        return self._reader(backup_id).manifest

    def delete_backup(self, backup_id: str) -> None:
        """Delete one backup (its manifest first). Retention (``flask state gc``) uses it;
        it does not check whether an incremental backup builds on it."""
        self._authorize("backups.create")
        self._reader(backup_id)  # ArchiveNotFoundError for an unknown id
        delete_archive(self.destination, backup_id)

    def _reader(self, backup_id: str) -> ArchiveReader:
        reader = ArchiveReader(self.destination, backup_id)
        if reader.kind != BACKUP_KIND:
            raise ArchiveNotFoundError(
                backup_id,
                f"{backup_id!r} in {self.destination.url} is a {reader.kind}, not a backup.",
            )
        return reader

    def _chain(self, backup_id: str) -> list[ArchiveReader]:
        """The backup and the ones it builds on, oldest (the full backup) first."""
        chain = [self._reader(backup_id)]
        seen = {backup_id}
        while True:
            parent = chain[-1].manifest.get("parent_id")
            if not parent:
                break
            if parent in seen:
                raise ArchiveNotFoundError(
                    backup_id, f"The parents of backup {backup_id!r} form a loop at {parent!r}."
                )
            try:
                chain.append(self._reader(str(parent)))
            except ArchiveNotFoundError:
                raise ArchiveNotFoundError(
                    backup_id,
                    f"Backup {backup_id!r} is incremental and builds on {parent!r}, which is not "
                    f"in {self.destination.url} (deleted, or never finished); it cannot be "
                    "restored or verified whole.",
                ) from None
            seen.add(str(parent))
        chain.reverse()
        return chain

    # -- verifying ------------------------------------------------------------------------

    def verify_backup(self, backup_id: str, *, progress: Progress | None = None) -> dict[str, Any]:
        """Check a backup: every chunk's checksum, the manifest's counts, each record's
        sha256, the parents of an incremental backup; with the manager, that every
        encrypted state can be opened with the current keys (its data key exists and
        unwraps, and its fields authenticate). Erased states are reported as ``erased``,
        not as errors.

        :returns: ``{"backup_id", "ok", "archive": {...}, "records": n, "problems": [...],
            "encryption": {"states", "readable", "erased", "missing_keys", "unreadable",
            ...}}``; ``ok`` is False on any problem.
        """
        self._authorize("backups.verify")
        reader = self._reader(backup_id)
        manifest = reader.manifest
        problems: list[dict[str, Any]] = []
        try:
            self._chain(backup_id)
        except ArchiveNotFoundError as exc:
            problems.append(_problem(exc.message))
        archive = reader.verify()
        problems.extend(archive["errors"])
        encryption = _KeyCheck(self.manager)
        checked = 0
        by_tier: dict[str, int] = {}
        if archive["ok"]:
            if progress is not None:
                progress("verify", 0, reader.sections.get("records"))
            batch: list[dict[str, Any]] = []
            for item in reader.items("records"):
                checked += 1
                by_tier[item["tier"]] = by_tier.get(item["tier"], 0) + 1
                value = item["value"]
                if hashlib.sha256(value.encode("utf-8")).hexdigest() != item["sha256"]:
                    problems.append(
                        _problem(f"The record of {item['key']!r} differs from its sha256.")
                    )
                    continue
                batch.append(loads(value))
                if len(batch) >= self.chunk_keys:
                    encryption.check(batch)
                    if progress is not None:
                        progress("verify", len(batch), None)
                    batch = []
            encryption.check(batch)
            if progress is not None:
                progress("verify", len(batch), None)
            expected = manifest.get("counts", {}).get("by_tier", {})
            if by_tier != {k: v for k, v in expected.items() if v}:
                problems.append(
                    _problem(f"The records per tier are {by_tier}; the manifest says {expected}.")
                )
        enc = encryption.report()
        if enc["missing_keys"]:
            problems.append(
                _problem(
                    f"{enc['missing_keys']} encrypted states have no data key here (their "
                    f"encrypted fields cannot be read): {', '.join(enc['missing_key_ids'][:10])}."
                )
            )
        if enc["unreadable"]:
            problems.append(
                _problem(
                    f"{enc['unreadable']} encrypted states do not open with the current keys: "
                    f"{', '.join(enc['unreadable_ids'][:10])}."
                )
            )
        return {
            "backup_id": backup_id,
            "ok": not problems,
            "incremental": bool(manifest.get("incremental")),
            "parent_id": manifest.get("parent_id"),
            "archive": archive,
            "records": checked,
            "problems": problems,
            "encryption": enc,
        }

    # -- restoring ------------------------------------------------------------------------

    def restore_backup(
        self,
        backup_id: str,
        *,
        mode: str = "missing",
        tiers: Iterable[str | StateCategory] | None = None,
        dry_run: bool = True,
        actor: str | None = None,
        restore_history: bool = False,
        restore_events: bool = False,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Restore a backup (an incremental one with its whole chain) through the manager's
        write path; a dry run unless ``dry_run=False``.

        :param mode: ``missing`` (only states without a record), ``overwrite-older`` (also
            replace records older than the archived ones) or ``replace`` (every record
            that differs). A newer record is never replaced but in ``replace`` mode; an
            erased state is never brought back.
        :param tiers: only the records the backup found in these tiers (default: all).
        :param actor: recorded in each restored state's history row (the reason names
            the backup).
        :param restore_history: first insert the archived history rows the history table
            lacks (by state id and version), seals as archived.
        :param restore_events: insert the archived undelivered deliveries that are missing.
        :raises ArchiveCorruptError: a chunk of the backup (or of one it builds on) fails
            its checksum: nothing is restored.
        :returns: ``{"backup_id", "chain", "mode", "dry_run", "counts": {outcome: n},
            "history": {...}, "events": {...}, "errors": {state_id: why}, "missing_keys":
            n, "duration_seconds"}``; the outcomes are those of
            :mod:`flask_tiered_state.domain.restore`.
        """
        from ..domain.restore import OUTCOMES, check_mode

        manager = self._need_manager("A restore")
        actor = self._authorize("backups.restore", actor=actor)
        check_mode(mode)
        for name, flag in (("dry_run", dry_run), ("restore_history", restore_history),
                           ("restore_events", restore_events)):  # fmt: skip
            if type(flag) is not bool:
                raise InvalidRequestError(f"{name} must be True or False, not {flag!r}.")
        wanted = None if tiers is None else {c.value for c in _check_tiers(tiers, "tiers")}
        chain = self._chain(backup_id)
        begun = time.perf_counter()
        for reader in chain:  # a damaged archive is refused before anything is written
            checked = reader.verify(deep=False)
            if checked["errors"]:
                first = checked["errors"][0]
                raise ArchiveCorruptError(
                    reader.archive_id, str(first["file"]), first["offset"], first["message"]
                )
        report: dict[str, Any] = {
            "backup_id": backup_id,
            "chain": [r.archive_id for r in chain],
            "mode": mode,
            "dry_run": dry_run,
            "counts": dict.fromkeys(OUTCOMES, 0),
            "history": None,
            "events": None,
            "errors": {},
            "missing_keys": 0,
        }
        if restore_history:
            report["history"] = self._restore_rows(
                chain, "history", dry_run, progress, _HistoryInserter(manager)
            )
            report["history_archive"] = self._restore_rows(
                chain, "history_archive", dry_run, progress,
                _ChunkInserter(self.repositories.cold),
            )  # fmt: skip
        reason = f"restore from backup {backup_id}"
        total = sum(r.sections.get("records", 0) for r in chain)
        if progress is not None:
            progress("records", 0, total)
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            result = manager.restore_records(
                batch, mode=mode, actor=actor, reason=reason, dry_run=dry_run
            )
            for outcome, number in result.counts.items():
                report["counts"][outcome] += number
            for state_id, why in result.errors.items():
                if len(report["errors"]) < _LIST_LIMIT:
                    report["errors"][state_id] = why
            report["missing_keys"] += len(result.missing_keys)
            if progress is not None:
                progress("records", len(batch), None)
            batch.clear()

        with _KeyIndex() as seen:
            for reader in reversed(chain):  # the newest copy of a state wins
                for items in _chunked(reader.items("records"), self.chunk_keys):
                    fresh = seen.add_new([i["key"] for i in items]) if len(chain) > 1 else None
                    for item in items:
                        if fresh is not None and item["key"] not in fresh:
                            continue
                        if wanted is not None and item["tier"] not in wanted:
                            continue
                        record = _archived_record(item)
                        if record is None:
                            report["counts"]["failed"] += 1
                            if len(report["errors"]) < _LIST_LIMIT:
                                report["errors"][item["key"]] = "not a state's record"
                            continue
                        batch.append(record)
                        if len(batch) >= self.chunk_keys:
                            flush()
            if batch:
                flush()
        if restore_events:
            report["events"] = self._restore_rows(
                chain, "events", dry_run, progress, _EventInserter(manager)
            )
        report["duration_seconds"] = round(time.perf_counter() - begun, 3)
        return report

    def _restore_rows(
        self,
        chain: Sequence[ArchiveReader],
        section: str,
        dry_run: bool,
        progress: Progress | None,
        inserter: _RowInserter | _ChunkInserter,
    ) -> dict[str, int]:
        counts = {"archived": 0, "inserted": 0, "present": 0}
        if progress is not None:
            progress(section, 0, sum(r.sections.get(section, 0) for r in chain))
        for reader in chain:
            if section not in reader.sections:
                continue
            for rows in _chunked(reader.items(section), self.chunk_keys):
                inserted = inserter.insert(rows, dry_run=dry_run)
                counts["archived"] += len(rows)
                counts["inserted"] += inserted
                counts["present"] += len(rows) - inserted
                if progress is not None:
                    progress(section, len(rows), None)
        return counts


# --------------------------------------------------------------------------- records scan


class _RecordScan:
    """The records section: lists the keys of every tier into an index on disk, then
    reads them back in key order, a chunk at a time, and yields the best copy of each."""

    def __init__(
        self,
        owner: BackupManager,
        tiers: Sequence[StateCategory],
        types: set[str] | None,
        pattern: str,
        since: str | None,
        progress: Progress | None,
    ) -> None:
        self.owner = owner
        self.tiers = tiers
        self.types = types
        self.pattern = pattern
        self.since = since
        self.progress = progress
        self.by_tier: dict[str, int] = {c.value: 0 for c in tiers}
        self.by_type: dict[str, int] = {}
        self.records = self.tombstones = self.duplicates = 0
        self.corrupt: list[str] = []
        self.vanished = self.unchanged = 0
        self.max_version = self.versions_total = 0
        self.max_updated_at: str | None = None

    def counts(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "by_tier": self.by_tier,
            "by_type": self.by_type,
            "tombstones": self.tombstones,
            "duplicates": self.duplicates,
            "corrupt_copies": len(self.corrupt),
            "corrupt_keys": self.corrupt[:_LIST_LIMIT],
            "vanished": self.vanished,
            "unchanged_since_parent": self.unchanged,
            "max_version": self.max_version,
            "versions_total": self.versions_total,
            "max_updated_at": self.max_updated_at,
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        repositories = self.owner.repositories
        with _KeyIndex() as index:
            for category in self.tiers:
                # a stream: the index removes the duplicates it may hold
                keys = repositories.by_category(category).scan_keys(KEY_PREFIX + self.pattern)
                index.add_tier(keys, _BIT[category])
            total = index.count()
            if self.progress is not None:
                self.progress("records", 0, total)
            for chunk in index.chunks(self.owner.chunk_keys):
                yield from self._chunk(chunk)
                if self.progress is not None:
                    self.progress("records", len(chunk), None)

    def _fetch(self, category: StateCategory, keys: Sequence[str]) -> dict[str, StoredValue]:
        repository = self.owner.repositories.by_category(category)
        return fetch_readable(
            repository, keys, lambda key: self.corrupt.append(f"{category.value}:{key}")
        )

    def _chunk(self, chunk: Sequence[tuple[str, int]]) -> Iterator[dict[str, Any]]:
        copies: dict[str, list[tuple[StateCategory, StoredValue]]] = {}
        for category in self.tiers:
            wanted = [key for key, bits in chunk if bits & _BIT[category]]
            if wanted:
                for key, value in self._fetch(category, wanted).items():
                    copies.setdefault(key, []).append((category, value))
        lost = [key for key, _ in chunk if key not in copies]
        if lost:  # moved (or deleted) since the listing: look in every tier
            for category in self.tiers:
                for key, value in self._fetch(category, lost).items():
                    copies.setdefault(key, []).append((category, value))
        for key, _ in chunk:
            found = copies.get(key)
            if not found:
                self.vanished += 1
                continue
            item = self._best(key, found)
            if item is not None:
                yield item

    def _best(
        self, key: str, found: list[tuple[StateCategory, StoredValue]]
    ) -> dict[str, Any] | None:
        parsed: list[tuple[int, int, StateCategory, StoredValue, Any]] = []
        home: StateCategory | None = None
        for category, value in found:
            try:
                record = loads(value.value)
            except ValueError:
                record = None
            version = record.get("version") if isinstance(record, dict) else None
            if type(version) is not int:
                version = value.metadata.version
            if home is None and isinstance(record, dict):
                home = self.owner._home(record.get("type"))
            parsed.append((version, 0, category, value, record))
        order = (home, *_TIE_ORDER) if home is not None else _TIE_ORDER
        parsed = [(v, -order.index(c), c, s, r) for v, _, c, s, r in parsed]
        version, _, category, stored, record = max(parsed, key=lambda p: (p[0], p[1]))
        if len(found) > 1:
            self.duplicates += 1
        type_name = record.get("type") if isinstance(record, dict) else None
        if self.types is not None and type_name not in self.types:
            return None
        updated_at = record.get("updated_at") if isinstance(record, dict) else None
        if self.since is not None and isinstance(updated_at, str) and updated_at < self.since:
            self.unchanged += 1
            return None
        self.records += 1
        self.by_tier[category.value] += 1
        name = type_name if isinstance(type_name, str) else "?"
        self.by_type[name] = self.by_type.get(name, 0) + 1
        if isinstance(record, dict) and record.get("status") == "deleted":
            self.tombstones += 1
        self.max_version = max(self.max_version, version)
        self.versions_total += version
        if isinstance(updated_at, str) and (
            self.max_updated_at is None or updated_at > self.max_updated_at
        ):
            self.max_updated_at = updated_at
        metadata = stored.metadata
        return {
            "key": key,
            "state_id": key[len(KEY_PREFIX) :],
            "type": type_name,
            "tier": category.value,
            "version": version,
            "storage_version": metadata.version,
            "sha256": metadata.checksum,
            "stored_at": metadata.stored_at,
            "ttl_seconds": metadata.ttl_seconds,
            "value": stored.value,
        }


class _KeyIndex:
    """Keys (and the tiers holding them) in a temporary SQLite file: the backup's memory
    stays flat however many keys there are."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="tiered-state-backup-")
        self._db = sqlite3.connect(os.path.join(self._folder.name, "keys.sqlite3"))
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("CREATE TABLE keys (key TEXT PRIMARY KEY, tiers INTEGER NOT NULL)")

    def __enter__(self) -> _KeyIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self._db.close()
        self._folder.cleanup()

    def add_tier(self, keys: Iterable[str], bit: int) -> None:
        sql = (
            "INSERT INTO keys (key, tiers) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET tiers = tiers | excluded.tiers"
        )
        batch: list[tuple[str, int]] = []
        for key in keys:
            batch.append((key, bit))
            if len(batch) >= 5000:
                self._db.executemany(sql, batch)
                batch.clear()
        if batch:
            self._db.executemany(sql, batch)
        self._db.commit()

    def add_new(self, keys: Sequence[str]) -> set[str]:
        """Add ``keys``; those that were not there yet."""
        before = self._db.total_changes
        fresh: set[str] = set()
        for key in keys:
            self._db.execute("INSERT OR IGNORE INTO keys (key, tiers) VALUES (?, 0)", (key,))
            if self._db.total_changes != before:
                fresh.add(key)
                before = self._db.total_changes
        return fresh

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM keys").fetchone()[0])

    def chunks(self, size: int) -> Iterator[list[tuple[str, int]]]:
        after = ""
        while True:
            rows = self._db.execute(
                "SELECT key, tiers FROM keys WHERE key > ? ORDER BY key LIMIT ?", (after, size)
            ).fetchall()
            if not rows:
                return
            yield [(str(k), int(b)) for k, b in rows]
            after = rows[-1][0]


# --------------------------------------------------------------------------- restoring rows


class _RowInserter:
    """Inserts archived rows a table lacks."""

    table: sa.Table
    engine: sa.Engine
    conflict: tuple[str, ...]

    def insert(self, rows: Sequence[dict[str, Any]], *, dry_run: bool) -> int:
        """How many of ``rows`` were missing (and, unless ``dry_run``, are inserted now)."""
        values = [self.values(r) for r in rows]
        t = self.table
        if dry_run:
            return len(values) - self._present(values)
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        stmt = insert(t).on_conflict_do_nothing(index_elements=[t.c[n] for n in self.conflict])
        with self.engine.begin() as connection:
            before = self._present(values, connection)
            connection.execute(stmt, values)
            after = self._present(values, connection)
        return after - before

    def _present(self, values: Sequence[dict[str, Any]], connection: Any = None) -> int:
        t = self.table
        first, second = self.conflict
        firsts = sorted({v[first] for v in values})
        wanted = {(v[first], v[second]) for v in values}
        if not firsts:
            return 0
        stmt = sa.select(t.c[first], t.c[second]).where(t.c[first].in_(firsts))
        if connection is None:
            with self.engine.connect() as own:
                found = {tuple(r) for r in own.execute(stmt)}
        else:
            found = {tuple(r) for r in connection.execute(stmt)}
        return len(wanted & found)

    def values(self, row: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class _ChunkInserter:
    """Stores archived history chunks the COLD tier lacks, with their versions."""

    def __init__(self, cold: StateRepository) -> None:
        self.cold = cold

    def insert(self, rows: Sequence[dict[str, Any]], *, dry_run: bool) -> int:
        present = self.cold.fetch_many([r["key"] for r in rows])
        missing = [r for r in rows if r["key"] not in present]
        if missing and not dry_run:
            self.cold.store_many(
                [WriteRequest(r["key"], r["value"], version=r["version"]) for r in missing]
            )
        return len(missing)


class _HistoryInserter(_RowInserter):
    conflict = ("state_id", "version")

    def __init__(self, manager: StateManager) -> None:
        self.table = manager.history.table
        self.engine = manager.history.engine

    def values(self, row: Mapping[str, Any]) -> dict[str, Any]:
        columns = [c.name for c in self.table.c if c.name != "id"]
        out = {name: row.get(name) for name in columns}
        out["created_at"] = datetime.fromisoformat(str(row["created_at"]))
        return out


class _EventInserter(_RowInserter):
    conflict = ("event_id", "callback")

    def __init__(self, manager: StateManager) -> None:
        self.table = manager.outbox.table
        self.engine = manager.outbox.engine

    def values(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {c.name: row.get(c.name) for c in self.table.c if c.name != "id"}


# --------------------------------------------------------------------------- encryption


class _KeyCheck:
    """Whether the encrypted states of a backup open with the current keys."""

    def __init__(self, manager: StateManager | None) -> None:
        self.manager = manager
        self.states = self.readable = 0
        self.erased: list[str] = []
        self.missing: list[str] = []
        self.unreadable: list[str] = []
        self.counts = {"erased": 0, "missing_keys": 0, "unreadable": 0}
        #: States of a type that encrypts fields, written before it did (no data key, no
        #: encrypted field): read as they are, not a problem.
        self.plaintext = 0

    def check(self, records: Sequence[Any]) -> None:
        manager = self.manager
        if manager is None or not records:
            return
        cipher = manager.cipher
        encrypted = [r for r in records if isinstance(r, dict) and cipher.paths_of(r.get("type"))]
        if not encrypted:
            return
        data_keys = manager.data_keys
        if data_keys is None:
            sealed = [r["state_id"] for r in encrypted if cipher.holds_ciphertext(r)]
            self.states += len(sealed)
            self.plaintext += len(encrypted) - len(sealed)
            self._note("missing_keys", self.missing, sealed)
            return
        t = data_keys.table
        ids = [r["state_id"] for r in encrypted]
        with data_keys.engine.connect() as connection:
            rows = connection.execute(
                sa.select(t.c.state_id, t.c.wrapped_key).where(t.c.state_id.in_(ids))
            ).all()
        live = {state_id for state_id, wrapped in rows if wrapped is not None}
        erased = [state_id for state_id, wrapped in rows if wrapped is None]
        self._note("erased", self.erased, erased)
        known = {state_id for state_id, _ in rows}
        keyless = [r for r in encrypted if r["state_id"] not in known]
        missing = [r["state_id"] for r in keyless if cipher.holds_ciphertext(r)]
        self._note("missing_keys", self.missing, missing)
        plaintext = len(keyless) - len(missing)
        self.plaintext += plaintext
        self.states += len(encrypted) - plaintext
        openable = [r for r in encrypted if r["state_id"] in live]
        try:
            cipher.open_many(openable)
            self.readable += len(openable)
        except EncryptionKeyError:
            for record in openable:
                try:
                    cipher.open_many([record])
                    self.readable += 1
                except EncryptionKeyError:
                    self._note("unreadable", self.unreadable, [record["state_id"]])

    def _note(self, what: str, ids: list[str], new: Sequence[str]) -> None:
        self.counts[what] += len(new)
        ids.extend(new[: max(0, _LIST_LIMIT - len(ids))])

    def report(self) -> dict[str, Any]:
        return {
            "checked": self.manager is not None,
            "states": self.states,
            "readable": self.readable,
            "plaintext": self.plaintext,
            **self.counts,
            "erased_ids": self.erased,
            "missing_key_ids": self.missing,
            "unreadable_ids": self.unreadable,
        }


# --------------------------------------------------------------------------- helpers


def _describe(repository: Any) -> dict[str, Any]:
    """A tier's backend and where it is, without credentials."""
    out: dict[str, Any] = {"backend": repository.backend}
    for name in (
        "location",
        "key_prefix",
        "bucket",
        "prefix",
        "endpoint_url",
        "storage_class",
        "root",
    ):
        value = getattr(repository, name, None)
        if isinstance(value, (str, int, os.PathLike)) and not isinstance(value, bool):
            out[name] = os.fspath(value) if isinstance(value, os.PathLike) else value
    engine = getattr(repository, "engine", None)
    url = getattr(engine, "url", None)
    if url is not None and hasattr(url, "render_as_string"):
        out["database"] = url.render_as_string(hide_password=True)
    table_name = getattr(getattr(repository, "table", None), "name", None)
    if isinstance(table_name, str):
        out["table"] = table_name
    return out


def _summary(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A manifest without its chunk lists: what listings show."""
    sections = manifest.get("sections", {})
    size = sum(int(c["bytes"]) for s in sections.values() for c in s.get("chunks", []))
    return {
        "backup_id": manifest.get("backup_id") or manifest.get("archive_id"),
        "archive_id": manifest.get("archive_id"),
        "created_at": manifest.get("created_at"),
        "completed_at": manifest.get("completed_at"),
        "incremental": bool(manifest.get("incremental")),
        "parent_id": manifest.get("parent_id"),
        "since": manifest.get("since"),
        "options": manifest.get("options"),
        "counts": manifest.get("counts"),
        "sections": {name: int(s.get("items", 0)) for name, s in sections.items()},
        "bytes": size,
        "duration_seconds": manifest.get("duration_seconds"),
        "source": manifest.get("source"),
    }


def _problem(message: str) -> dict[str, Any]:
    """A problem of a verification that is not in a file of the archive."""
    return {"file": None, "offset": None, "message": message}


def _json(value: Any) -> Any:
    return loads(value) if isinstance(value, (str, bytes)) else value


def _stored_time(moment: Any) -> str:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:  # SQLite keeps no offset; every stored time is UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return _iso(moment)


def _archived_record(item: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored record of an archived item (None: not a state's record)."""
    try:
        record = loads(item["value"])
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(record, dict) or "state_id" not in record:
        return None
    return record


def _chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch

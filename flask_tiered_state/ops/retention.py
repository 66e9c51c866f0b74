"""Retention: what ``flask state gc`` keeps, archives and removes.

Three kinds of data grow without end unless something prunes them:

**History rows.** ``TIERED_STATE_HISTORY_RETENTION`` maps a state type (or ``"*"``, every
type not listed) to a policy: ``{"versions": N}`` keeps each state's newest N versions,
``{"days": D}`` the versions committed in the last D days, and both keep what either
keeps. Older rows are *archived*, not lost: written to the COLD tier as compressed chunks
(:mod:`flask_tiered_state.domain.history_archive`), checked there, and only then deleted
from the history table, so that ``get_state_history(state_id, include_archived=True)``,
``get_state(state_id, as_of=...)``, ``rollback_state`` and ``diff_versions`` still read
them, and ``flask state audit verify`` still verifies them (their seals travel with them).
Some rows always stay in the table, whatever the policy:

- each state's version 1 (the table's unique ``(state_id, version)`` index is what keeps
  a state id from being registered twice) and its last version (the current record's
  link in the audit chain);
- every row an undelivered event still needs: a pending or dead delivery of the outbox
  reads its event from its history row (and from that version on, so that what stays is
  one run of versions).

Types without a policy (and no ``"*"``) keep their whole history.

**Delivered events.** Delivered deliveries and finished timers older than
``TIERED_STATE_EVENT_RETENTION_SECONDS``, as the dispatcher prunes them.

**Backups.** ``TIERED_STATE_BACKUP_RETENTION`` (``{"count": N, "days": D}``) keeps the
newest N backups and those younger than D days (both: what either keeps); the newest
backup, and the backups a kept incremental backup builds on, are always kept.

:class:`GarbageCollector` applies all three; by default it is a dry run that changes
nothing and reports what it would do. A run is idempotent and can be stopped at any
time: rows are deleted only after their chunk is in COLD and read back, chunk by chunk,
and a row changed meanwhile (sealed by ``flask state audit seal``) is left for the next
run. Two runs at once are safe (the second finds the rows gone and leaves them).

.. versionadded:: 0.15
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import sqlalchemy as sa

from .. import setting_values as values
from ..domain.history_archive import archived_line, chunk_key, pack_lines
from ..errors import ConfigurationError, IntegrityError, InvalidRequestError
from ..storage.base import WriteRequest, checksum_of

if TYPE_CHECKING:
    from ..domain.manager import StateManager

__all__ = [
    "ANY_TYPE",
    "BackupCatalog",
    "BackupPolicy",
    "GarbageCollector",
    "GcReport",
    "HistoryCounts",
    "HistoryPolicy",
    "backup_retention_setting",
    "history_retention_setting",
]

logger = logging.getLogger("flask_tiered_state.ops.retention")

#: The policy key of every type a retention setting does not name.
ANY_TYPE = "*"
DAY = 86400.0
#: Rows per archived chunk, and about the most bytes of JSON in one.
DEFAULT_CHUNK_ROWS = 1000
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
#: Rows read (and archived) together, and the most version ranges in one read.
BATCH_ROWS = 5000
BATCH_RANGES = 400


# --------------------------------------------------------------------------- policies


def _policy(
    key: str, whole: object, where: str, given: object, counted: str
) -> dict[str, int | float]:
    """One policy of a retention setting checked: ``{counted: N, "days": D}`` (one or
    both); errors quote the ``whole`` setting and say ``where`` the bad part is."""
    if not isinstance(given, Mapping) or not given or set(given) - {counted, "days"}:
        raise values.fail(
            key, whole,
            f'{where}a mapping with "{counted}" (an integer >= 1), "days" (a number > 0) or '
            f'both, e.g. {{"{counted}": 100, "days": 30}}',
        )  # fmt: skip
    out: dict[str, int | float] = {}
    if counted in given:
        number = given[counted]
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise values.fail(key, whole, f"{where}{counted!r}: an integer >= 1")
        out[counted] = number
    if "days" in given:
        days = given["days"]
        if (
            isinstance(days, bool)
            or not isinstance(days, (int, float))
            or not math.isfinite(days)
            or days <= 0
        ):
            raise values.fail(key, whole, f"{where}'days': a number of days > 0")
        out["days"] = float(days)
    return out


def history_retention_setting(key: str, value: object) -> dict[str, dict[str, int | float]]:
    """``TIERED_STATE_HISTORY_RETENTION`` checked: a mapping (or its JSON text) of type
    names, or ``"*"``, to ``{"versions": N, "days": D}`` (one or both); {} keeps all."""
    expected = (
        'a mapping of state type names (or "*" for the others) to {"versions": N, "days": D}'
        ', e.g. {"session": {"days": 30}, "*": {"versions": 1000}}'
    )
    mapping = values.json_mapping(key, value, expected)
    out: dict[str, dict[str, int | float]] = {}
    for name, given in mapping.items():
        if not isinstance(name, str) or not name:
            raise values.fail(key, value, expected)
        out[name] = _policy(key, value, f"for {name!r}, ", given, "versions")
    return out


def backup_retention_setting(key: str, value: object) -> dict[str, int | float]:
    """``TIERED_STATE_BACKUP_RETENTION`` checked: ``{"count": N, "days": D}`` (one or
    both), or its JSON text; {} (or None) keeps every backup."""
    mapping = values.json_mapping(key, value, '{"count": N, "days": D}')
    return _policy(key, value, "", mapping, "count") if mapping else {}


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """How much of each state's history stays in the history table: its newest
    ``versions`` versions, and the versions of the last ``days`` days (either given, or
    both: a row either keeps stays)."""

    versions: int | None = None
    days: float | None = None

    @classmethod
    def of(cls, given: HistoryPolicy | Mapping[str, Any], where: str) -> HistoryPolicy:
        if isinstance(given, HistoryPolicy):
            return given
        checked = _policy(where, given, "", given, "versions")
        versions = checked.get("versions")
        return cls(None if versions is None else int(versions), checked.get("days"))

    def describe(self) -> str:
        parts = []
        if self.versions is not None:
            parts.append(f"{self.versions} version{'s' if self.versions != 1 else ''}")
        if self.days is not None:
            parts.append(f"{self.days:g} day{'s' if self.days != 1 else ''}")
        return " or ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"versions": self.versions, "days": self.days}


@dataclass(frozen=True, slots=True)
class BackupPolicy:
    """Which backups stay: the newest ``count``, and those of the last ``days`` days."""

    count: int | None = None
    days: float | None = None

    @classmethod
    def of(cls, given: BackupPolicy | Mapping[str, Any], where: str) -> BackupPolicy:
        if isinstance(given, BackupPolicy):
            return given
        checked = _policy(where, given, "", given, "count")
        count = checked.get("count")
        return cls(None if count is None else int(count), checked.get("days"))

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "days": self.days}


@runtime_checkable
class BackupCatalog(Protocol):
    """What the collector needs of the backups (a
    :class:`~flask_tiered_state.ops.backup.BackupManager`)."""

    def list_backups(self) -> list[dict[str, Any]]:
        """The manifests of the complete backups, newest first."""
        ...

    def delete_backup(self, backup_id: str) -> None:
        """Delete one backup."""
        ...


# --------------------------------------------------------------------------- the report


@dataclass(slots=True)
class HistoryCounts:
    """What a run did (or would do) to the history of one state type.

    ``states``: states of the type looked at; ``states_archived``: those with rows
    archived; ``rows_archived``: rows moved to COLD and deleted from the table;
    ``rows_held``: rows the policy would archive that an undelivered event keeps;
    ``rows_skipped``: rows left because they changed during the run or a version is
    missing around them (``flask state audit verify`` tells); ``chunks`` and ``bytes``:
    the chunks written to COLD and their size.
    """

    policy: HistoryPolicy | None = None
    states: int = 0
    states_archived: int = 0
    rows_archived: int = 0
    rows_held: int = 0
    rows_skipped: int = 0
    chunks: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": None if self.policy is None else self.policy.to_dict(),
            "states": self.states,
            "states_archived": self.states_archived,
            "rows_archived": self.rows_archived,
            "rows_held": self.rows_held,
            "rows_skipped": self.rows_skipped,
            "chunks": self.chunks,
            "bytes": self.bytes,
        }


@dataclass(slots=True)
class GcReport:
    """What :meth:`GarbageCollector.run` did, or would do (``dry_run``)."""

    dry_run: bool
    history: dict[str, HistoryCounts] = field(default_factory=dict)
    deliveries_pruned: int | None = None
    timers_pruned: int | None = None
    backups_removed: list[str] | None = None
    backups_kept: int | None = None
    seconds: float = 0.0

    def counts(self, type_name: str, policy: HistoryPolicy | None) -> HistoryCounts:
        found = self.history.get(type_name)
        if found is None:
            found = self.history[type_name] = HistoryCounts(policy)
        return found

    @property
    def rows_archived(self) -> int:
        return sum(c.rows_archived for c in self.history.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "history": {name: c.to_dict() for name, c in sorted(self.history.items())},
            "rows_archived": self.rows_archived,
            "deliveries_pruned": self.deliveries_pruned,
            "timers_pruned": self.timers_pruned,
            "backups_removed": self.backups_removed,
            "backups_kept": self.backups_kept,
            "seconds": round(self.seconds, 3),
        }


# --------------------------------------------------------------------------- the collector


@dataclass(frozen=True, slots=True)
class _Plan:
    """The rows ``first`` to ``last`` of ``state_id`` go to COLD."""

    state_id: str
    type_name: str
    first: int
    last: int


@dataclass(slots=True)
class _Chunk:
    plan: _Plan
    key: str
    value: str
    rows: list[tuple[int, str | None]]  # (row id, seal) as read


class GarbageCollector:
    """Applies the retention settings to one manager's data (see the module doc).

    :param manager: the :class:`~flask_tiered_state.domain.manager.StateManager`.
    :param history: type name (or ``"*"``) -> :class:`HistoryPolicy` or its mapping;
        None or {}: keep every row.
    :param event_retention_seconds: prune delivered deliveries and finished timers older
        than this; None: leave them (the dispatcher prunes them too).
    :param backups: the backups (a :class:`BackupCatalog`), with ``backup_policy``.
    :param backup_policy: :class:`BackupPolicy` or its mapping; None: keep every backup.
    :param clock: seconds since the epoch (tests move it).
    :param page_rows: about the most history rows planned per page of states (a page
        ends with the state its last row belongs to, whole).
    :param chunk_rows: the most rows per archived chunk.
    :param chunk_bytes: about the most bytes of JSON per chunk.
    :raises ConfigurationError: a policy names a type the manager does not know, or a
        value is not a policy.
    """

    def __init__(
        self,
        manager: StateManager,
        *,
        history: Mapping[str, HistoryPolicy | Mapping[str, Any]] | None = None,
        event_retention_seconds: float | None = None,
        backups: BackupCatalog | None = None,
        backup_policy: BackupPolicy | Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
        page_rows: int = 5000,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        self.manager = manager
        self.table = manager.history.table
        self.engine = manager.history.engine
        self.cold = manager.get_repositories().cold
        known = set(manager.types.names())
        self.policies: dict[str, HistoryPolicy] = {}
        for name, given in (history or {}).items():
            if name != ANY_TYPE and name not in known:
                raise ConfigurationError(
                    f"The history retention names the type {name!r}, which is not registered; "
                    f"the types are {', '.join(sorted(known))} (and '*' for every other).",
                    details={"key": "TIERED_STATE_HISTORY_RETENTION", "type": name},
                )
            self.policies[name] = HistoryPolicy.of(given, f"history retention of {name!r}")
        if event_retention_seconds is not None:
            values.seconds("event_retention_seconds", event_retention_seconds)
        self.event_retention_seconds = event_retention_seconds
        if backup_policy is not None and not isinstance(backup_policy, BackupPolicy):
            backup_policy = (
                BackupPolicy.of(backup_policy, "backup retention") if backup_policy else None
            )
        self.backup_policy = backup_policy
        if backups is not None and not isinstance(backups, BackupCatalog):
            raise ConfigurationError(
                f"backups must have list_backups() and delete_backup(id) (a BackupManager), "
                f"not {type(backups).__name__}."
            )
        self.backups = backups
        self.clock = clock
        for name, number in (("page_rows", page_rows), ("chunk_rows", chunk_rows),
                             ("chunk_bytes", chunk_bytes)):  # fmt: skip
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise InvalidRequestError(f"{name} must be an integer >= 1, not {number!r}.")
        self.page_rows = page_rows
        self.chunk_rows = chunk_rows
        self.chunk_bytes = chunk_bytes

    def policy_for(self, type_name: str | None) -> HistoryPolicy | None:
        """The history policy of a type (``"*"``'s when it has none of its own)."""
        if type_name is not None and type_name in self.policies:
            return self.policies[type_name]
        return self.policies.get(ANY_TYPE)

    def count_states(self) -> int:
        """How many states have history rows (the length of a run's progress)."""
        t = self.table
        with self.engine.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count(sa.distinct(t.c.state_id)))).scalar_one()
            )

    # -- the run -------------------------------------------------------------------

    def run(
        self, *, dry_run: bool = True, progress: Callable[[int], None] | None = None
    ) -> GcReport:
        """Apply every retention (``dry_run``: only report what would be done).

        :param progress: called with the number of states looked at, as it goes.
        """
        if type(dry_run) is not bool:
            raise InvalidRequestError(f"dry_run must be True or False, not {dry_run!r}.")
        started = time.perf_counter()
        now = self.clock()
        report = GcReport(dry_run=dry_run)
        if self.policies:
            for plans in self._plan(now, report, progress):
                if not dry_run and plans:
                    self._archive(plans, report)
        elif progress is not None:
            progress(self.count_states())
        if self.event_retention_seconds is not None:
            self._prune_events(now - self.event_retention_seconds, report, dry_run)
        if self.backups is not None and self.backup_policy is not None:
            self._prune_backups(now, report, dry_run)
        report.seconds = time.perf_counter() - started
        logger.info(
            "gc%s: %d history rows archived, %s deliveries and %s timers pruned, %s backups "
            "removed in %.2f s",
            " (dry run)" if dry_run else "", report.rows_archived, report.deliveries_pruned,
            report.timers_pruned,
            None if report.backups_removed is None else len(report.backups_removed),
            report.seconds,
        )  # fmt: skip
        return report

    # -- history: planning ------------------------------------------------------------

    def _pages(self) -> Iterator[list[tuple[str, int | None, int, str | None]]]:
        """``(state_id, lowest version above 1, highest version, type)`` of every state
        with history, a page of states at a time, in state id order."""
        t = self.table
        after: str | None = None
        while True:
            # The page's end first: the state id ``page_rows`` rows on, in the order of
            # the unique (state_id, version) index, which any database reads up to there
            # and no further; then the aggregates of that range only (a LIMIT over a
            # GROUP BY may aggregate every state after the page before sorting).
            ids = sa.select(t.c.state_id).order_by(t.c.state_id, t.c.version)
            if after is not None:
                ids = ids.where(t.c.state_id > after)
            with self.engine.connect() as conn:
                found = list(conn.execute(ids.limit(self.page_rows)).scalars())
                if not found:
                    return
                span = [t.c.state_id <= found[-1]]
                if after is not None:
                    span.append(t.c.state_id > after)
                # a state's type never changes: any of its rows names it
                stmt = (
                    sa.select(
                        t.c.state_id,
                        sa.func.min(sa.case((t.c.version > 1, t.c.version))),
                        sa.func.max(t.c.version),
                        sa.func.min(t.c.new_record["type"].as_string()),
                    )
                    .where(*span)
                    .group_by(t.c.state_id)
                    .order_by(t.c.state_id)
                )
                rows = [
                    (str(s), None if low is None else int(low), int(high), kind)
                    for s, low, high, kind in conn.execute(stmt)
                ]
            yield rows
            if len(found) < self.page_rows:
                return
            after = found[-1]

    def _plan(
        self, now: float, report: GcReport, progress: Callable[[int], None] | None
    ) -> Iterator[list[_Plan]]:
        """The rows to archive, a page of states at a time (counted in ``report``)."""
        t = self.table
        d = self.manager.outbox.table
        for page in self._pages():
            candidates: list[tuple[str, int, int, str, HistoryPolicy]] = []
            for state_id, low, high, kind in page:
                type_name = kind if kind is not None else "?"
                policy = self.policy_for(kind)
                report.counts(type_name, policy).states += 1
                if policy is not None and low is not None and low < high:
                    candidates.append((state_id, low, high, type_name, policy))
            if progress is not None:
                progress(len(page))
            if not candidates:
                yield []
                continue
            ids = [c[0] for c in candidates]
            # per state, the first version of the last `days` days
            recent: dict[str, int] = {}
            by_days: dict[float, list[str]] = {}
            for state_id, _, _, _, policy in candidates:
                if policy.days is not None:
                    by_days.setdefault(policy.days, []).append(state_id)
            with self.engine.connect() as conn:
                for days, members in by_days.items():
                    cutoff = datetime.fromtimestamp(now - days * DAY, timezone.utc)
                    stmt = (
                        sa.select(t.c.state_id, sa.func.min(t.c.version))
                        .where(t.c.state_id.in_(members), t.c.created_at >= cutoff)
                        .group_by(t.c.state_id)
                    )
                    recent.update((s, int(v)) for s, v in conn.execute(stmt))
                # an undelivered event reads its history row: from there on, rows stay
                held_stmt = (
                    sa.select(d.c.state_id, sa.func.min(d.c.version))
                    .where(d.c.state_id.in_(ids), d.c.status != "delivered")
                    .group_by(d.c.state_id)
                )
                held = {s: int(v) for s, v in conn.execute(held_stmt)}
            plans: list[_Plan] = []
            for state_id, low, high, type_name, policy in candidates:
                keeps = []
                if policy.versions is not None:
                    keeps.append(high - policy.versions + 1)
                if policy.days is not None:
                    keeps.append(recent.get(state_id, high + 1))
                first_kept = min(min(keeps), high)
                counts = report.counts(type_name, policy)
                hold = held.get(state_id)
                if hold is not None and hold < first_kept:
                    counts.rows_held += first_kept - max(hold, low)
                    first_kept = hold
                if first_kept <= low:
                    continue
                counts.states_archived += 1
                counts.rows_archived += first_kept - low
                plans.append(_Plan(state_id, type_name, low, first_kept - 1))
            yield plans

    # -- history: archiving -------------------------------------------------------------

    def _archive(self, plans: Sequence[_Plan], report: GcReport) -> None:
        """Move the planned rows: read them (``chunk_rows`` at a time), write their
        chunks to COLD, read those back, delete the rows. ``report`` counted the plans as
        archived; what could not be is moved to ``rows_skipped``."""
        batch: list[tuple[_Plan, int, int]] = []
        size = 0
        for plan in plans:
            start = plan.first
            while start <= plan.last:
                end = min(plan.last, start + self.chunk_rows - 1)
                rows = end - start + 1
                if batch and (size + rows > BATCH_ROWS or len(batch) >= BATCH_RANGES):
                    self._archive_batch(batch, report)
                    batch, size = [], 0
                batch.append((plan, start, end))
                size += rows
                start = end + 1
        if batch:
            self._archive_batch(batch, report)

    def _skip(self, report: GcReport, plan: _Plan, rows: int, why: str) -> None:
        counts = report.counts(plan.type_name, self.policy_for(plan.type_name))
        counts.rows_archived -= rows
        counts.rows_skipped += rows
        logger.warning("gc left %d history rows of %r: %s", rows, plan.state_id, why)

    def _archive_batch(self, batch: Sequence[tuple[_Plan, int, int]], report: GcReport) -> None:
        t = self.table
        # a UNION ALL of index range scans: an OR of the ranges is a full scan on SQLite
        # the records as their JSON text: copied into the chunks without parsing them
        columns = [
            sa.cast(c, sa.Text).label(c.name) if c.name in ("old_record", "new_record") else c
            for c in t.c
        ]
        ranges = sa.union_all(
            *(sa.select(*columns)
              .where(t.c.state_id == plan.state_id, t.c.version.between(first, last))
              for plan, first, last in batch)
        ).subquery("ranges")  # fmt: skip
        stmt = sa.select(ranges).order_by(ranges.c.state_id, ranges.c.version)
        with self.engine.connect() as conn:
            read = conn.execute(stmt).mappings().all()
        by_state: dict[str, list[Any]] = {}
        for row in read:
            by_state.setdefault(row["state_id"], []).append(row)
        chunks: list[_Chunk] = []
        for plan, first, last in batch:
            rows = [r for r in by_state.get(plan.state_id, ()) if first <= r["version"] <= last]
            if [int(r["version"]) for r in rows] != list(range(first, last + 1)):
                missing = f"versions {first} to {last} are not all in the history table"
                self._skip(report, plan, last - first + 1, missing)
                continue
            chunks.extend(self._chunks(plan, rows))
        if not chunks:
            return
        self.cold.store_many([WriteRequest(c.key, c.value, version=1) for c in chunks])
        stored = self.cold.fetch_many([c.key for c in chunks])
        verified = []
        for chunk in chunks:
            hit = stored.get(chunk.key)
            if hit is None or hit.metadata.checksum != checksum_of(chunk.value):
                raise IntegrityError(
                    chunk.key,
                    f"The archived history chunk {chunk.key!r} did not read back as written "
                    "from the COLD tier; no row of it was deleted.",
                )
            verified.append(chunk)
        self._delete_rows(verified, report)

    def _chunks(self, plan: _Plan, rows: Sequence[Any]) -> Iterator[_Chunk]:
        """``rows`` of ``plan`` as chunks of at most ``chunk_rows`` rows and about
        ``chunk_bytes`` bytes."""
        texts: list[str] = []
        taken: list[tuple[int, str | None]] = []
        versions: list[int] = []
        size = 0

        def chunk() -> _Chunk:
            first, last = versions[0], versions[-1]
            value = pack_lines(plan.state_id, first, last, texts)
            return _Chunk(plan, chunk_key(plan.state_id, last), value, list(taken))

        for row in rows:
            text = archived_line(row)
            if texts and (len(texts) >= self.chunk_rows or size + len(text) > self.chunk_bytes):
                yield chunk()
                texts, taken, versions, size = [], [], [], 0
            texts.append(text)
            taken.append((int(row["id"]), row["seal"]))
            versions.append(int(row["version"]))
            size += len(text)
        if texts:
            yield chunk()

    def _delete_rows(self, chunks: Sequence[_Chunk], report: GcReport) -> None:
        """Delete the rows of each chunk that are still exactly as archived (their ids
        and seals), in one transaction; the rows of other chunks stay."""
        t = self.table
        ids = [row_id for c in chunks for row_id, _ in c.rows]
        with self.engine.begin() as conn:
            now: dict[int, str | None] = {}
            for start in range(0, len(ids), 1000):
                part = ids[start : start + 1000]
                stmt = sa.select(t.c.id, t.c.seal).where(t.c.id.in_(part))
                if conn.dialect.name == "postgresql":
                    stmt = stmt.with_for_update()
                now.update((int(i), s) for i, s in conn.execute(stmt))
            doomed: list[int] = []
            for chunk in chunks:
                if all(now.get(row_id, ...) == seal for row_id, seal in chunk.rows):
                    doomed.extend(row_id for row_id, _ in chunk.rows)
                    counts = report.counts(
                        chunk.plan.type_name, self.policy_for(chunk.plan.type_name)
                    )
                    counts.chunks += 1
                    counts.bytes += len(chunk.value)
                else:
                    self._skip(report, chunk.plan, len(chunk.rows),
                               "rows changed or were deleted during the run")  # fmt: skip
            for start in range(0, len(doomed), 1000):
                conn.execute(t.delete().where(t.c.id.in_(doomed[start : start + 1000])))

    # -- events and backups -----------------------------------------------------------

    def _prune_events(self, cutoff: float, report: GcReport, dry_run: bool) -> None:
        outbox, timers = self.manager.outbox, self.manager.timers
        if not dry_run:
            report.deliveries_pruned = outbox.prune(cutoff)
            report.timers_pruned = timers.prune(cutoff)
            return
        d, m = outbox.table, timers.table
        with self.engine.connect() as conn:
            report.deliveries_pruned = int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(d)
                    .where(d.c.status == "delivered", d.c.delivered_at < cutoff)
                ).scalar_one()
            )  # fmt: skip
            report.timers_pruned = int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(m)
                    .where(m.c.status != "scheduled", m.c.finished_at < cutoff)
                ).scalar_one()
            )  # fmt: skip

    def _prune_backups(self, now: float, report: GcReport, dry_run: bool) -> None:
        assert self.backups is not None and self.backup_policy is not None
        manifests = self.backups.list_backups()
        doomed = backups_to_remove(manifests, self.backup_policy, now)
        if not dry_run:
            for backup_id in doomed:
                self.backups.delete_backup(backup_id)
        report.backups_removed = doomed
        report.backups_kept = len(manifests) - len(doomed)


def _backup_id(manifest: Mapping[str, Any]) -> str:
    return str(manifest.get("backup_id") or manifest.get("archive_id"))


def _created(manifest: Mapping[str, Any]) -> float | None:
    created = manifest.get("created_at")
    if not isinstance(created, str):
        return None
    try:
        moment = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


#: Manifest fields that name the backup an incremental backup builds on.
_BASE_FIELDS = ("base_id", "base_backup_id", "parent_id", "since_backup_id")


def backups_to_remove(
    manifests: Sequence[Mapping[str, Any]], policy: BackupPolicy, now: float
) -> list[str]:
    """The ids of the backups ``policy`` does not keep, of ``manifests`` (newest first).

    Kept: the newest ``count``, those created in the last ``days`` days, the newest of
    all, and every backup a kept one builds on (its base, transitively). A backup whose
    time cannot be read is kept.
    """
    ordered = sorted(manifests, key=lambda m: _created(m) or math.inf, reverse=True)
    kept: set[str] = set()
    for index, manifest in enumerate(ordered):
        created = _created(manifest)
        if (
            index == 0
            or created is None
            or (policy.count is not None and index < policy.count)
            or (policy.days is not None and created >= now - policy.days * DAY)
        ):
            kept.add(_backup_id(manifest))
    by_id = {_backup_id(m): m for m in ordered}
    pending = list(kept)
    while pending:
        base_of = by_id.get(pending.pop())
        for name in _BASE_FIELDS:
            base = None if base_of is None else base_of.get(name)
            if isinstance(base, str) and base not in kept:
                kept.add(base)
                pending.append(base)
    return [_backup_id(m) for m in ordered if _backup_id(m) not in kept]

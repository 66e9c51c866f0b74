"""Writing archived records back (a restore from a backup), through the write path.

A backup holds records in their *stored form* (encrypted fields sealed), with the
versions they had. :class:`RecordRestorer` decides, per record, what a restore does with
it -- by ``mode`` and what the tiers and the history hold now -- and writes the records
it restores as mutations of their own: transition ``restore``, compare-and-set on the
version read, one history row each (sealed with the audit keys), the outbox's
deliveries, invalidation. The archived stored form is written as it is (its ciphertext
is not decrypted and sealed again); only ``version`` and ``updated_at`` change.

**Versions.** A restored state gets the version ``max(archived, last in the history,
newest copy in any tier) + 1``: version numbers are never reused (a client or a cache
that knew version 7 never sees another version 7), and the new history row follows the
newest one the history holds. Its ``old_record`` is the record of the version before it
-- the history's row of that version where there is one, else the copy of that version,
else the archived record -- so the audit chain links. When the archive is newer than
the history (the history lost rows since), the versions between are missing from the
history and ``flask state audit verify`` says so: restore the backup's history section
first (``restore_history``), which fills them in.

**Outcomes** per record (:data:`OUTCOMES`):

- ``recreated``: the state had no record (none anywhere, or only a HOT cache copy of a
  record whose home is another tier): written back, in every mode;
- ``restored``: a present record was replaced (``overwrite-older``: it was older than
  the archived one; ``replace``: whatever its version);
- ``unchanged``: the present record is the archived one (but for ``version`` and
  ``updated_at``: restoring a backup twice changes nothing the second time);
- ``skipped_present`` (``missing`` mode), ``skipped_newer`` (``overwrite-older``: the
  present version is as new or newer);
- ``skipped_erased``: the state was erased (its data key destroyed) since: never brought
  back, in any mode;
- ``skipped_unknown_type``: the archived record's type is not registered in this app;
- ``failed``: a concurrent change won twice over (the message says).

Lifecycles, validators and quotas do not apply: a restore writes back what was
recorded, from whatever status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import ConcurrencyError, IntegrityError, InvalidRequestError, InvalidStateTypeError
from ..json_codec import loads
from ..storage.base import StateCategory, StoredValue
from .arguments import MAX_VERSION
from .history import newest_rows
from .model import KEY_PREFIX, StateTransition, utc_now_iso, validate_state_id
from .writer import Write

if TYPE_CHECKING:
    from ..storage.store import TieredStore
    from .data_keys import DataKeys
    from .encryption import RecordCipher
    from .history import HistoryRepository
    from .registry import StateTypeSpec, TypeRegistry
    from .writer import RecordWriter

__all__ = ["MAX_RESTORE_RECORDS", "OUTCOMES", "RESTORE_MODES", "RecordRestorer", "RestoreResult"]

#: What a restore does with a present record: only write back missing states; also
#: replace older versions; replace every present record.
RESTORE_MODES = ("missing", "overwrite-older", "replace")
#: What happened to each record (see the module docstring).
OUTCOMES = (
    "recreated",
    "restored",
    "unchanged",
    "skipped_present",
    "skipped_newer",
    "skipped_erased",
    "skipped_unknown_type",
    "failed",
)
#: The most records one call restores (a transaction per call).
MAX_RESTORE_RECORDS = 5000
_CHUNK = 1000
_RECORD_FIELDS = ("state_id", "name", "type", "status", "data", "metadata", "version")
HOT = StateCategory.HOT


@dataclass
class RestoreResult:
    """What :meth:`RecordRestorer.restore` did (or, in a dry run, would do).

    ``counts`` has every outcome of :data:`OUTCOMES`; ``outcomes`` maps each state id to
    its outcome; ``errors`` the failed ones to why; ``missing_keys`` the states written
    whose encrypted fields have no data key here (they read as None).
    """

    dry_run: bool
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    outcomes: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    missing_keys: list[str] = field(default_factory=list)
    #: The writes committed, for the manager's after-commit work.
    committed: list[Write] = field(default_factory=list, repr=False)

    def note(self, state_id: str, outcome: str, error: str | None = None) -> None:
        previous = self.outcomes.get(state_id)
        if previous is not None:
            self.counts[previous] -= 1
        self.outcomes[state_id] = outcome
        self.counts[outcome] += 1
        if error is not None:
            self.errors[state_id] = error
        else:
            self.errors.pop(state_id, None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "counts": dict(self.counts),
            "outcomes": dict(self.outcomes),
            "errors": dict(self.errors),
            "missing_keys": list(self.missing_keys),
        }


@dataclass(slots=True)
class _Plan:
    state_id: str
    outcome: str
    write: Write | None = None
    error: str | None = None


def check_mode(mode: object) -> str:
    if mode not in RESTORE_MODES:
        raise InvalidRequestError(
            f"Restore mode {mode!r} is not known; use one of {', '.join(RESTORE_MODES)}.",
            details={"mode": repr(mode)},
        )
    return str(mode)


def check_archived(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The archived records as dicts, each checked for the record's fields, at most
    :data:`MAX_RESTORE_RECORDS`, every state id once."""
    if isinstance(records, Mapping) or not isinstance(records, Iterable):
        raise InvalidRequestError(
            "restore_records takes an iterable of archived records (stored-form dicts), not "
            f"{type(records).__name__}."
        )
    checked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for record in records:
        if not isinstance(record, Mapping) or any(f not in record for f in _RECORD_FIELDS):
            raise InvalidRequestError(
                "Each archived record is a record dict with "
                f"{', '.join(_RECORD_FIELDS)}; got {str(record)[:120]!r}."
            )
        state_id = validate_state_id(record["state_id"])
        version = record["version"]
        if type(version) is not int or not 1 <= version < MAX_VERSION:
            raise InvalidRequestError(
                f"The archived record of {state_id!r} has version {version!r}; a version is "
                f"an integer from 1 to {MAX_VERSION - 1}."
            )
        if state_id in seen:
            raise InvalidRequestError(
                f"State {state_id!r} is given twice; restore one record per state."
            )
        seen.add(state_id)
        checked.append(dict(record))
        if len(checked) > MAX_RESTORE_RECORDS:
            raise InvalidRequestError(
                f"restore_records takes at most {MAX_RESTORE_RECORDS} records per call; "
                "give them in chunks."
            )
    return checked


class RecordRestorer:
    """Plans and commits the restore of archived records (see the module docstring)."""

    def __init__(
        self,
        store: TieredStore,
        writer: RecordWriter,
        history: HistoryRepository,
        types: TypeRegistry,
        cipher: RecordCipher,
        data_keys: DataKeys | None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.history = history
        self.types = types
        self.cipher = cipher
        self.data_keys = data_keys

    def restore(
        self,
        records: Sequence[dict[str, Any]],
        *,
        mode: str,
        actor: str | None,
        reason: str | None,
        dry_run: bool,
    ) -> RestoreResult:
        """Plan every record and, unless ``dry_run``, commit the writes (one transaction;
        after a conflict, record by record, each planned again once)."""
        result = RestoreResult(dry_run=dry_run)
        plans = self._plan(records, mode, result)
        writes = [p.write for p in plans if p.write is not None]
        if dry_run or not writes:
            return result
        try:
            self.writer.commit(writes, actor=actor, reason=reason)
        except ConcurrencyError:
            pass  # someone changed one of them meanwhile: one by one, planned afresh
        else:
            result.committed.extend(writes)
            return result
        by_id = {r["state_id"]: r for r in records}
        for write in writes:
            state_id = write.new["state_id"]
            try:
                self.writer.commit([write], actor=actor, reason=reason)
            except ConcurrencyError:
                again = self._plan([by_id[state_id]], mode, result)[0].write
                if again is None:
                    continue  # nothing to write any more: its new outcome is noted
                try:
                    self.writer.commit([again], actor=actor, reason=reason)
                except ConcurrencyError as exc:
                    result.note(state_id, "failed", exc.message)
                    continue
                write = again
            result.committed.append(write)
        return result

    # -- planning ------------------------------------------------------------------------

    def _plan(
        self, records: Sequence[dict[str, Any]], mode: str, result: RestoreResult
    ) -> list[_Plan]:
        specs: dict[str, StateTypeSpec] = {}
        plans: list[_Plan] = []
        for record in records:
            try:
                specs[record["state_id"]] = self.types.get(record["type"])
            except InvalidStateTypeError:
                plans.append(_Plan(record["state_id"], "skipped_unknown_type"))
        wanted = [r for r in records if r["state_id"] in specs]
        ids = [r["state_id"] for r in wanted]
        key_states = self._key_states(ids, specs)
        copies = self._copies({i: specs[i].home_tier for i in ids})
        last_rows = self._last_rows(ids)
        last = {state_id: version for state_id, (version, _) in last_rows.items()}
        pending: list[tuple[dict[str, Any], StateTypeSpec, _Copies, str]] = []
        for record in wanted:
            state_id = record["state_id"]
            spec = specs[state_id]
            if key_states.get(state_id) == "erased":
                plans.append(_Plan(state_id, "skipped_erased"))
                continue
            found = copies.get(state_id, _Copies())
            outcome = self._outcome(record, found, mode)
            if outcome in ("recreated", "restored"):
                pending.append((record, spec, found, outcome))
            else:
                plans.append(_Plan(state_id, outcome))
        history_records = {
            r["state_id"]: last_rows[r["state_id"]][1]
            for r, _, found, _ in pending
            if last.get(r["state_id"], 0) >= max(r["version"], found.newest_version)
        }
        now = utc_now_iso()
        built: list[tuple[_Plan, dict[str, Any], dict[str, Any]]] = []
        for record, spec, found, outcome in pending:
            state_id = record["state_id"]
            base = max(record["version"], last.get(state_id, 0), found.newest_version)
            if base + 1 >= MAX_VERSION:
                plans.append(_Plan(state_id, "failed", error=f"version {base + 1} is too high"))
                continue
            old = history_records.get(state_id)
            if old is None:
                old = next((c for c in found.records() if c.get("version") == base), None) or (
                    record if record["version"] == base else None
                )
            if old is None:  # no record of version ``base`` anywhere: the newest known
                old = found.newest_record() or record
            new = {**record, "version": base + 1, "updated_at": now}
            plan = _Plan(state_id, outcome)
            plan.write = Write(
                KEY_PREFIX + state_id,
                spec,
                StateTransition.RESTORE,
                None,
                new,
                found.expected,
                stored_old=old,
                stored_new=new,
            )
            built.append((plan, old, new))
            if key_states.get(state_id) == "missing" and self.cipher.holds_ciphertext(record):
                result.missing_keys.append(state_id)
            plans.append(plan)
        if built:  # the records as callers and events see them
            opened = self.cipher.open_many([x for _, old, new in built for x in (old, new)])
            for index, (plan, _, _) in enumerate(built):
                assert plan.write is not None
                plan.write.old, plan.write.new = opened[2 * index], opened[2 * index + 1]
        for plan in plans:
            result.note(plan.state_id, plan.outcome, plan.error)
        return plans

    @staticmethod
    def _outcome(record: dict[str, Any], found: _Copies, mode: str) -> str:
        present = found.authoritative_record
        if present is None:
            return "recreated"
        if _content(present) == _content(record):
            return "unchanged"
        if mode == "missing":
            return "skipped_present"
        if mode == "overwrite-older":
            version = present.get("version")
            if isinstance(version, int) and version >= record["version"]:
                return "skipped_newer"
        return "restored"

    # -- reading what is there ------------------------------------------------------------

    def _key_states(self, ids: Sequence[str], specs: Mapping[str, StateTypeSpec]) -> dict[str, str]:
        """``{state_id: "live" | "erased" | "missing"}`` of the states whose type
        encrypts fields (the others have no data key); erased states of any type count.
        A "missing" one written before its type encrypted fields holds no ciphertext and
        needs no key (:meth:`RecordCipher.holds_ciphertext`)."""
        if self.data_keys is None or not ids:
            return {}
        t = self.data_keys.table
        states: dict[str, str] = {}
        with self.data_keys.engine.connect() as connection:
            for start in range(0, len(ids), _CHUNK):
                chunk = list(ids[start : start + _CHUNK])
                rows = connection.execute(
                    sa.select(t.c.state_id, t.c.wrapped_key, t.c.erased_at).where(
                        t.c.state_id.in_(chunk)
                    )
                )
                for state_id, wrapped, erased_at in rows:
                    erased = erased_at is not None or wrapped is None
                    states[state_id] = "erased" if erased else "live"
        for state_id in ids:
            if state_id not in states and specs[state_id].encrypted_fields:
                states[state_id] = "missing"
        return states

    def _copies(self, homes: Mapping[str, StateCategory]) -> dict[str, _Copies]:
        """Every tier's copy of each state, read directly (nothing cached or promoted)."""
        coordinator = self.store.coordinator
        found: dict[str, _Copies] = {i: _Copies(home) for i, home in homes.items()}
        keys = [KEY_PREFIX + i for i in homes]
        for category in (StateCategory.WARM, StateCategory.COLD, HOT):
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                for key, value in _fetch(coordinator, category, chunk).items():
                    found[key[len(KEY_PREFIX) :]].add(category, value)
        return found

    def _last_rows(self, ids: Sequence[str]) -> dict[str, tuple[int, dict[str, Any]]]:
        """The newest history row of each state: ``{state_id: (version, new_record as
        stored)}``, one statement per chunk (see :func:`.history.newest_rows`)."""
        last: dict[str, tuple[int, dict[str, Any]]] = {}
        with self.history.engine.connect() as connection:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                for state_id, version, record in newest_rows(connection, self.history.table, chunk):
                    last[state_id] = (int(version), loads(record) if isinstance(record, str)
                                      else record)  # fmt: skip
        return last


def _content(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record without its ``version`` and ``updated_at``: what a restore compares, so
    that restoring the same backup again changes nothing."""
    return {k: v for k, v in record.items() if k not in ("version", "updated_at")}


class _Copies:
    """The copies of one state found in the tiers."""

    __slots__ = ("by_tier", "home")

    def __init__(self, home: StateCategory = StateCategory.WARM) -> None:
        self.home = home
        self.by_tier: dict[StateCategory, tuple[StoredValue, dict[str, Any]]] = {}

    def add(self, category: StateCategory, value: StoredValue) -> None:
        try:
            record = loads(value.value)
        except ValueError:
            return
        if isinstance(record, dict):
            self.by_tier[category] = (value, record)

    @property
    def expected(self) -> int:
        """The version the store's compare-and-set checks: the home's copy, else the
        newest copy in another tier (0: none)."""
        home = self.by_tier.get(self.home)
        if home is not None:
            return home[0].metadata.version
        return max((v.metadata.version for v, _ in self.by_tier.values()), default=0)

    @property
    def authoritative_record(self) -> dict[str, Any] | None:
        """The state's record: its home's copy, else the newest copy in a tier that is
        not a cache of it (a HOT copy of a record whose home is elsewhere is a cache)."""
        home = self.by_tier.get(self.home)
        if home is not None:
            return home[1]
        others = [
            (v.metadata.version, r)
            for category, (v, r) in self.by_tier.items()
            if category is not HOT or self.home is HOT
        ]
        return max(others, key=lambda o: o[0])[1] if others else None

    @property
    def newest_version(self) -> int:
        """The highest record version of any copy (0: none)."""
        versions = [r.get("version") for _, r in self.by_tier.values()]
        return max((v for v in versions if type(v) is int), default=0)

    def records(self) -> list[dict[str, Any]]:
        return [r for _, r in self.by_tier.values()]

    def newest_record(self) -> dict[str, Any] | None:
        if not self.by_tier:
            return None
        return max(self.by_tier.values(), key=lambda c: c[0].metadata.version)[1]


def _fetch(
    coordinator: Any, category: StateCategory, keys: Sequence[str]
) -> dict[str, StoredValue]:
    """One tier's copies of ``keys``; after a checksum failure, key by key (a corrupt copy
    counts as absent: the write's compare-and-set then decides)."""
    try:
        return dict(coordinator.fetch_tier(category, keys))
    except IntegrityError:
        pass
    found: dict[str, StoredValue] = {}
    for key in keys:
        try:
            hit = coordinator.fetch_tier(category, [key]).get(key)
        except IntegrityError:
            continue
        if hit is not None:
            found[key] = hit
    return found

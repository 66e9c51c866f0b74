"""Tamper-evident history: HMAC seals on the history rows, chained per state, and their
verification.

**The seal.** With audit keys configured (``TIERED_STATE_AUDIT_KEYS``), every history
row is written with a *seal*: a text ``ts1.<key id>.<mac>...`` holding one truncated
HMAC-SHA256 (96 bits) per field group -- transition, statuses, old record, new record,
actor, reason, correlation id, time, event id -- each computed over ``(state_id,
version, field name, value)``, so a verifier can say *which* field differs, and a row
moved to another version or state fails every MAC. The records enter their MACs as
their :func:`record_digest`. A row's MAC over the digest of its old record links it to
the previous row of the state, whose new record must have the same digest: that is the
chain. The seal is computed from the row alone (no read on the write path); the key id
is an HMAC of a fixed label (never a plain hash of the key), so it names the key
without revealing anything about it.

**The digest** of a record is the sha256 of its canonical JSON (sorted keys, compact,
non-ASCII kept: the WARM tier's text, so for most records it *is* the WARM checksum)
after the numbers PostgreSQL's ``jsonb`` changes are normalised: a float written with
an exponent (``1e+16``) reads back as the integer it stands for, and ``-0.0`` as
``0.0``. The history's record columns are ``jsonb`` on PostgreSQL, so a digest of what
was written and of what is read back must agree.

**Verification** (:class:`AuditVerifier`) streams the history in ``state_id, version``
order in chunks and reports, per state, ``verified``, ``unsealed`` (rows written before
the keys were configured: ``flask state audit seal`` seals them) or ``broken`` with the
first bad version and what differs there: a field's MAC, a missing or duplicated
version, a broken link of the chain, an unknown key id, an unsealed row after sealed
ones, or a current record (read from its home tier directly, in batches, neither cached
nor promoted) that differs from the last row's new record. Records without any history
row are found by listing the tiers' keys. Rows that ``flask state gc`` archived to the
COLD tier (:mod:`.history_archive`) are read back into their place and verified like
the others: their seals and the chain through them.

What a database writer without the key cannot do unnoticed: change, insert, move,
reorder or delete rows in the middle of a state's history, or change a current record.
What it can: remove a state entirely (every row and the record), truncate a state's
newest rows together with its record put back to the last remaining version, or strip
every seal of a state (it then shows as ``unsealed``, which ``flask state audit verify``
counts as a failure unless ``--allow-unsealed``). Anchoring against those needs a copy
kept elsewhere (a backup, or exported verification results).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import ConfigurationError, IntegrityError, InvalidStateTypeError
from ..json_codec import dumps, loads
from ..storage.base import StateCategory, StoredValue
from .history import HistoryRepository
from .history_archive import HistoryArchive, gaps_of
from .model import KEY_PREFIX, StateStatus, validate_state_id
from .registry import TypeRegistry

if TYPE_CHECKING:
    from .manager import StateManager

__all__ = [
    "FIELDS",
    "MIN_KEY_BYTES",
    "SEAL_FORMAT",
    "AuditVerifier",
    "HistorySealer",
    "KeySource",
    "Problem",
    "SealReport",
    "StateAudit",
    "load_audit_keys",
    "record_digest",
]

#: The first part of every seal: the format (its MACs and field groups).
SEAL_FORMAT = "ts1"
#: The shortest audit key, in bytes (UTF-8 for text keys).
MIN_KEY_BYTES = 32
#: Bytes kept of each HMAC-SHA256 (96 bits).
MAC_BYTES = 12
#: The field groups of a seal, in the order of their MACs, and how reports name them.
FIELDS: dict[str, str] = {
    "transition": "transition",
    "statuses": "statuses",
    "old_record": "old record",
    "new_record": "new record",
    "actor": "actor",
    "reason": "reason",
    "correlation_id": "correlation id",
    "created_at": "time",
    "event_id": "event id",
}
_FIELD_NAMES = tuple(FIELDS)
_KEY_ID_LABEL = b"flask_tiered_state audit key id"
_NO_VALUE = b"\x00"
#: What ``TIERED_STATE_AUDIT_KEYS`` takes: a key, keys newest first, or a callable (or its
#: import string) returning them.
KeySource = str | bytes | Sequence[str | bytes] | Callable[[], Any] | None
_IMPORT_RE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
#: Text in which a number jsonb changes may occur: an exponent, or a negative zero.
_JSONB_CHANGES = re.compile(r"[0-9]e\+|[:,\[]-0\.0[,\]}]")
_DELETED = StateStatus.DELETED.value
WARM = StateCategory.WARM


# --------------------------------------------------------------------------- digests


def record_digest(record: Any) -> str:
    """The sha256 (hex) of ``record``'s canonical JSON, its numbers normalised as
    PostgreSQL's jsonb returns them: the same digest for the record written and for the
    record read back from a ``jsonb`` or a JSON text column.

    For a record without a float written with an exponent or a negative zero, it is the
    sha256 of the WARM tier's text of the record (its checksum there).
    """
    text = dumps(record)
    if _JSONB_CHANGES.search(text) is not None:
        text = dumps(_normalised(record))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _normalised(value: Any) -> Any:
    """``value`` with jsonb's changes of numbers: ``-0.0`` is ``0.0``; a float whose
    shortest text has an exponent ``e+`` is the integer that text stands for (jsonb keeps
    the decimal ``1.2345678901234568e+20`` as ``123456789012345680000``)."""
    if isinstance(value, float):
        if value == 0.0:
            return 0.0
        text = repr(value)
        return int(Decimal(text)) if "e+" in text else value
    if isinstance(value, dict):
        return {key: _normalised(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalised(item) for item in value]
    return value


def _digest_of(record: Any) -> str | None:
    """The digest of a record given as a dict, as JSON text, or None (no record)."""
    if record is None:
        return None
    if isinstance(record, (str, bytes)):
        record = loads(record)
    return record_digest(record)


def _time_text(moment: Any) -> str:
    """A row's time as the seal covers it: ISO 8601, UTC, microseconds (SQLite gives the
    stored UTC time without an offset)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if not isinstance(moment, datetime):
        return repr(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    text: str = moment.astimezone(timezone.utc).isoformat(timespec="microseconds")
    return text


def _frame(value: Any) -> bytes:
    """One value of a MAC's message, unambiguous: a marker for None, else its UTF-8
    bytes after their length."""
    if value is None:
        return _NO_VALUE
    data = (value if isinstance(value, str) else str(value)).encode("utf-8", "surrogatepass")
    return b"\x01" + len(data).to_bytes(4, "big") + data


_HEAD = SEAL_FORMAT.encode("ascii")
_NAME_FRAMES = tuple(_frame(name) for name in _FIELD_NAMES)
#: The characters of a seal's MACs (URL-safe base64 of 12 bytes is 16 characters each).
_MACS_TEXT = len(_FIELD_NAMES) * MAC_BYTES * 4 // 3


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# --------------------------------------------------------------------------- keys and seals


def _key_error(message: str) -> ConfigurationError:
    """An error of the setting; it never quotes a key (a secret)."""
    return ConfigurationError(message, details={"key": "TIERED_STATE_AUDIT_KEYS"})


def _key_bytes(key: object, index: int) -> bytes:
    where = f"TIERED_STATE_AUDIT_KEYS[{index}]"
    if isinstance(key, str):
        raw = key.encode("utf-8")
    elif isinstance(key, bytes):
        raw = key
    else:
        raise _key_error(
            f"{where} is a {type(key).__name__}; audit keys are text (or bytes) of at least "
            f"{MIN_KEY_BYTES} bytes, e.g. secrets.token_urlsafe(32)."
        )
    if len(raw) < MIN_KEY_BYTES:
        # never echo the value: it is a secret
        raise _key_error(
            f"{where} has {len(raw)} bytes; an audit key needs at least {MIN_KEY_BYTES} "
            "(UTF-8), e.g. secrets.token_urlsafe(32)."
        )
    return raw


def key_id(key: bytes) -> str:
    """The id a seal names its key by: an HMAC of a fixed label under the key (8
    characters of URL-safe base64), which reveals nothing about the key."""
    return _b64(hmac.digest(key, _KEY_ID_LABEL, "sha256")[:6])


class HistorySealer:
    """Seals history rows with the newest audit key and checks seals with any listed key.

    :param keys: the audit keys, newest first (text or bytes, each at least
        :data:`MIN_KEY_BYTES` bytes).
    :raises ConfigurationError: no key, a short key, a key given twice, or not text.
    """

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        if isinstance(keys, (str, bytes)):
            keys = [keys]
        if not keys:
            raise _key_error(
                "TIERED_STATE_AUDIT_KEYS holds no key; give at least one of "
                f"{MIN_KEY_BYTES} bytes or more (or None for unsealed history)."
            )
        self._keys: dict[str, _HmacKey] = {}
        for index, key in enumerate(keys):
            raw = _key_bytes(key, index)
            kid = key_id(raw)
            if kid in self._keys:
                raise _key_error(f"TIERED_STATE_AUDIT_KEYS[{index}] repeats an earlier key.")
            self._keys[kid] = _HmacKey(raw)
        #: The ids of the keys, newest first; the first seals new rows.
        self.key_ids: tuple[str, ...] = tuple(self._keys)

    def __repr__(self) -> str:
        return f"<HistorySealer key ids {list(self.key_ids)!r}>"

    @classmethod
    def of(cls, value: HistorySealer | KeySource) -> HistorySealer | None:
        """A sealer from any form the setting takes (None: no sealing)."""
        if value is None or isinstance(value, HistorySealer):
            return value
        return load_audit_keys(value)

    def seal(
        self,
        row: Mapping[Any, Any],
        *,
        old: Mapping[str, Any] | object | None = ...,
        new: Mapping[str, Any] | object = ...,
    ) -> str:
        """The seal of ``row`` (as :meth:`HistoryRepository.row` builds it, or as read
        back): records as JSON text or dicts. ``old`` and ``new`` may give the records
        the row's texts were made from, which saves parsing them again."""
        old_digest = _digest_of(row["old_record"] if old is ... else old)
        new_digest = _digest_of(row["new_record"] if new is ... else new)
        kid = self.key_ids[0]
        macs = _macs(self._keys[kid], row, old_digest, new_digest)
        return f"{SEAL_FORMAT}.{kid}.{_b64(macs)}"

    def check(
        self, row: Mapping[Any, Any], old_digest: str | None, new_digest: str
    ) -> list[Problem]:
        """What differs between ``row`` (with the digests of its records) and its seal."""
        seal = row["seal"]
        parts = seal.split(".") if isinstance(seal, str) else []
        if len(parts) != 3 or parts[0] != SEAL_FORMAT or len(parts[2]) != _MACS_TEXT:
            return [Problem("seal", "its seal is not a seal of this format (ts1.<key id>.<MACs>)")]
        key = self._keys.get(parts[1])
        if key is None:
            return [
                Problem(
                    "unknown_key",
                    f"it is sealed with key id {parts[1]!r}, which is not among the "
                    "configured audit keys (list retired keys after the newest)",
                )
            ]
        expected = _b64(_macs(key, row, old_digest, new_digest))
        given = parts[2]
        if hmac.compare_digest(expected, given):
            return []
        width = _MACS_TEXT // len(_FIELD_NAMES)
        failed = [
            name
            for index, name in enumerate(_FIELD_NAMES)
            if not hmac.compare_digest(
                expected[index * width : (index + 1) * width],
                given[index * width : (index + 1) * width],
            )
        ]
        if len(failed) == len(_FIELD_NAMES):
            return [
                Problem(
                    "row",
                    "its seal is not this row's: the row's state id or version was changed, "
                    "or the seal was copied from another row",
                )
            ]
        return [Problem(name, f"its {FIELDS[name]} differs from the sealed one") for name in failed]


class _HmacKey:
    """HMAC-SHA256 under one key, its padded key blocks hashed once: a MAC then costs
    copies of hash states instead of a fresh HMAC (a third of the time)."""

    __slots__ = ("inner", "outer")

    def __init__(self, key: bytes) -> None:
        block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
        self.inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self.outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))


def _macs(
    key: _HmacKey, row: Mapping[Any, Any], old_digest: str | None, new_digest: str | None
) -> bytes:
    """The truncated MACs of the field groups of ``row``, in :data:`FIELDS` order, each
    over ``(format, state_id, version, field name, value)``."""
    values = (
        _frame(row["transition"]),
        _frame(row["from_status"]) + _frame(row["to_status"]),
        _frame(old_digest),
        _frame(new_digest),
        _frame(row["actor"]),
        _frame(row["reason"]),
        _frame(row["correlation_id"]),
        _frame(_time_text(row["created_at"])),
        _frame(row["event_id"]),
    )
    head = key.inner.copy()
    head.update(_HEAD + _frame(row["state_id"]) + _frame(row["version"]))
    outer = key.outer
    macs = []
    for name, value in zip(_NAME_FRAMES, values, strict=True):
        inner = head.copy()
        inner.update(name + value)
        mac = outer.copy()
        mac.update(inner.digest())
        macs.append(mac.digest()[:MAC_BYTES])
    return b"".join(macs)


def load_audit_keys(value: KeySource) -> HistorySealer | None:
    """The sealer of the setting ``TIERED_STATE_AUDIT_KEYS``: None (rows are written
    unsealed), one key, a list of keys newest first, or a callable (or its import string
    ``"module:function"``) returning one of those -- called once, at start-up.

    A text of the form ``module:function`` is taken for an import string; give such a key
    in a list.

    :raises ConfigurationError: a key shorter than :data:`MIN_KEY_BYTES`, not text, or an
        import string that does not import.
    """
    if isinstance(value, str) and _IMPORT_RE.fullmatch(value):
        module, _, name = value.partition(":")
        try:
            target: Any = importlib.import_module(module)
            for part in name.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise _key_error(
                f"TIERED_STATE_AUDIT_KEYS names a callable that cannot be imported ({exc}); "
                "give the import string of a callable returning the keys, or the keys in a list."
            ) from None
        value = target
    given: Any = value() if callable(value) else value
    if given is None or given == "" or (isinstance(given, (list, tuple)) and not given):
        return None
    if isinstance(given, (str, bytes)):
        return HistorySealer([given])
    if not isinstance(given, Sequence):
        raise _key_error(
            "TIERED_STATE_AUDIT_KEYS must be a key, a list of keys (newest first) or a callable "
            f"returning them; got a {type(given).__name__}."
        )
    return HistorySealer(list(given))


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True, slots=True)
class Problem:
    """What differs at a state's first bad version: ``what`` (a field of :data:`FIELDS`,
    or ``row``, ``seal``, ``unknown_key``, ``missing_version``, ``duplicate_version``,
    ``chain``, ``unsealed_row``, ``record``, ``record_missing``, ``record_corrupt``,
    ``no_history``, ``archive``: archived rows that cannot be read) and a sentence."""

    what: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"what": self.what, "detail": self.detail}


#: The statuses of a :class:`StateAudit`.
VERIFIED, UNSEALED, BROKEN, NOT_FOUND = "verified", "unsealed", "broken", "not_found"


@dataclass(slots=True)
class StateAudit:
    """The verification of one state.

    ``status``: ``verified``; ``unsealed`` (``unsealed_rows`` rows without a seal, from
    ``version`` on, and nothing found broken); ``broken`` at its first bad ``version``,
    with the ``problems`` found there; ``not_found`` (an id asked for that has neither
    history nor record).
    """

    state_id: str
    status: str = VERIFIED
    type: str | None = None
    rows: int = 0
    unsealed_rows: int = 0
    version: int | None = None
    problems: list[Problem] = field(default_factory=list)

    def flag(self, version: int, problem: Problem) -> None:
        """Note ``problem`` at ``version``: only the first bad version's are kept."""
        if self.status != BROKEN or self.version is None or version < self.version:
            self.status, self.version, self.problems = BROKEN, version, [problem]
        elif version == self.version and problem not in self.problems:
            self.problems.append(problem)

    @property
    def what(self) -> list[str]:
        """The ``what`` of each problem, as reports name them."""
        return [FIELDS.get(p.what, p.what.replace("_", " ")) for p in self.problems]

    def summary(self) -> str:
        """One line: ``broken at version 3: actor, reason``, ``unsealed: 2 of 5 rows``..."""
        if self.status == BROKEN:
            return f"broken at version {self.version}: {', '.join(self.what)}"
        if self.status == UNSEALED:
            return (
                f"unsealed: {self.unsealed_rows} of {self.rows} rows have no seal "
                f"(from version {self.version})"
            )
        if self.status == NOT_FOUND:
            return "not found: no history and no record"
        return f"verified ({self.rows} rows)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "state_id": self.state_id,
            "status": self.status,
            "type": self.type,
            "rows": self.rows,
            "unsealed_rows": self.unsealed_rows,
            "version": self.version,
            "problems": [p.to_dict() for p in self.problems],
        }


@dataclass(slots=True)
class SealReport:
    """What :meth:`AuditVerifier.seal_unsealed` sealed: rows, in how many states."""

    rows: int = 0
    states: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "states": self.states}


# --------------------------------------------------------------------------- verification


@dataclass(slots=True)
class _Chain:
    """A state's rows checked, waiting for its current record."""

    audit: StateAudit
    last_version: int
    last_digest: str
    last_status: str
    home: StateCategory | None


class AuditVerifier:
    """Verifies the sealed history chains and seals unsealed rows.

    :param history: the history repository.
    :param store: the store (its tiers are read directly, without caching or promoting).
    :param types: the type registry (home tiers).
    :param sealer: the audit keys.
    :param chunk_rows: history rows read per query.
    :param batch_states: states whose current records are read together.
    """

    def __init__(
        self,
        history: HistoryRepository,
        store: Any,
        types: TypeRegistry,
        sealer: HistorySealer,
        *,
        chunk_rows: int = 5000,
        batch_states: int = 1000,
    ) -> None:
        self.history = history
        self.table = history.table
        self.store = store
        self.types = types
        self.sealer = sealer
        self.chunk_rows = chunk_rows
        self.batch_states = batch_states
        #: The rows ``flask state gc`` archived to COLD, read to fill the history's gaps.
        self.archive = HistoryArchive(store.get_repositories().cold)
        self._archive_problems: dict[str, tuple[int, str]] = {}
        t = self.table
        self._columns = [c for c in t.c if c.name != "id"] + [t.c.id]

    @classmethod
    def for_manager(cls, manager: StateManager, **options: Any) -> AuditVerifier:
        """The verifier of ``manager``'s history.

        :raises ConfigurationError: the manager has no audit keys.
        """
        sealer = manager.audit_sealer
        if sealer is None:
            raise ConfigurationError(
                "No audit key is configured, so the history cannot be verified or sealed: set "
                "TIERED_STATE_AUDIT_KEYS (or pass audit_keys= to StateManager.create)."
            )
        return cls(manager.history, manager.store, manager.types, sealer, **options)

    # -- reading -----------------------------------------------------------------

    def count_states(self) -> int:
        """How many states have history rows."""
        t = self.table
        stmt = sa.select(sa.func.count(sa.distinct(t.c.state_id)))
        with self.history.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def _stream(self, where: Any = None) -> Iterator[sa.RowMapping]:
        """The rows (``where``) in state_id, version, id order, a chunk per query: keyset
        pagination on the unique (state_id, version) index; ``>=`` and the id keep a
        duplicated version (possible only without that index) from being skipped."""
        t = self.table
        order = (t.c.state_id, t.c.version, t.c.id)
        after: tuple[str, int, int] | None = None
        while True:
            stmt = sa.select(*self._columns).order_by(*order).limit(self.chunk_rows)
            if where is not None:
                stmt = stmt.where(where)
            if after is not None:
                stmt = stmt.where(
                    sa.tuple_(t.c.state_id, t.c.version) >= sa.tuple_(after[0], after[1])
                )
            with self.history.engine.connect() as conn:
                rows = conn.execute(stmt).mappings().all()
            fresh = [
                r
                for r in rows
                if after is None
                or (r["state_id"], r["version"]) != (after[0], after[1])
                or r["id"] > after[2]
            ]
            yield from fresh
            if len(rows) < self.chunk_rows:
                return
            last = rows[-1]
            after = (last["state_id"], int(last["version"]), int(last["id"]))
            if not fresh:  # a chunk of nothing but one (state_id, version): go past it
                stmt_rest = (
                    sa.select(*self._columns)
                    .where(t.c.state_id == after[0], t.c.version == after[1], t.c.id > after[2])
                    .order_by(t.c.id)
                )
                if where is not None:
                    stmt_rest = stmt_rest.where(where)
                with self.history.engine.connect() as conn:
                    yield from conn.execute(stmt_rest).mappings().all()
                after = (after[0], after[1] + 1, 0)

    def _states(self, where: Any = None) -> Iterator[tuple[str, list[Mapping[Any, Any]]]]:
        """The rows grouped by state, with the rows archived to COLD (see
        :mod:`.history_archive`) in the gaps of the table's rows; a gap the archive does
        not fill is noted for :meth:`_check_rows`. Archived rows are read for a batch of
        states at once."""
        batch: list[tuple[str, list[Mapping[Any, Any]]]] = []
        size = 0
        for state_id, rows in self._live_states(where):
            batch.append((state_id, rows))
            size += len(rows)
            if len(batch) >= 100 or size >= self.chunk_rows:
                yield from self._with_archived(batch)
                batch, size = [], 0
        yield from self._with_archived(batch)

    def _with_archived(
        self, batch: list[tuple[str, list[Mapping[Any, Any]]]]
    ) -> Iterator[tuple[str, list[Mapping[Any, Any]]]]:
        gaps = [g for state_id, rows in batch for g in gaps_of(state_id, _versions(rows))]
        filled = self.archive.fill(gaps) if gaps else {}
        by_state: dict[str, list[Mapping[Any, Any]]] = {}
        for gap, found in filled.items():
            by_state.setdefault(gap[0], []).extend(found.rows)
            if found.problem is not None:
                self._archive_problems.setdefault(gap[0], (gap[1] + 1, found.problem))
        for state_id, rows in batch:
            archived = by_state.get(state_id)
            if archived:
                rows = sorted([*rows, *archived], key=lambda r: int(r["version"]))
            yield state_id, rows

    def _live_states(self, where: Any = None) -> Iterator[tuple[str, list[Mapping[Any, Any]]]]:
        """The table's rows grouped by state."""
        current: str | None = None
        rows: list[Mapping[Any, Any]] = []
        for row in self._stream(where):
            if row["state_id"] != current:
                if current is not None:
                    yield current, rows
                current, rows = row["state_id"], []
            rows.append(row)
        if current is not None:
            yield current, rows

    # -- checking ------------------------------------------------------------------

    def _check_rows(self, state_id: str, rows: Sequence[Mapping[Any, Any]]) -> _Chain:
        audit = StateAudit(state_id, rows=len(rows))
        archive_problem = self._archive_problems.pop(state_id, None)
        if archive_problem is not None:
            audit.flag(archive_problem[0], Problem("archive", archive_problem[1]))
        expected = 1
        previous: str | None = None
        sealed_seen = False
        first_unsealed: int | None = None
        last_digest = ""
        for row in rows:
            version = int(row["version"])
            if version < 1:
                audit.flag(version, Problem("row", f"its version {version} is not a version"))
                continue
            if version < expected:  # sorted: the version just checked, again
                duplicate = f"version {version} has more than one row"
                audit.flag(version, Problem("duplicate_version", duplicate))
                continue
            if version > expected:
                missing = (
                    f"version {expected} is missing"
                    if version == expected + 1
                    else f"versions {expected} to {version - 1} are missing"
                )
                audit.flag(expected, Problem("missing_version", missing))
                previous = None
            old_digest = _digest_of(row["old_record"])
            new_digest = _digest_of(row["new_record"]) or ""
            if version == 1:
                if old_digest is not None:
                    audit.flag(1, Problem("chain", "version 1 has an old record"))
            elif previous is not None and old_digest != previous:
                link = f"its old record differs from version {version - 1}'s new record"
                audit.flag(version, Problem("chain", link))
            if row["seal"] is None:
                audit.unsealed_rows += 1
                if first_unsealed is None:
                    first_unsealed = version
                if sealed_seen:
                    audit.flag(
                        version, Problem("unsealed_row", "it has no seal, after sealed rows")
                    )
            else:
                sealed_seen = True
                for problem in self.sealer.check(row, old_digest, new_digest):
                    audit.flag(version, problem)
            previous = last_digest = new_digest
            expected = version + 1
        last = rows[-1]
        new = last["new_record"]
        record = loads(new) if isinstance(new, (str, bytes)) else new
        type_name = record.get("type") if isinstance(record, dict) else None
        audit.type = type_name if isinstance(type_name, str) else None
        if audit.status != BROKEN and first_unsealed is not None:
            audit.status, audit.version = UNSEALED, first_unsealed
        home = self._home(audit.type)
        return _Chain(audit, int(last["version"]), last_digest, str(last["to_status"]), home)

    def _home(self, type_name: str | None) -> StateCategory | None:
        if type_name is None:
            return None
        try:
            return self.types.get(type_name).home_tier
        except InvalidStateTypeError:
            return None  # a type this process does not know: looked for in every tier

    def _read_records(
        self, homes: Mapping[str, StateCategory | None]
    ) -> dict[str, StoredValue | IntegrityError]:
        """The current record of each state id, from its home tier (else the newest copy
        another tier holds): tiers read directly, nothing cached or promoted. A copy that
        fails its checksum is its :class:`IntegrityError`."""
        coordinator = self.store.coordinator
        found: dict[str, StoredValue | IntegrityError] = {}
        order = (StateCategory.WARM, StateCategory.COLD, StateCategory.HOT)
        by_home: dict[StateCategory | None, list[str]] = {}
        for state_id, home in homes.items():
            by_home.setdefault(home, []).append(KEY_PREFIX + state_id)
        for home, keys in by_home.items():
            # a type this process does not know: WARM first, then every other tier
            found_home = self._fetch(coordinator, home or WARM, keys)
            found.update((k[len(KEY_PREFIX) :], v) for k, v in found_home.items())
            missing = [k for k in keys if k not in found_home]
            if not missing:
                continue
            copies: dict[str, list[StoredValue | IntegrityError]] = {}
            for category in order:
                if home is None and category is WARM:
                    continue
                # A HOT copy of a WARM-home record is a cache, never the record: a record
                # deleted from WARM must not pass for present while such a copy lives.
                if category is home or (category is StateCategory.HOT and home is WARM):
                    continue
                for key, value in self._fetch(coordinator, category, missing).items():
                    copies.setdefault(key, []).append(value)
            for key, values in copies.items():
                good = [v for v in values if isinstance(v, StoredValue)]
                best: StoredValue | IntegrityError = (
                    max(good, key=lambda v: v.metadata.version) if good else values[0]
                )
                found[key[len(KEY_PREFIX) :]] = best
        return found

    @staticmethod
    def _fetch(
        coordinator: Any, category: StateCategory, keys: Sequence[str]
    ) -> dict[str, StoredValue | IntegrityError]:
        """One tier's copies of ``keys``; after a checksum failure, key by key."""
        try:
            return dict(coordinator.fetch_tier(category, keys))
        except IntegrityError:
            pass
        out: dict[str, StoredValue | IntegrityError] = {}
        for key in keys:
            try:
                hit = coordinator.fetch_tier(category, [key]).get(key)
            except IntegrityError as exc:
                out[key] = exc
                continue
            if hit is not None:
                out[key] = hit
        return out

    def _finish(self, chains: Sequence[_Chain], *, recheck: bool = True) -> list[StateAudit]:
        """Compare each chain's last row with the current record."""
        records = self._read_records({c.audit.state_id: c.home for c in chains})
        done: list[StateAudit] = []
        for chain in chains:
            audit = chain.audit
            stored = records.get(audit.state_id)
            problem, version = self._compare(chain, stored)
            if problem is not None and recheck:
                # A change may have committed between reading the rows and the record:
                # the state alone, read again, decides.
                audit = self._verify_one(audit.state_id)
            elif problem is not None:
                audit.flag(version, problem)
            done.append(audit)
        return done

    def _compare(
        self, chain: _Chain, stored: StoredValue | IntegrityError | None
    ) -> tuple[Problem | None, int]:
        last = chain.last_version
        if stored is None:
            if chain.home is StateCategory.HOT or chain.last_status == _DELETED:
                return None, last  # expired (a HOT home), or removed after its deletion
            gone = f"the current record is missing from every tier (version {last} is no deletion)"
            return Problem("record_missing", gone), last
        if isinstance(stored, IntegrityError):
            corrupt = "the current record does not match its checksum"
            return Problem("record_corrupt", corrupt), last
        try:
            record = loads(stored.value)
        except ValueError:
            return Problem("record_corrupt", "the current record is not JSON"), last
        if record_digest(record) == chain.last_digest:
            return None, last
        version = record.get("version") if isinstance(record, dict) else None
        if isinstance(version, int) and not isinstance(version, bool) and version > last:
            ahead = f"the current record is at version {version}; the history ends at {last}"
            return Problem("record", ahead), last + 1
        return (
            Problem("record", f"the current record differs from version {last}'s new record"),
            last,
        )

    def _verify_one(self, state_id: str) -> StateAudit:
        rows = [r for _, group in self._states(self.table.c.state_id == state_id) for r in group]
        if not rows:
            return self._without_history([state_id])[0]
        return self._finish([self._check_rows(state_id, rows)], recheck=False)[0]

    def _without_history(self, state_ids: Sequence[str]) -> list[StateAudit]:
        """States asked for by id that have no history row: a record without history is
        broken; without a record too, not found."""
        records = self._read_records(dict.fromkeys(state_ids))
        out = []
        for state_id in state_ids:
            audit = StateAudit(state_id, status=NOT_FOUND)
            stored = records.get(state_id)
            if stored is not None:
                lonely = "a record is stored but the state has no history row"
                audit.flag(1, Problem("no_history", lonely))
                audit.type = _type_of(stored)
            out.append(audit)
        return out

    # -- the public calls ------------------------------------------------------------

    def verify(
        self,
        *,
        state_type: str | None = None,
        state_ids: Sequence[str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[StateAudit]:
        """The audit of every state (of one type, or of the given ids), in state id order;
        then, without ids, the records that have no history (a listing of every tier's
        keys).

        :param progress: called with the number of states read from the history, as the
            verification goes.
        """
        if state_ids is not None:
            ids = list(dict.fromkeys(validate_state_id(i) for i in state_ids))
            for start in range(0, len(ids), 1000):
                chunk = ids[start : start + 1000]
                seen: set[str] = set()
                where = self.table.c.state_id.in_(chunk)
                for audit in self._verify_where(where, state_type, progress):
                    seen.add(audit.state_id)
                    yield audit
                rest = [i for i in chunk if i not in seen]
                for audit in self._without_history(rest):
                    if state_type is None or audit.type in (None, state_type):
                        yield audit
            return
        yield from self._verify_where(None, state_type, progress)
        yield from self._orphans(state_type)

    def _verify_where(
        self, where: Any, state_type: str | None, progress: Callable[[int], None] | None
    ) -> Iterator[StateAudit]:
        pending: list[_Chain] = []
        for state_id, rows in self._states(where):
            if progress is not None:
                progress(1)
            chain = self._check_rows(state_id, rows)
            if state_type is not None and chain.audit.type != state_type:
                continue
            pending.append(chain)
            if len(pending) >= self.batch_states:
                yield from self._finish(pending)
                pending = []
        if pending:
            yield from self._finish(pending)

    def _orphans(self, state_type: str | None) -> Iterator[StateAudit]:
        """Records in any tier whose state has no history row."""
        repositories = self.store.coordinator.repositories
        reported: set[str] = set()
        for category in (StateCategory.WARM, StateCategory.COLD, StateCategory.HOT):
            batch: list[str] = []
            keys = repositories.by_category(category).keys(KEY_PREFIX + "*")
            for key in keys:
                batch.append(key[len(KEY_PREFIX) :])
                if len(batch) >= 1000:
                    yield from self._orphans_among(batch, state_type, reported)
                    batch = []
            if batch:
                yield from self._orphans_among(batch, state_type, reported)

    def _orphans_among(
        self, state_ids: list[str], state_type: str | None, reported: set[str]
    ) -> Iterator[StateAudit]:
        missing = [i for i in state_ids if i not in reported]
        missing = self._lacking_history(missing)
        if not missing:
            return
        audits = self._without_history(missing)
        # A change writes a HOT-home record just before its history commits: ask again.
        still = set(self._lacking_history([a.state_id for a in audits]))
        for audit in audits:
            if audit.state_id not in still or audit.status == NOT_FOUND:
                continue
            if state_type is not None and audit.type != state_type:
                continue
            reported.add(audit.state_id)
            yield audit

    def _lacking_history(self, state_ids: Sequence[str]) -> list[str]:
        if not state_ids:
            return []
        t = self.table
        stmt = sa.select(t.c.state_id).where(t.c.state_id.in_(list(state_ids))).distinct()
        with self.history.engine.connect() as conn:
            having = set(conn.execute(stmt).scalars())
        return [i for i in state_ids if i not in having]

    def verify_state(self, state_id: str) -> StateAudit:
        """The audit of one state (``not_found`` without history and record)."""
        return self._verify_one(validate_state_id(state_id))

    def seal_unsealed(self, *, progress: Callable[[int], None] | None = None) -> SealReport:
        """Seal every row without a seal, with the newest key, state by state in version
        order, a chunk per transaction; an interrupted run is resumed by running it again.
        The seals vouch for the rows as they are now.

        :param progress: called with the number of rows sealed, as it goes.
        """
        t = self.table
        report = SealReport()
        update = (
            t.update()
            .where(t.c.id == sa.bindparam("row_id"), t.c.seal.is_(None))
            .values(seal=sa.bindparam("new_seal"))
        )
        after: tuple[str, int] | None = None
        last_state: str | None = None
        while True:
            stmt = (
                sa.select(*self._columns)
                .where(t.c.seal.is_(None))
                .order_by(t.c.state_id, t.c.version, t.c.id)
                .limit(self.chunk_rows)
            )
            if after is not None:
                stmt = stmt.where(sa.tuple_(t.c.state_id, t.c.version) > sa.tuple_(*after))
            with self.history.engine.begin() as conn:
                rows = conn.execute(stmt).mappings().all()
                if not rows:
                    return report
                params = [{"row_id": r["id"], "new_seal": self.sealer.seal(r)} for r in rows]
                conn.execute(update, params)
            for row in rows:
                if row["state_id"] != last_state:
                    report.states += 1
                    last_state = row["state_id"]
            report.rows += len(rows)
            if progress is not None:
                progress(len(rows))
            after = (rows[-1]["state_id"], int(rows[-1]["version"]))

    def count_unsealed(self) -> int:
        """How many rows have no seal."""
        t = self.table
        stmt = sa.select(sa.func.count()).select_from(t).where(t.c.seal.is_(None))
        with self.history.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())


def _versions(rows: Sequence[Mapping[Any, Any]]) -> list[int]:
    return [int(r["version"]) for r in rows]


def _type_of(stored: StoredValue | IntegrityError) -> str | None:
    if isinstance(stored, IntegrityError):
        return None
    try:
        record = loads(stored.value)
    except ValueError:
        return None
    type_name = record.get("type") if isinstance(record, dict) else None
    return type_name if isinstance(type_name, str) else None

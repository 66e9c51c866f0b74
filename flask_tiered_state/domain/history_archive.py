"""History rows archived to the COLD tier, and reading them back.

:mod:`flask_tiered_state.ops.retention` (``flask state gc``) moves the older rows of a
state's history out of the history table into the COLD tier, as compressed *chunks*:
runs of consecutive versions of one state, under the key
``history:<state_id>:<last version, 10 digits>``. A chunk's value is a JSON object::

    {"format": "tiered_state.history/1", "state_id": "alice", "first": 2, "last": 950,
     "rows": 949, "bytes": 1843210, "sha256": "<of the uncompressed lines>",
     "encoding": "gzip+base64", "data": "H4sI..."}

``data`` holds the rows as JSON lines, gzip-compressed then base64-encoded (a COLD value
is JSON text in every backend). Each row keeps every column of the table, its ``seal``
included, records in their stored (encrypted) form, time as ISO 8601 UTC.

**Which rows are archived.** Always a run of versions from the second live row on: the
state's version 1 row stays in the table (the history's unique ``(state_id, version)``
index is what keeps a state id from being registered twice), and so does its last row
(the current record's link in the audit chain). So a state's rows are version 1, a gap
that the archive fills, and the newer versions.

**Finding chunks** needs no listing: the chunk ending just below a gap's upper end is
``history:<state_id>:<upper - 1>``, and its ``first`` names the key of the one before
it (``first - 1``), down to the gap's lower end. A chunk another run left behind (one
written while its rows could not be deleted) is not on that path and is never read.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from ..errors import IntegrityError
from ..json_codec import dumps, loads
from ..storage.base import StateRepository
from .history import HistoryRepository

__all__ = [
    "CHUNK_FORMAT",
    "HISTORY_KEY_PREFIX",
    "ArchivedRows",
    "HistoryArchive",
    "HistoryChunk",
    "archived_form",
    "archived_line",
    "chunk_key",
    "decode_chunk",
    "encode_chunk",
    "gaps_of",
    "pack_lines",
    "public_row",
]

#: The prefix of every archived history chunk's key in the COLD tier.
HISTORY_KEY_PREFIX = "history:"
#: The ``format`` of a chunk's value.
CHUNK_FORMAT = "tiered_state.history/1"
_ENCODING = "gzip+base64"
#: The columns an archived row keeps (every column of the table).
ROW_FIELDS = (
    "id", "state_id", "version", "transition", "from_status", "to_status", "old_record",
    "new_record", "actor", "reason", "correlation_id", "event_id", "created_at", "seal",
)  # fmt: skip
#: Chunks fetched per round trip when following gaps.
FETCH_CHUNK = 500


def chunk_key(state_id: str, last_version: int) -> str:
    """The COLD key of the chunk of ``state_id`` ending at ``last_version``."""
    return f"{HISTORY_KEY_PREFIX}{state_id}:{last_version:010d}"


def _iso(moment: Any) -> str:
    """A row's time as ISO 8601 UTC with microseconds (the form the seal covers)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:  # SQLite keeps no offset; every stored time is UTC
        moment = moment.replace(tzinfo=timezone.utc)
    text: str = moment.astimezone(timezone.utc).isoformat(timespec="microseconds")
    return text


def _record(value: Any) -> Any:
    return loads(value) if isinstance(value, (str, bytes)) else value


def archived_form(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A history row as read from the table, in the form a chunk keeps it."""
    out = {name: row[name] for name in ROW_FIELDS}
    out["old_record"] = _record(out["old_record"])
    out["new_record"] = _record(out["new_record"])
    out["created_at"] = _iso(out["created_at"])
    return out


def archived_line(row: Mapping[Any, Any]) -> str:
    """:func:`archived_form` of ``row`` as its JSON line in a chunk. Records read as JSON
    text are copied as they are, without parsing them (the chunk's reader parses them)."""
    head = {name: row[name] for name in ROW_FIELDS if name not in _RECORDS}
    head["created_at"] = _iso(head["created_at"])
    text = dumps(head)
    old, new = (_json_text(row[name]) for name in _RECORDS)
    return f'{text[:-1]},"old_record":{old},"new_record":{new}}}'


_RECORDS = ("old_record", "new_record")


def _json_text(value: Any) -> str:
    if value is None:
        return "null"
    return value if isinstance(value, str) else dumps(value)


def public_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """An archived row as the history queries return rows: without its seal, marked
    ``"archived": True``."""
    out = {k: v for k, v in row.items() if k != "seal"}
    out["archived"] = True
    return out


def encode_chunk(state_id: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """The COLD value of a chunk: ``rows`` (in :func:`archived_form`, consecutive
    versions of ``state_id``, oldest first)."""
    first, last = int(rows[0]["version"]), int(rows[-1]["version"])
    return pack_lines(state_id, first, last, [dumps(row) for row in rows])


def pack_lines(state_id: str, first: int, last: int, texts: Sequence[str]) -> str:
    """:func:`encode_chunk` of rows already encoded (one JSON text each)."""
    lines = "".join(text + "\n" for text in texts).encode("utf-8")
    packed = gzip.compress(lines, compresslevel=6, mtime=0)
    return dumps(
        {
            "format": CHUNK_FORMAT,
            "state_id": state_id,
            "first": first,
            "last": last,
            "rows": len(texts),
            "bytes": len(lines),
            "sha256": hashlib.sha256(lines).hexdigest(),
            "encoding": _ENCODING,
            "data": base64.b64encode(packed).decode("ascii"),
        }
    )


def _live_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A row read from the table as the history queries return it."""
    out = archived_form(row)
    del out["seal"]
    return out


@dataclass(frozen=True, slots=True)
class HistoryChunk:
    """A decoded chunk: consecutive versions ``first`` to ``last`` of one state."""

    state_id: str
    first: int
    last: int
    rows: list[dict[str, Any]]


def decode_chunk(key: str, value: str) -> HistoryChunk:
    """The chunk stored under ``key``.

    :raises IntegrityError: the value is not a chunk of this format, its data does not
        match its sha256, or its rows are not the versions it names.
    """

    def bad(why: str) -> IntegrityError:
        return IntegrityError(key, f"The archived history chunk {key!r} is damaged: {why}.")

    try:
        head = loads(value)
    except ValueError:
        raise bad("its value is not JSON") from None
    if not isinstance(head, dict) or head.get("format") != CHUNK_FORMAT:
        raise bad(f"it is not a chunk of format {CHUNK_FORMAT}")
    if head.get("encoding") != _ENCODING:
        raise bad(f"its encoding {head.get('encoding')!r} is not {_ENCODING}")
    try:
        lines = gzip.decompress(base64.b64decode(str(head["data"]), validate=True))
    except (KeyError, binascii.Error, OSError, EOFError, zlib.error):
        raise bad("its data is not base64 of gzip") from None
    if hashlib.sha256(lines).hexdigest() != head.get("sha256"):
        raise bad("its rows do not match their sha256")
    rows = [loads(line) for line in lines.splitlines() if line]
    first, last, state_id = head.get("first"), head.get("last"), head.get("state_id")
    versions = [row.get("version") for row in rows]
    if (
        not rows
        or not isinstance(first, int)
        or versions != list(range(first, first + len(rows)))
        or last != versions[-1]
        or any(row.get("state_id") != state_id for row in rows)
        or key != chunk_key(str(state_id), int(last))
    ):
        raise bad("its rows are not the versions of the state its key names")
    return HistoryChunk(str(state_id), first, int(last), rows)


@dataclass(slots=True)
class ArchivedRows:
    """What the archive holds of one gap of a state's history: the rows found (oldest
    first) and ``problem`` when a chunk is damaged, or missing below chunks that were
    found. A gap of which nothing was archived has no problem here: its rows were
    deleted, which the audit reports as missing versions."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None


#: A gap of a state's live history: ``(state_id, after, before)``, the versions strictly
#: between two live rows (``after`` 0: below the first live row).
Gap = tuple[str, int, int]


def gaps_of(state_id: str, versions: Iterable[int]) -> list[Gap]:
    """The gaps between the live ``versions`` (ascending) of ``state_id``."""
    found: list[Gap] = []
    previous = 0
    for version in versions:
        if version > previous + 1:
            found.append((state_id, previous, version))
        previous = max(previous, version)
    return found


class HistoryArchive:
    """Reads archived history chunks from the COLD tier, directly (no cache, no
    promotion), following gaps of the live history.

    :param cold: the COLD tier's repository.
    """

    def __init__(self, cold: StateRepository) -> None:
        self.cold = cold

    def fill(self, gaps: Sequence[Gap], *, strict: bool = False) -> dict[Gap, ArchivedRows]:
        """The archived rows of each gap: chunks fetched in rounds of batched reads, one
        round per chunk of the longest gap.

        :param strict: raise on a damaged chunk instead of reporting it.
        :raises IntegrityError: ``strict`` and a chunk is damaged.
        """
        found: dict[Gap, ArchivedRows] = {gap: ArchivedRows() for gap in gaps}
        # gap -> the last version of the next chunk to read (walking down)
        pending = {gap: gap[2] - 1 for gap in gaps if gap[2] - 1 > gap[1]}
        while pending:
            keys = {gap: chunk_key(gap[0], last) for gap, last in pending.items()}
            values: dict[str, Any] = {}
            listed = list(dict.fromkeys(keys.values()))
            for start in range(0, len(listed), FETCH_CHUNK):
                values.update(self._fetch(listed[start : start + FETCH_CHUNK], strict))
            following: dict[Gap, int] = {}
            for gap, key in keys.items():
                _, after, before = gap
                result = found[gap]
                value = values.get(key)
                if value is None:
                    if not result.rows:  # nothing of the gap was archived: rows deleted
                        continue
                    result.problem = (
                        f"versions {after + 1} to {pending[gap]} are neither in the history "
                        f"table nor archived (no chunk {key!r} in the COLD tier)"
                    )
                    continue
                if isinstance(value, IntegrityError):
                    result.problem = value.message
                    continue
                try:
                    chunk = decode_chunk(key, value)
                except IntegrityError as exc:
                    if strict:
                        raise
                    result.problem = exc.message
                    continue
                rows = [r for r in chunk.rows if after < r["version"] < before]
                result.rows[:0] = rows
                if chunk.first - 1 > after:
                    following[gap] = chunk.first - 1
            pending = following
        return found

    def _fetch(self, keys: list[str], strict: bool) -> dict[str, str | IntegrityError]:
        """The values of ``keys`` present; after a checksum failure, key by key."""
        try:
            return {k: v.value for k, v in self.cold.fetch_many(keys).items()}
        except IntegrityError:
            if strict:
                raise
        out: dict[str, str | IntegrityError] = {}
        for key in keys:
            try:
                hit = self.cold.fetch(key)
            except IntegrityError as exc:
                out[key] = exc
                continue
            if hit is not None:
                out[key] = hit.value
        return out

    def merged(self, state_id: str, live: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``live`` rows of ``state_id`` (oldest first) with the archived rows of their
        gaps put in place, in :func:`public_row` form.

        :raises IntegrityError: an archived chunk is damaged.
        """
        gaps = gaps_of(state_id, [int(r["version"]) for r in live])
        if not gaps:
            return [dict(r) for r in live]
        filled = self.fill(gaps, strict=True)
        out: list[dict[str, Any]] = []
        archived = iter(gaps)
        upcoming = next(archived, None)
        for row in live:
            while upcoming is not None and upcoming[2] <= int(row["version"]):
                out.extend(public_row(r) for r in filled[upcoming].rows)
                upcoming = next(archived, None)
            out.append(dict(row))
        return out

    def records_at(
        self, state_id: str, versions: Sequence[int], live_versions: Sequence[int]
    ) -> dict[int, dict[str, Any]]:
        """The archived ``new_record`` of each of ``versions`` (those the archive has)."""
        wanted = set(versions)
        gaps = [
            gap
            for gap in gaps_of(state_id, live_versions)
            if any(gap[1] < v < gap[2] for v in wanted)
        ]
        out: dict[int, dict[str, Any]] = {}
        for result in self.fill(gaps, strict=True).values():
            for row in result.rows:
                if row["version"] in wanted:
                    out[int(row["version"])] = row["new_record"]
        return out

    def row_as_of(
        self, history: HistoryRepository, state_id: str, moment: datetime
    ) -> dict[str, Any] | None:
        """The history row (live or archived) of the last version of ``state_id``
        committed at or before ``moment`` (an aware datetime), or None.

        :raises IntegrityError: an archived chunk it needs is damaged.
        """
        t = history.table
        at = moment.astimezone(timezone.utc)
        stmt = (
            sa.select(t)
            .where(t.c.state_id == state_id, t.c.created_at <= at)
            .order_by(t.c.version.desc())
            .limit(1)
        )
        with history.engine.connect() as conn:
            hit = conn.execute(stmt).mappings().first()
            floor = 0 if hit is None else int(hit["version"])
            above = conn.execute(
                sa.select(sa.func.min(t.c.version)).where(
                    t.c.state_id == state_id, t.c.version > floor
                )
            ).scalar_one_or_none()
        row = None if hit is None else _live_row(hit)
        if above is None or int(above) == floor + 1:
            return row
        # the versions between the live row found and the next live one are archived
        gap = (state_id, floor, int(above))
        archived = self.fill([gap], strict=True)[gap].rows
        earlier = [r for r in archived if datetime.fromisoformat(r["created_at"]) <= at]
        return public_row(earlier[-1]) if earlier else row

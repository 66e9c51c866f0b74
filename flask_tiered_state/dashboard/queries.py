"""What the dashboard pages read from the manager, shaped for the templates."""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..domain.diff import diff_records
from ..domain.manager import StateManager
from ..domain.model import KEY_PREFIX, StateStatus
from ..domain.paging import Page, validate_paging
from ..errors import InvalidRequestError, TieredStateError
from ..storage.base import StateCategory

__all__ = [
    "EVENT_FILTERS",
    "HISTORY_PER_PAGE",
    "LISTED_STATUSES",
    "RECENT_TIMER_OUTCOMES",
    "Placement",
    "TierCopy",
    "counts_by_type",
    "deliveries",
    "history_page",
    "parse_filters",
    "placement",
    "recent_activity",
    "searchable_types",
    "state_timers",
    "timeline",
]

#: The statuses the overview counts (search never returns deleted states).
LISTED_STATUSES = tuple(s.value for s in StateStatus if s is not StateStatus.DELETED)
FILTER_SYNTAX = "space-separated path=value pairs, e.g. data.plan=pro data.age=30"
#: The events page's status filters, in the order of its cards.
EVENT_FILTERS = ("pending", "failed", "dead", "delivered")
#: How many finished timers (applied, skipped, failed, cancelled) a state's page shows.
RECENT_TIMER_OUTCOMES = 10
#: Changes per page of the history on a state's page.
HISTORY_PER_PAGE = 50


def parse_filters(text: str) -> dict[str, Any]:
    """``data.plan=pro data.age=30 name="Ada L"`` -> ``{"data.plan": "pro", ...}``.

    Values that read as JSON numbers, booleans or null are those; anything else is
    a string. The paths are checked by the manager's search.

    :raises InvalidRequestError: for a pair without ``=`` or unbalanced quotes.
    """
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise InvalidRequestError(
            f"Invalid filters {text!r}: {exc}; write {FILTER_SYNTAX}.",
            details={"filters": text},
        ) from None
    filters: dict[str, Any] = {}
    for token in tokens:
        path, sep, raw = token.partition("=")
        if not sep or not path:
            raise InvalidRequestError(
                f"Invalid filter {token!r}: expected path=value; write {FILTER_SYNTAX}.",
                details={"filter": token},
            )
        try:
            value = json.loads(raw) if raw else raw
        except (ValueError, RecursionError):  # too deep to parse: kept as text
            value = raw
        filters[path] = value if not isinstance(value, (dict, list)) else raw
    return filters


def searchable_types(manager: StateManager) -> tuple[list[str], list[str]]:
    """Type names whose home tier is WARM (searchable), and the others."""
    warm: list[str] = []
    other: list[str] = []
    for name in manager.types.names():
        spec = manager.get_state_type(name)
        (warm if spec.home_tier is StateCategory.WARM else other).append(name)
    return warm, other


def counts_by_type(manager: StateManager) -> dict[str, dict[str, int]]:
    """``{type: {status: count}}`` for every searchable type and listed status (zeros
    included), from one grouped count query."""
    warm, _ = searchable_types(manager)
    counts = manager.count_states(by=("type", "status"))
    return {
        name: {status: counts.get(name, {}).get(status, 0) for status in LISTED_STATUSES}
        for name in warm
    }


@dataclass(frozen=True, slots=True)
class TierCopy:
    """Where a copy of the state is, and which version it holds.

    ``size`` is the stored value's size (its UTF-8 JSON text, as every tier records it),
    the same measure in every row; ``memory`` is what the cache entry takes in memory
    (that text plus its decoded copy once it was read), for the cache row only.
    ``durable`` marks where the record itself lives (its home tier, or COLD once
    archived): only there is an absent copy a problem. ``note`` says what the row means.
    """

    tier: str
    backend: str
    present: bool
    version: int | None = None
    size: int | None = None
    checksum: str | None = None
    ttl_seconds: int | None = None
    error: str | None = None
    memory: int | None = None
    durable: bool = False
    note: str = ""

    @property
    def missing(self) -> bool:
        """True for the copy that should exist and does not (shown in red)."""
        return self.durable and not self.present and self.error is None


@dataclass(frozen=True, slots=True)
class Placement:
    """A state's copies (cache, then each tier) and where it lives."""

    copies: list[TierCopy]
    home: str
    #: True when the record has moved to COLD (``demote_to_cold``): it is read and
    #: updated as usual but no longer searchable.
    archived: bool

    @property
    def lives_in(self) -> str:
        return COLD if self.archived else self.home


COLD = StateCategory.COLD.value
_ABSENT_NOTES = {
    "cache": "not cached in this process: the next read caches it",
    StateCategory.HOT.value: "no HOT copy (normal: placed on frequent reads or promote_to_hot)",
    StateCategory.WARM.value: "none: the record lives in another tier",
    COLD: "not archived",
}


def placement(manager: StateManager, state_id: str, home: StateCategory) -> Placement:
    """The state's copy in the local cache and in each tier (read directly), each
    labelled against ``home`` (the type's home tier): the durable copy, a cached copy,
    an expected absence or a missing copy."""
    key = KEY_PREFIX + state_id
    found: list[TierCopy] = []
    info = manager.store.cache.info(key)
    meta = None if info is None else info.metadata
    found.append(
        TierCopy(
            "cache",
            "in-process LRU",
            info is not None,
            None if meta is None else meta.version,
            None if meta is None else meta.size,
            None if meta is None else meta.checksum,
            memory=None if info is None else info.size,
        )
    )
    guard = manager.store.coordinator.guard
    for repository in manager.get_repositories():
        tier = repository.category.value
        if not guard.health[repository.category].healthy:  # known down: no wait on it
            error = guard.health[repository.category].last_error or "down"
            found.append(TierCopy(tier, repository.backend, False, error=error))
            continue
        try:
            stored = repository.fetch(key)
        except TieredStateError as exc:
            found.append(TierCopy(tier, repository.backend, False, error=str(exc)))
            continue
        if stored is None:
            found.append(TierCopy(tier, repository.backend, False))
            continue
        m = stored.metadata
        found.append(
            TierCopy(tier, repository.backend, True, m.version, m.size, m.checksum, m.ttl_seconds)
        )
    by_tier = {c.tier: c for c in found}
    home_copy, cold = by_tier.get(home.value), by_tier.get(COLD)
    archived = (
        home is not StateCategory.COLD
        and cold is not None
        and cold.present
        and home_copy is not None
        and not home_copy.present
        and home_copy.error is None
    )
    lives_in = COLD if archived else home.value
    copies = []
    for copy in found:
        durable = copy.tier == lives_in
        if copy.error is not None:
            note = "the tier is down (see Health)"
        elif durable and not copy.present:
            note = "missing: the record should be here"
        elif durable:
            note = f"{'archived' if archived else 'home'}: the record lives here"
        elif copy.present:
            note = "cached copy" if copy.tier in ("cache", StateCategory.HOT.value) else "copy"
        elif archived and copy.tier == home.value:
            note = "none: archived to COLD (demote_to_cold)"
        else:
            note = _ABSENT_NOTES.get(copy.tier, "none")
        copies.append(dataclasses.replace(copy, durable=durable, note=note))
    return Placement(copies, home.value, archived)


def timeline(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History rows (in their order) each with what its mutation changed."""
    entries = []
    for row in history:
        old = row.get("old_record")
        changes = diff_records(old, row["new_record"]) if old is not None else None
        entries.append({**row, "changes": changes})
    return entries


def history_page(manager: StateManager, state_id: str, page: int) -> Page[dict[str, Any]]:
    """Page ``page`` of the history of ``state_id``, :data:`HISTORY_PER_PAGE` changes newest
    first, each with what it changed (:func:`timeline`): one query for the page, and one
    count when the page is full.

    :raises InvalidRequestError: ``page`` is beyond 1 to 1,000,000.
    """
    page, per_page = validate_paging(page, HISTORY_PER_PAGE)
    rows, total = manager.history.page(
        state_id, None, offset=(page - 1) * per_page, limit=per_page, newest_first=True
    )
    return Page(timeline(manager.cipher.open_history(rows)), total, page, per_page)


def recent_activity(manager: StateManager, limit: int = 15) -> list[dict[str, Any]]:
    """The latest history rows across all states, newest first (light columns)."""
    return manager.get_recent_activity(limit)


def deliveries(manager: StateManager, status: str | None, limit: int) -> list[dict[str, Any]]:
    """Deliveries of asynchronous callbacks, newest first, each with the status the page
    shows (``failed`` for a pending one whose attempts failed so far) and whether it can
    be retried (dead or failed)."""
    rows = []
    for row in manager.get_events(status, limit=limit):
        shown = "failed" if row["status"] == "pending" and row["attempts"] > 0 else row["status"]
        rows.append({**row, "shown_status": shown, "retryable": shown in ("dead", "failed")})
    return rows


def state_timers(
    manager: StateManager, state_id: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A state's scheduled timers (soonest first) and its latest finished ones (newest
    first, at most :data:`RECENT_TIMER_OUTCOMES`)."""
    scheduled = manager.get_scheduled(state_id, status="scheduled")
    t = manager.timers.table
    stmt = (
        sa.select(t.c.timer_id, t.c.transition, t.c.due_at, t.c.reason, t.c.if_version,
                  t.c.status, t.c.created_at, t.c.finished_at, t.c.outcome)
        .where(t.c.state_id == state_id, t.c.status != "scheduled")
        .order_by(t.c.finished_at.desc(), t.c.id.desc())
        .limit(RECENT_TIMER_OUTCOMES)
    )  # fmt: skip
    with manager.timers.engine.connect() as connection:
        finished = [dict(row) for row in connection.execute(stmt).mappings()]
    return scheduled, finished

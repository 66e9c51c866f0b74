"""Archiving: old expired (failed) payment transactions move to the COLD tier.

They stay readable by id (``get_state`` finds them in COLD) and keep their history,
but leave the WARM database and its searches. "Old" is by business time, the
transaction's ``data.occurred_at``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateStatus, StateType

from .core import parse_iso, utc_now

__all__ = ["archivable_transactions", "archive_transactions"]

_PAGE = 500


def archivable_transactions(
    manager: StateManager, older_than_days: int, *, limit: int | None = None
) -> list[str]:
    """Ids of expired transactions that occurred at least ``older_than_days`` ago, oldest
    first. Search filters are equalities, so the age is checked here, page by page."""
    cutoff = utc_now() - timedelta(days=older_than_days)
    found: list[tuple[str, str]] = []
    page = 1
    filters = {"status": StateStatus.EXPIRED.value}
    while True:
        result = manager.search_states(StateType.TRANSACTION, filters, page=page, per_page=_PAGE)
        for record in result.items:
            occurred = record["data"]["occurred_at"]
            if parse_iso(occurred) <= cutoff:
                found.append((occurred, record["state_id"]))
        if not result.has_next:
            break
        page += 1
    found.sort()
    ids = [state_id for _, state_id in found]
    return ids if limit is None else ids[:limit]


def archive_transactions(
    manager: StateManager,
    state_ids: Iterable[str],
    *,
    progress: Callable[[str, bool], None] | None = None,
) -> list[str]:
    """Demote each transaction to COLD (copy, verify, delete above); the ids moved."""
    moved: list[str] = []
    for state_id in state_ids:
        done = manager.demote_to_cold(state_id)
        if done:
            moved.append(state_id)
        if progress is not None:
            progress(state_id, done)
    return moved

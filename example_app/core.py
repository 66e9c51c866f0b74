"""Small pure helpers of the credit system: ids, time, billing periods, flag buckets."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import StateNotFoundError

__all__ = [
    "CYCLE_DAYS",
    "bucket_of",
    "event_notification_id",
    "feature_id",
    "get_typed",
    "iso",
    "new_id",
    "notification_id",
    "parse_iso",
    "period_end",
    "user_id_for",
    "utc_now",
]

#: Length of a billing period, by cycle.
CYCLE_DAYS = {"monthly": 30, "yearly": 365}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """A timestamp as stored in state data (UTC, seconds)."""
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def parse_iso(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def period_end(start: datetime, cycle: str) -> datetime:
    return start + timedelta(days=CYCLE_DAYS[cycle])


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def user_id_for(email: str) -> str:
    """The user id of an email address: stable, so one address is one user (a second
    registration is a 409 from the manager, with no lookup and no race)."""
    return "usr-" + _digest(email.strip().lower())[:16]


def feature_id(key: str) -> str:
    return "feature-" + key


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def notification_id(kind: str, state_id: str, version: int) -> str:
    """One notification per (kind, state, version): a redelivered event adds nothing."""
    return "ntf-" + _digest(f"{kind}:{state_id}:{version}")[:20]


def event_notification_id(kind: str, event_id: str) -> str:
    """One notification per (kind, event): what an asynchronous callback, which may run
    more than once for an event, records."""
    return "ntf-" + _digest(f"{kind}:event:{event_id}")[:20]


def bucket_of(flag_key: str, user_id: str) -> float:
    """The user's bucket for a flag, 0.00-99.99: deterministic, independent per flag.

    A user is in a rollout of ``p`` percent when ``bucket_of(flag, user) < p``, so
    raising the percentage only ever adds users.
    """
    head = int(_digest(f"{flag_key}:{user_id}")[:8], 16)
    return (head % 10_000) / 100


def get_typed(manager: StateManager, state_id: str, state_type: str) -> dict[str, Any]:
    """The live record of ``state_id`` if it is a ``state_type``, else a 404 error."""
    record = manager.get_state(state_id)
    if record is None or record["type"] != state_type:
        raise StateNotFoundError(
            state_id, f"No {state_type} with id {state_id!r} exists (or it was deleted)."
        )
    return record

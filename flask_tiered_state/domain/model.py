"""The domain's vocabulary: state types, statuses, transitions and the record.

A *record* is what :meth:`~flask_tiered_state.domain.manager.StateManager.get_state`
returns: a dict with the fields ``state_id, name, type, status, data, metadata,
version, created_at, updated_at``. It is stored in the tiered store as that same
dict, under the key ``state:{state_id}`` (see :func:`state_key`). Timestamps are
ISO-8601 strings in UTC with microseconds (``2024-05-01T12:00:00.000000+00:00``);
their fixed width makes string order equal time order.

State ids follow the *state id rule*: 1 to 200 characters from letters, digits and
``_ - . : @``.
"""

from __future__ import annotations

import enum
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypedDict

from ..errors import InvalidRequestError

__all__ = [
    "KEY_PREFIX",
    "MAX_STATE_ID_LENGTH",
    "STATE_ID_RULE",
    "StateRecord",
    "StateRecordDict",
    "StateStatus",
    "StateTransition",
    "StateType",
    "new_state_id",
    "state_key",
    "utc_now_iso",
    "validate_state_id",
]

#: Prefix of every store key the domain writes: ``state:{state_id}``.
KEY_PREFIX = "state:"
MAX_STATE_ID_LENGTH = 200
#: The state id rule, as error messages state it.
STATE_ID_RULE = "1 to 200 characters from letters A-Z a-z, digits 0-9 and _ - . : @"
_STATE_ID_RE = re.compile(r"[A-Za-z0-9_\-.:@]{1,200}")


class StateType(str, enum.Enum):
    """The built-in state types; apps add their own with ``register_state_type``.

    The value (``"user"``) is what records store in ``type`` and what callback event
    names start with (``user_created``).
    """

    USER = "user"
    TRANSACTION = "transaction"
    SUBSCRIPTION = "subscription"
    FEATURE = "feature"
    SESSION = "session"

    def __str__(self) -> str:
        return self.value


class StateStatus(str, enum.Enum):
    """Where a state is in its lifecycle."""

    CREATED = "created"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    EXPIRED = "expired"
    DELETED = "deleted"

    def __str__(self) -> str:
        return self.value


class StateTransition(str, enum.Enum):
    """A kind of mutation, as the lifecycle and the history name it.

    ``ROLLBACK`` is recorded by ``rollback_state`` only; it is not a lifecycle entry
    (a rollback is allowed where the lifecycle allows the status change it implies).
    ``ERASE`` is recorded by ``erase_state`` only, from any status, to ``deleted``.
    ``RESTORE`` is recorded by a restore from a backup only
    (:meth:`~flask_tiered_state.domain.manager.StateManager.restore_records`), from any
    status (or none) to the archived record's.
    """

    CREATE = "create"
    UPDATE = "update"
    ACTIVATE = "activate"
    SUSPEND = "suspend"
    RESUME = "resume"
    EXPIRE = "expire"
    DELETE = "delete"
    ROLLBACK = "rollback"
    ERASE = "erase"
    RESTORE = "restore"

    def __str__(self) -> str:
        return self.value


class StateRecordDict(TypedDict):
    """The shape of a record dict (for type checkers)."""

    state_id: str
    name: str
    type: str
    status: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    version: int
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class StateRecord:
    """A record as an object; ``StateRecord.from_dict(manager.get_state(id))``."""

    state_id: str
    name: str
    type: str
    status: StateStatus
    data: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    created_at: str = ""
    updated_at: str = ""

    @classmethod
    def from_dict(cls, record: StateRecordDict | dict[str, Any]) -> StateRecord:
        return cls(
            state_id=record["state_id"],
            name=record["name"],
            type=record["type"],
            status=StateStatus(record["status"]),
            data=dict(record["data"]),
            metadata=dict(record["metadata"]),
            version=int(record["version"]),
            created_at=record["created_at"],
            updated_at=record["updated_at"],
        )

    def to_dict(self) -> StateRecordDict:
        return {
            "state_id": self.state_id,
            "name": self.name,
            "type": self.type,
            "status": self.status.value,
            "data": dict(self.data),
            "metadata": dict(self.metadata),
            "version": self.version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def validate_state_id(state_id: object) -> str:
    """Return ``state_id`` if it follows the state id rule, else raise
    :class:`~flask_tiered_state.errors.InvalidRequestError`."""
    if type(state_id) is str and _STATE_ID_RE.fullmatch(state_id):
        return state_id
    if not isinstance(state_id, str):
        shown = f"{type(state_id).__name__} {state_id!r}"
    elif not state_id or len(state_id) > MAX_STATE_ID_LENGTH:
        shown = f"{state_id[:40]!r} ({len(state_id)} characters)"
    else:
        bad = "".join(sorted({c for c in state_id if not _STATE_ID_RE.fullmatch(c)}))
        shown = f"{state_id!r} (contains {bad!r})"
    raise InvalidRequestError(
        f"Invalid state id {shown}; state ids are {STATE_ID_RULE}.",
        details={"state_id": repr(state_id), "rule": STATE_ID_RULE},
    )


_uuid7_lock = threading.Lock()
_uuid7_last = 0


def new_state_id() -> str:
    """A new state id: a UUIDv7 (RFC 9562), whose text sorts by creation time.

    48 bits of Unix milliseconds, then 12 bits of the sub-millisecond time (RFC 9562's
    method 3), then 62 random bits; ids made by one process are strictly increasing
    (two in the same 244 ns step take the next step).
    """
    global _uuid7_last
    now = time.time_ns()
    step = (now // 1_000_000) << 12 | (now % 1_000_000) * 4096 // 1_000_000
    with _uuid7_lock:
        step = _uuid7_last = max(step, _uuid7_last + 1)
    value = (
        (step >> 12) << 80 | 0x7 << 76 | (step & 0xFFF) << 64 | 0b10 << 62 | secrets.randbits(62)
    )
    return str(uuid.UUID(int=value))


def state_key(state_id: str) -> str:
    """The store key of a state: ``state:{state_id}``."""
    return KEY_PREFIX + state_id


def utc_now_iso() -> str:
    """Now, as the record timestamps spell it."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")

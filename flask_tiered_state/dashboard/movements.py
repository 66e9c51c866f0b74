"""The latest states moved by this process, per manager, for the tiers page.

The store counts its moves (:meth:`~flask_tiered_state.storage.store.TieredStore.movements`)
but does not say which keys moved, so the dashboard remembers the latest
``state-promoted`` and ``state-demoted`` signals the manager sends for
``promote_to_hot`` and ``demote_to_cold``. Automatic promotions send no signal and
are not listed here (the store's counters include them).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

from .. import signals

__all__ = ["RECENT", "Movement", "install", "recent_for"]

#: How many of the latest moves are kept per manager.
RECENT = 20


@dataclass(frozen=True, slots=True)
class Movement:
    state_id: str
    direction: str  # "promoted" or "demoted"
    at: float


_lock = threading.Lock()
_recent: weakref.WeakKeyDictionary[Any, deque[Movement]] = weakref.WeakKeyDictionary()


def recent_for(manager: Any) -> list[Movement]:
    """The latest moves made through ``manager`` in this process, newest first."""
    with _lock:
        return list(_recent.get(manager, ()))


def _add(sender: Any, state_id: object, direction: str) -> None:
    with _lock:
        moves = _recent.get(sender)
        if moves is None:
            moves = _recent[sender] = deque(maxlen=RECENT)
        moves.appendleft(Movement(str(state_id), direction, time.time()))


def _promoted(sender: Any, **kwargs: Any) -> None:
    _add(sender, kwargs.get("state_id"), "promoted")


def _demoted(sender: Any, **kwargs: Any) -> None:
    _add(sender, kwargs.get("state_id"), "demoted")


def install() -> None:
    """Connect the receivers (once per process; connecting again is a no-op)."""
    signals.state_promoted.connect(_promoted)
    signals.state_demoted.connect(_demoted)

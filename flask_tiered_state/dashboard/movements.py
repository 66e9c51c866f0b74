"""Promotions and demotions seen by this process, per manager, for the tiers page.

The store keeps no movement counters, so the dashboard counts the ``state-promoted``
and ``state-demoted`` signals the manager sends for ``promote_to_hot`` and
``demote_to_cold``. Promotions the store makes on its own (frequent reads) send no
signal and are not counted here.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .. import signals

__all__ = ["Movement", "MovementLog", "install", "log_for"]

RECENT = 20


@dataclass(frozen=True, slots=True)
class Movement:
    state_id: str
    direction: str  # "promoted" or "demoted"
    at: float


@dataclass
class MovementLog:
    """Counts and the latest movements of one manager."""

    promotions: int = 0
    demotions: int = 0
    recent: deque[Movement] = field(default_factory=lambda: deque(maxlen=RECENT))

    def add(self, state_id: str, direction: str) -> None:
        if direction == "promoted":
            self.promotions += 1
        else:
            self.demotions += 1
        self.recent.appendleft(Movement(state_id, direction, time.time()))


_lock = threading.Lock()
_logs: weakref.WeakKeyDictionary[Any, MovementLog] = weakref.WeakKeyDictionary()


def log_for(manager: Any) -> MovementLog:
    """The log of ``manager`` (empty until it moves something)."""
    with _lock:
        log = _logs.get(manager)
        if log is None:
            log = _logs[manager] = MovementLog()
        return log


def _promoted(sender: Any, **kwargs: Any) -> None:
    with _lock:
        log = _logs.setdefault(sender, MovementLog())
        log.add(str(kwargs.get("state_id")), "promoted")


def _demoted(sender: Any, **kwargs: Any) -> None:
    with _lock:
        log = _logs.setdefault(sender, MovementLog())
        log.add(str(kwargs.get("state_id")), "demoted")


def install() -> None:
    """Connect the counters (once per process; connecting again is a no-op)."""
    signals.state_promoted.connect(_promoted)
    signals.state_demoted.connect(_demoted)

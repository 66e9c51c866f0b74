"""Time budgets for calls, and the watchdog that enforces them on database sockets.

A public call (a :class:`~.store.TieredStore` or
:class:`~flask_tiered_state.domain.manager.StateManager` method) runs within a budget:
:func:`budget` sets a deadline in a context variable, nested budgets keep the earliest
one, and every round trip below honours it.

PostgreSQL's own ``statement_timeout`` and ``lock_timeout`` stop slow statements and
lock waits, but a server that stops answering altogether (a stopped process, a network
partition that keeps the socket open) never sends its error. So while a statement runs
past the deadline, a watchdog thread shuts the connection's socket down: the driver's
blocked read returns at once with a "connection closed" error, the pool discards the
connection, and the repository raises
:class:`~flask_tiered_state.errors.DeadlineExceededError`. The watchdog wakes every
:data:`TICK` seconds, so a call ends within its budget plus one tick.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..errors import DeadlineExceededError

__all__ = [
    "TICK",
    "Budgeted",
    "SocketWatchdog",
    "Watch",
    "budget",
    "check_budget",
    "current_deadline",
    "fresh_budget",
    "remaining",
    "watchdog",
    "watched_connection",
    "within_budget",
]

#: How often the watchdog looks for sockets past their deadline (seconds).
TICK = 0.05

_deadline: ContextVar[float | None] = ContextVar("tiered_state_deadline", default=None)


def current_deadline() -> float | None:
    """The deadline (``time.monotonic()`` seconds) of the running call, or None."""
    return _deadline.get()


def remaining() -> float | None:
    """Seconds left in the running call's budget (None: no budget)."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


@contextmanager
def budget(seconds: float | None) -> Iterator[float | None]:
    """Run the block within ``seconds`` (None: no budget of its own). A budget already
    running that ends earlier is kept. Yields the deadline."""
    outer = _deadline.get()
    if seconds is None:
        yield outer
        return
    deadline = time.monotonic() + seconds
    if outer is not None and outer < deadline:
        deadline = outer
    token = _deadline.set(deadline)
    try:
        yield deadline
    finally:
        _deadline.reset(token)


@contextmanager
def fresh_budget(seconds: float) -> Iterator[float]:
    """Run the block within ``seconds`` from now, even past the running call's deadline
    (how a failed call finds out what happened before it answers)."""
    deadline = time.monotonic() + seconds
    token = _deadline.set(deadline)
    try:
        yield deadline
    finally:
        _deadline.reset(token)


class Budgeted(Protocol):
    """An object whose public calls each run within :attr:`call_timeout` seconds."""

    @property
    def call_timeout(self) -> float | None: ...


F = TypeVar("F", bound=Callable[..., Any])


def within_budget(method: F) -> F:
    """Decorate a method of a :class:`Budgeted` object: the call runs within the object's
    ``call_timeout`` (or the earlier deadline of a call it is part of)."""

    @functools.wraps(method)
    def timed(self: Budgeted, *args: Any, **kwargs: Any) -> Any:
        seconds = self.call_timeout
        if seconds is None:
            return method(self, *args, **kwargs)
        deadline = time.monotonic() + seconds
        outer = _deadline.get()
        if outer is not None and outer <= deadline:
            return method(self, *args, **kwargs)
        token = _deadline.set(deadline)
        try:
            return method(self, *args, **kwargs)
        finally:
            _deadline.reset(token)

    return timed  # type: ignore[return-value]


def check_budget(tier: str, what: str) -> None:
    """Raise :class:`DeadlineExceededError` when the running call's budget is spent."""
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceededError(
            tier,
            f"The call ran out of its time budget before it could {what}; nothing more "
            "was attempted. Retry later, or raise TIERED_STATE_CALL_TIMEOUT_SECONDS.",
        )


@dataclass(eq=False, slots=True)
class Watch:
    """One socket watched until its deadline; :attr:`fired` once it was shut down."""

    fileno: int
    deadline: float
    fired: bool = False


class SocketWatchdog:
    """Shuts down the sockets of calls past their deadline (one daemon thread, started
    on first use)."""

    def __init__(self, tick: float = TICK) -> None:
        self.tick = tick
        self._lock = threading.Lock()
        self._watches: set[Watch] = set()
        self._thread: threading.Thread | None = None
        #: How many sockets were shut down.
        self.fired = 0

    @contextmanager
    def watch(self, fileno: int, deadline: float) -> Iterator[Watch]:
        """Watch ``fileno`` while the block runs; past ``deadline`` it is shut down."""
        entry = Watch(fileno, deadline)
        with self._lock:
            self._watches.add(entry)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tiered-state-deadlines", daemon=True
                )
                self._thread.start()
        try:
            yield entry
        finally:
            # Under the lock: once removed, the thread never touches this descriptor,
            # which the caller may close (and the system reuse) right after.
            with self._lock:
                self._watches.discard(entry)

    def _run(self) -> None:
        while True:
            time.sleep(self.tick)
            now = time.monotonic()
            with self._lock:
                for entry in self._watches:
                    if not entry.fired and entry.deadline <= now:
                        entry.fired = True
                        self.fired += 1
                        _shut_down(entry.fileno)


@contextmanager
def watched_connection(connection: Any) -> Iterator[Watch | None]:
    """Watch a SQLAlchemy connection's socket until the running call's deadline (a
    PostgreSQL connection within a budget; otherwise nothing is watched)."""
    deadline = _deadline.get()
    if deadline is None or connection.dialect.name != "postgresql":
        yield None
        return
    with watchdog.watch(connection.connection.driver_connection.fileno(), deadline) as watch:
        yield watch


def _shut_down(fileno: int) -> None:
    # A duplicate of the descriptor: shutdown() acts on the socket both share, and
    # closing the duplicate leaves the driver's own descriptor to the driver.
    with suppress(OSError):
        duplicate = socket.socket(fileno=os.dup(fileno))
        with duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)


#: The process's watchdog.
watchdog = SocketWatchdog()

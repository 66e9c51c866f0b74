"""The dispatcher: delivers the outbox to asynchronous callbacks and applies due timers.

``flask state dispatch`` runs one (or :class:`EventDispatcher` in code). Each pass, in
each of its ``concurrency`` threads:

1. **Timers** (:mod:`.timers`): claim the due ones, apply each with
   ``update_state(..., actor="scheduler", idempotency_key="timer:<id>")`` under the
   correlation id ``timer:<id>``, record the outcome.
2. **Deliveries** (:mod:`.outbox`): claim up to ``batch`` due deliveries (at most one
   per state and callback: commit order), call each callback with its event (what it
   changes is recorded under the event's correlation id, else ``event:<id>``), record
   ``delivered``, a retry, or ``dead``; then send the signals ``event_delivered``,
   ``event_failed`` or ``event_dead`` (:mod:`flask_tiered_state.signals`) and count
   them in the store's metrics.

On PostgreSQL the claims lock their rows (``FOR UPDATE SKIP LOCKED``) in the
transaction that records the outcomes, so N dispatchers on N hosts share the work and a
row is claimed by one of them per attempt; one that dies releases its rows. SQLite has
no row locks: one dispatcher per database file, with one thread (a second is refused
with :class:`~flask_tiered_state.errors.DispatcherBusyError`); its claims and outcomes
are separate short transactions, so callbacks may write to the same database.

Delivered deliveries, finished timers and expired idempotency keys are pruned after
``retention_seconds``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .. import signals
from ..errors import (
    ConcurrencyError,
    DispatcherBusyError,
    EncryptionKeyError,
    IdempotencyKeyInUseError,
    InvalidRequestError,
    InvalidTransitionError,
    StateNotFoundError,
    TieredStateError,
    TierUnavailableError,
    ValidationError,
)
from ..storage.sql.execution import transactional
from .callbacks import StateEvent
from .context import correlation_scope
from .outbox import ClaimedDelivery
from .timers import DueTimer

if TYPE_CHECKING:
    from .manager import StateManager

__all__ = ["DispatchReport", "EventDispatcher"]

logger = logging.getLogger("flask_tiered_state.dispatcher")

#: The actor of the transitions timers apply.
SCHEDULER = "scheduler"
#: Seconds between two readings of the outbox's lag (the oldest pending delivery's age).
LAG_REPORT_INTERVAL = 1.0
#: The longest wait between two passes that failed (the database is away).
MAX_ERROR_WAIT = 30.0


@dataclass(slots=True)
class DispatchReport:
    """What a dispatcher did."""

    delivered: int = 0
    failed: int = 0
    dead: int = 0
    timers_applied: int = 0
    timers_skipped: int = 0
    timers_failed: int = 0
    passes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def work(self) -> int:
        return (
            self.delivered + self.failed + self.dead
            + self.timers_applied + self.timers_skipped + self.timers_failed
        )  # fmt: skip

    def add(self, other: DispatchReport) -> None:
        with self.lock:
            for name in ("delivered", "failed", "dead", "timers_applied", "timers_skipped",
                         "timers_failed", "passes"):  # fmt: skip
                setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, int]:
        return {
            "delivered": self.delivered, "failed": self.failed, "dead": self.dead,
            "timers_applied": self.timers_applied, "timers_skipped": self.timers_skipped,
            "timers_failed": self.timers_failed, "passes": self.passes,
        }  # fmt: skip


class EventDispatcher:
    """Delivers a manager's outbox and applies its timers.

    :param manager: the :class:`~flask_tiered_state.domain.manager.StateManager`, whose
        asynchronous callbacks are the ones registered in this process.
    :param batch: deliveries (and timers) claimed per pass and thread (1 to 1,000).
    :param concurrency: threads (1 to 64; 1 on SQLite).
    :param poll_interval: seconds a thread waits after a pass that found nothing.
    :param retention_seconds: how long delivered deliveries and finished timers are
        kept; also the interval at which they (and expired idempotency keys) are pruned
        is one hundredth of it, at least a minute.
    :raises DispatcherBusyError: another dispatcher holds this SQLite database.
    """

    def __init__(
        self,
        manager: StateManager,
        *,
        batch: int = 100,
        concurrency: int = 1,
        poll_interval: float = 0.5,
        retention_seconds: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value, top in (("batch", batch, 1000), ("concurrency", concurrency, 64)):
            if type(value) is not int or not 1 <= value <= top:
                raise InvalidRequestError(
                    f"{name} must be a whole number from 1 to {top}, not {value!r}."
                )
        for name, number in (
            ("poll_interval", poll_interval),
            ("retention_seconds", retention_seconds),
        ):
            if isinstance(number, bool) or not isinstance(number, (int, float)) or number <= 0:
                raise InvalidRequestError(
                    f"{name} must be a positive number of seconds, not {number!r}."
                )
        self.manager = manager
        self.engine: sa.Engine = manager.history.engine
        self.postgresql = self.engine.dialect.name == "postgresql"
        if not self.postgresql and concurrency != 1:
            raise InvalidRequestError(
                f"On SQLite the dispatcher runs one thread (concurrency 1, not {concurrency}): "
                "SQLite has no row locks to share work. Use PostgreSQL to run more."
            )
        self.batch = batch
        self.concurrency = concurrency
        self.poll_interval = float(poll_interval)
        self.retention_seconds = float(retention_seconds)
        self.clock = clock
        self.report = DispatchReport()
        self._prune_every = max(60.0, self.retention_seconds / 100)
        self._pruned_at = 0.0
        # the lag gauge's query runs at most once a second, whatever the passes and threads
        self._lag_at = float("-inf")
        self._lag_lock = threading.Lock()
        self._lock_file: Any = None
        if not self.postgresql:
            self._lock_file = _single_dispatcher_lock(self.engine)

    def close(self) -> None:
        """Release the SQLite dispatcher lock (if held)."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> EventDispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running -----------------------------------------------------------------

    def run(self, stop: threading.Event | None = None, *, once: bool = False) -> DispatchReport:
        """Dispatch until ``stop`` is set (after the pass under way), or, with ``once``,
        until a pass of every thread finds nothing to do. Returns the totals.

        A pass that fails (the database does not answer) is logged and the next one
        waits longer, up to 30 s, until passes succeed again; with ``once`` the error is
        raised."""
        stop = stop or threading.Event()
        errors: list[BaseException] = []

        def loop() -> None:
            failures = 0
            try:
                while not stop.is_set():
                    try:
                        done = self.run_once()
                    except Exception as exc:
                        if once:
                            raise
                        # the database is away (or a pass failed): keep going, slower
                        failures += 1
                        wait = min(self.poll_interval * 2**failures, MAX_ERROR_WAIT)
                        log = logger.exception if failures == 1 else logger.warning
                        log("Dispatch pass failed (%d in a row), next in %.1f s: %s",
                            failures, wait, exc)  # fmt: skip
                        stop.wait(wait)
                        continue
                    if failures:
                        logger.warning("Dispatching again after %d failed passes.", failures)
                        failures = 0
                    if done.work == 0:
                        if once:
                            return
                        stop.wait(self.poll_interval)
            except BaseException as exc:  # reported by run, after the other threads end
                errors.append(exc)
                stop.set()

        threads = [
            threading.Thread(target=loop, name=f"tiered-state-dispatch-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return self.report

    def run_once(self) -> DispatchReport:
        """One pass: due timers, then due deliveries; returns what it did."""
        done = DispatchReport(passes=1)
        self._apply_timers(done)
        self._deliver(done)
        self.report.add(done)
        now = self.clock()
        if now - self._pruned_at >= self._prune_every:
            self._pruned_at = now
            self.prune(now)
        self._report_lag(now)
        return done

    def prune(self, now: float | None = None) -> dict[str, int]:
        """Delete what outlived the retention: delivered deliveries, finished timers,
        expired idempotency keys."""
        moment = self.clock() if now is None else now
        cutoff = moment - self.retention_seconds
        manager = self.manager
        return {
            "deliveries": manager.outbox.prune(cutoff),
            "timers": manager.timers.prune(cutoff),
            "idempotency_keys": manager.idempotency.prune(moment),
        }

    # -- deliveries ----------------------------------------------------------------

    def _deliver(self, done: DispatchReport) -> None:
        outbox = self.manager.outbox
        with self.engine.connect() as connection:
            transaction = transactional(connection).begin()
            try:
                claimed = outbox.claim(connection, self.batch, self.clock())
                if not self.postgresql:  # no row locks to hold: free the snapshot
                    transaction.commit()
                outcomes = [self._call(delivery) for delivery in claimed]
                if not self.postgresql:
                    transaction = connection.begin()
                now = self.clock()
                outbox.delivered(connection, [d.id for d, error in outcomes if error is None], now)
                dead = {
                    d.id: outbox.failed(connection, d, error, self._callback(d), now)
                    for d, error in outcomes
                    if error is not None
                }
                transaction.commit()
            except BaseException:
                if transaction.is_active:
                    transaction.rollback()
                raise
        for delivery, error in outcomes:
            event = self._event(delivery)
            key = delivery.callback
            if error is None:
                done.delivered += 1
                self._signal(signals.event_delivered, event=event, callback=key)
                self._count("delivered", delivery.event)
            elif dead[delivery.id]:
                done.dead += 1
                logger.error(
                    "Event %s (%s of %r) is dead for callback %s after %d attempts: %s",
                    delivery.event_id, delivery.event, delivery.state_id, key,
                    delivery.attempts + 1, error,
                )  # fmt: skip
                self._signal(signals.event_dead, event=event, callback=key, error=error)
                self._count("dead", delivery.event)
            else:
                done.failed += 1
                logger.warning(
                    "Event %s (%s of %r) failed in callback %s (attempt %d), retried later: %s",
                    delivery.event_id, delivery.event, delivery.state_id, key,
                    delivery.attempts + 1, error,
                )  # fmt: skip
                self._signal(signals.event_failed, event=event, callback=key, error=error)
                self._count("failed", delivery.event)

    def _callback(self, delivery: ClaimedDelivery) -> Any:
        return self.manager.callbacks.by_key(delivery.event, delivery.callback)

    def _call(self, delivery: ClaimedDelivery) -> tuple[ClaimedDelivery, str | None]:
        callback = self._callback(delivery)
        if callback is None:
            return delivery, (
                f"No asynchronous callback {delivery.callback!r} for {delivery.event!r} is "
                "registered in this dispatcher's process."
            )
        try:
            # what the callback changes is recorded under the event's correlation id
            # the history row holds the records as stored: their encrypted fields sealed
            old, new = self.manager.cipher.open_many([delivery.old_state, delivery.new_state])
            with correlation_scope(delivery.correlation_id or f"event:{delivery.event_id}"):
                callback.fn(
                    delivery.state_id, old, new, delivery.transition, event_id=delivery.event_id
                )
        except Exception as exc:
            return delivery, f"{type(exc).__name__}: {exc}"
        return delivery, None

    def _event(self, delivery: ClaimedDelivery) -> StateEvent:
        try:
            old, new = self.manager.cipher.open_many([delivery.old_state, delivery.new_state])
        except EncryptionKeyError:  # reported by the delivery's failure; signal it sealed
            old, new = delivery.old_state, delivery.new_state
        return StateEvent(
            name=delivery.event,
            state_id=delivery.state_id,
            state_type=str(new.get("type", "")),
            transition=delivery.transition,
            old_state=old,
            new_state=new,
            version=delivery.version,
            correlation_id=delivery.correlation_id,
            actor=delivery.actor,
            reason=delivery.reason,
            event_id=delivery.event_id,
            occurred_at=delivery.committed_at,
        )

    # -- timers ----------------------------------------------------------------------

    def _apply_timers(self, done: DispatchReport) -> None:
        timers = self.manager.timers
        with self.engine.connect() as connection:
            transaction = transactional(connection).begin()
            try:
                due = timers.claim(connection, self.batch, self.clock())
                if not self.postgresql:
                    transaction.commit()
                outcomes = [(timer, *self._apply(timer)) for timer in due]
                if not self.postgresql:
                    transaction = connection.begin()
                now = self.clock()
                for timer, status, outcome in outcomes:
                    if status is not None:
                        timers.finish(connection, timer, status, outcome, now)
                transaction.commit()
            except BaseException:
                if transaction.is_active:
                    transaction.rollback()
                raise
        for _timer, status, _outcome in outcomes:
            if status == "applied":
                done.timers_applied += 1
            elif status == "skipped":
                done.timers_skipped += 1
            elif status == "failed":
                done.timers_failed += 1

    def _apply(self, timer: DueTimer) -> tuple[str | None, str]:
        """``(status, outcome)``; status None leaves the timer for a later pass."""
        try:
            with correlation_scope(f"timer:{timer.timer_id}"):
                record = self.manager.update_state(
                    timer.state_id,
                    None,
                    timer.transition,
                    expected_version=timer.if_version,
                    actor=SCHEDULER,
                    reason=timer.reason,
                    idempotency_key=f"timer:{timer.timer_id}",
                )
        except ConcurrencyError as exc:
            if timer.if_version is None:  # lost races with other writers: a later pass
                logger.info("Timer %s of %r waits: %s", timer.timer_id, timer.state_id, exc)
                return None, str(exc)
            return "skipped", (
                f"if_version {timer.if_version} no longer matches: the state is at version "
                f"{exc.actual}."
            )
        except StateNotFoundError:
            return "skipped", "The state no longer exists."
        except InvalidTransitionError as exc:
            if exc.details.get("status") == "deleted":
                return "skipped", "The state was deleted."
            return "failed", exc.message
        except ValidationError as exc:
            return "failed", exc.message
        except IdempotencyKeyInUseError as exc:
            # a dispatcher died applying it: its key's lease runs out, then this applies
            # it or finds it applied
            logger.debug("Timer %s of %r waits: %s", timer.timer_id, timer.state_id, exc)
            return None, str(exc)
        except TierUnavailableError as exc:
            logger.warning("Timer %s of %r waits: %s", timer.timer_id, timer.state_id, exc)
            return None, str(exc)
        except TieredStateError as exc:
            return "failed", exc.message
        return "applied", f"applied: version {record['version']}, status {record['status']}"

    # -- reports ---------------------------------------------------------------------

    def _signal(self, signal: Any, **kwargs: Any) -> None:
        self.manager.dispatcher.send(signal, kwargs.get("event"), **kwargs)

    def _count(self, outcome: str, event: str) -> None:
        collector = self.manager.store.metrics_collector
        observe = getattr(collector, "observe_event", None)
        if observe is not None:
            observe(outcome, event)

    def _report_lag(self, now: float) -> None:
        collector = self.manager.store.metrics_collector
        record = getattr(collector, "set_outbox_lag", None)
        if record is None:
            return
        with self._lag_lock:
            if now - self._lag_at < LAG_REPORT_INTERVAL:
                return
            self._lag_at = now
        record(self.manager.outbox.oldest_pending_age(now))


def _single_dispatcher_lock(engine: sa.Engine) -> Any:
    """An exclusive lock on ``<database file>.dispatch.lock`` for the process's life."""
    import fcntl

    database = engine.url.database
    if not database or database == ":memory:":
        return None
    path = Path(database).with_name(Path(database).name + ".dispatch.lock")
    handle = path.open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise DispatcherBusyError(
            f"Another dispatcher ({holder}) runs on the SQLite database {database}; SQLite "
            "supports one dispatcher. Stop it first, or use PostgreSQL to run several."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
    handle.flush()
    return handle

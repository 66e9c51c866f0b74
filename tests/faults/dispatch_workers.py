"""What the outbox and timer fault tests' other processes run: writers and dispatchers.

Each function runs in a process of its own (spawned: it shares nothing with the test
but the servers), so the test can kill it with SIGKILL at any point. The asynchronous
callbacks are idempotent consumers that record what they do in tables of the test's
database (:data:`CONSUMER_TABLES`): every call in ``consumer_calls`` (so a repeated
delivery shows), and its effect in ``consumer_effects``, once per ``(event_id,
callback)`` (``INSERT ... ON CONFLICT DO NOTHING``), in the same transaction.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from flask_tiered_state import StateManager
from flask_tiered_state.domain.dispatcher import EventDispatcher
from flask_tiered_state.errors import TieredStateError

from .workers import CONTEXT, Servers, open_manager

#: The consumers' tables (PostgreSQL). ``seq`` and ``at`` give the order of the calls.
CONSUMER_TABLES = (
    """CREATE TABLE consumer_calls (
        seq bigserial PRIMARY KEY, event_id text NOT NULL, callback text NOT NULL,
        state_id text NOT NULL, version integer NOT NULL, attempt integer NOT NULL,
        pid integer NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())""",
    """CREATE TABLE consumer_effects (
        event_id text NOT NULL, callback text NOT NULL, state_id text NOT NULL,
        version integer NOT NULL, seq bigserial, pid integer NOT NULL,
        at timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (event_id, callback))""",
)

#: Which events each consumer of the kill test receives (by key).
KILL_TEST_CALLBACKS = {
    "effects": ("user_updated", "user_suspended", "user_resumed", "user_activated"),
    "audit": ("user_suspended", "user_resumed"),
}


def create_consumer_tables(database_uri: str) -> None:
    engine = sa.create_engine(database_uri, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        for ddl in CONSUMER_TABLES:
            connection.exec_driver_sql(ddl)
    engine.dispose()


class Consumer:
    """An idempotent asynchronous callback: records the call and, once per event, its
    effect. With ``fail_first`` it raises on the first attempt of the events it names
    (after recording the call), so the dispatcher retries them."""

    def __init__(
        self,
        engine: sa.Engine,
        key: str,
        *,
        fail_first: Callable[[str], bool] | None = None,
        pause: float = 0.0,
    ) -> None:
        self.engine = engine
        self.key = key
        self.fail_first = fail_first
        self.pause = pause

    def __call__(
        self,
        state_id: str,
        old_state: dict[str, Any] | None,
        new_state: dict[str, Any] | None,
        transition: Any,
        *,
        event_id: str,
    ) -> None:
        assert new_state is not None
        row = {"event_id": event_id, "callback": self.key, "state_id": state_id,
               "version": new_state["version"], "pid": os.getpid()}  # fmt: skip
        with self.engine.begin() as connection:
            # The deliveries of one event to one callback never overlap (one claim per
            # attempt): the calls before this one are its earlier attempts.
            attempt = (
                1
                + connection.execute(
                    sa.text(
                        "SELECT count(*) FROM consumer_calls WHERE event_id = :event_id "
                        "AND callback = :callback"
                    ),
                    row,
                ).scalar_one()
            )
            connection.execute(
                sa.text(
                    "INSERT INTO consumer_calls (event_id, callback, state_id, version, attempt,"
                    " pid) VALUES (:event_id, :callback, :state_id, :version, :attempt, :pid)"
                ),
                {**row, "attempt": attempt},
            )
            failing = self.fail_first is not None and self.fail_first(event_id) and attempt == 1
            if not failing:
                connection.execute(
                    sa.text(
                        "INSERT INTO consumer_effects (event_id, callback, state_id, version, pid)"
                        " VALUES (:event_id, :callback, :state_id, :version, :pid)"
                        " ON CONFLICT (event_id, callback) DO NOTHING"
                    ),
                    row,
                )
        if self.pause:
            time.sleep(self.pause)
        if failing:
            raise RuntimeError(f"injected failure of the first attempt of {event_id}")


def injected(event_id: str) -> bool:
    """The events whose first delivery fails in the multi-dispatcher test (1 in 8)."""
    return int(event_id, 16) % 8 == 0


def register_consumers(manager: StateManager, setup: str, engine: sa.Engine | None) -> None:
    """Register the asynchronous callbacks of ``setup`` (``kill``, ``backlog``, ``none``).
    ``engine`` None registers them for their delivery rows only (a writer process)."""
    if setup == "kill":
        for key, events in KILL_TEST_CALLBACKS.items():
            consumer = Consumer(engine, key, pause=0.001) if engine is not None else _never
            for event in events:
                manager.register_callback(event, consumer, asynchronous=True, key=key)
    elif setup == "backlog":
        consumer = Consumer(engine, "log", fail_first=injected) if engine is not None else _never
        manager.register_callback(
            "user_updated", consumer, asynchronous=True, key="log", max_attempts=5, backoff=0.05
        )
    elif setup != "none":
        raise ValueError(setup)


def _never(*args: Any, event_id: str) -> None:
    raise AssertionError("a writer process does not deliver")


# --------------------------------------------------------------------------- processes


def start(function: Callable[..., None], *args: Any) -> tuple[Any, Any]:
    """Start ``function(*args, queue)`` in a spawned process; ``(process, queue)``."""
    queue = CONTEXT.Queue()
    process = CONTEXT.Process(target=function, args=(*args, queue), daemon=True)
    process.start()
    return process, queue


def kill(process: Any) -> None:
    """SIGKILL ``process`` (one this test started) and reap it."""
    process.kill()
    process.join(timeout=30)
    assert process.exitcode == -9, f"{process.name} ended with {process.exitcode}, not SIGKILL"


def transition_worker(
    servers: Servers,
    state_ids: Sequence[str],
    target: int,
    attempted: Any,
    event_log: str,
    threads: int,
    out: Any,
) -> None:
    """Transitions on random states, in ``threads`` threads (each on its own states),
    until ``attempted`` (shared with the test, counted before each attempt) reaches
    ``target``. The id of every event given deliveries is appended to ``event_log``
    before the write that commits them, so the test knows the events of transitions
    that did not commit (the process is killed at random points)."""
    manager = open_manager(servers)
    register_consumers(manager, "kill", None)
    log = os.open(event_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    rows_for = manager.outbox.rows_for

    # The delivery rows are made before the write (its transaction, or its one statement
    # on PostgreSQL) that inserts them: logged then, an event is logged before its commit.
    def logged_rows_for(events: Any) -> list[dict[str, Any]]:
        rows = rows_for(events)
        if rows:
            os.write(log, "".join(sorted({r["event_id"] + "\n" for r in rows})).encode())
        return rows

    manager.outbox.rows_for = logged_rows_for  # type: ignore[method-assign]
    errors: list[str] = []
    # The count is shared memory without a lock of its own (new_counter): this process's
    # threads take turns through a lock of this process, which a SIGKILL takes with it.
    counting = threading.Lock()

    def run(mine: Sequence[str]) -> None:
        rng = random.Random()
        while True:
            with counting:
                if attempted.value >= target:
                    return
                attempted.value += 1
            record = manager.get_state(rng.choice(mine))
            assert record is not None
            status = record["status"]
            choices = {"created": ("activate", "update", "suspend"),
                       "active": ("update", "update", "suspend"),
                       "suspended": ("resume", "update", "activate")}[status]  # fmt: skip
            transition = rng.choice(choices)
            try:
                manager.update_state(
                    record["state_id"], {"data": {"n": rng.random()}} if transition == "update"
                    else None, transition, expected_version=record["version"],
                )  # fmt: skip
            except TieredStateError as exc:  # reported to the test: none expected
                errors.append(f"{type(exc).__name__}: {exc}"[:300])

    workers = [threading.Thread(target=run, args=(state_ids[n::threads],)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    manager.close()
    out.put({"errors": errors})


def dispatcher_worker(
    servers: Servers,
    setup: str,
    options: dict[str, Any],
    ready: Any,
    go: Any,
    stop: Any,
    out: Any,
) -> None:
    """A dispatcher with the consumers of ``setup``: sets ``ready`` once built, waits
    for ``go``, dispatches until ``stop`` (``options["once"]``: until a pass finds
    nothing), then reports its totals and its pid."""
    # The injected failures would log a warning each, on the test's stderr.
    logging.getLogger("flask_tiered_state.dispatcher").setLevel(logging.ERROR)
    manager = open_manager(servers)
    engine = sa.create_engine(servers.database_uri, pool_size=8)
    register_consumers(manager, setup, engine)
    once = bool(options.pop("once", False))
    dispatcher = EventDispatcher(manager, **options)
    ready.set()
    go.wait()
    report = dispatcher.run(stop, once=once)
    out.put({"pid": os.getpid(), **report.to_dict()})
    manager.close()
    engine.dispose()


class KillSafeEvent:
    """An event shared with processes the test SIGKILLs: a flag in shared memory that
    waiters poll. ``multiprocessing.Event`` cannot be: a process killed inside
    ``Event.wait`` stays counted as a sleeper of its condition, and the next ``set()``
    waits for it to wake, for ever (CPython's ``multiprocessing.Condition.notify``)."""

    def __init__(self) -> None:
        self._flag = CONTEXT.RawValue("b", 0)  # no lock: a killed holder would keep it

    def set(self) -> None:
        self._flag.value = 1

    def is_set(self) -> bool:
        return bool(self._flag.value)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._flag.value:
            left = 0.01 if deadline is None else min(0.01, deadline - time.monotonic())
            if left <= 0:
                return False
            time.sleep(left)
        return True


def new_event() -> Any:
    return KillSafeEvent()


def new_counter() -> Any:
    """A count in shared memory, written by one process at a time and read by the test.
    Without a lock: ``multiprocessing.Value``'s lock, held by a process the test SIGKILLs
    (between two ``+= 1``), stays held for ever and hangs every later reader."""
    return CONTEXT.RawValue("i", 0)

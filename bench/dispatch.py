"""The outbox dispatcher (issue 12): events lost and duplicated, dispatch throughput
against a hand-written PostgreSQL ``FOR UPDATE SKIP LOCKED`` queue consumer on the same
events, and the delivery lag under a steady offered load.

* **Throughput.** 2,000 events (two updates of each of 1,000 states, one asynchronous
  callback) are drained by :class:`EventDispatcher` with 1 and with 4 threads. The raw
  baseline drains the same events from a queue table of its own (``id, event_id,
  state_id, version, status, attempts, next_attempt_at, payload``): a transaction per
  claim of up to 100 rows, ``FOR UPDATE SKIP LOCKED``, oldest first, at most the
  earliest pending row per state (the same per-state order guard), the callback called
  for each row, then one ``UPDATE`` marking them delivered. Before each round, both
  tables are set back to pending (untimed). The callback counts deliveries per event:
  lost and duplicated events are counted over every round.
* **Lag.** A producer commits transitions (``update_state``, one per transaction) at a
  steady rate from 4 threads for 10 s while a dispatcher (2 threads, poll every 50 ms)
  delivers; lag = the time the callback is called - the event's commit time (the
  record's ``updated_at``, taken just before the commit: the figure errs high).
  Everything runs in this one process, which shares two cores with PostgreSQL and the
  producer: when the rate offered falls short of the target, the row says the highest
  reached.
"""

from __future__ import annotations

import functools
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from .env import BenchEnv
from .harness import Benchmark, Round, Row, Settings, compare, interleave, timed
from .stores import build_bench_store

__all__ = ["BENCHMARKS"]

#: Rows claimed per transaction, by both sides (the dispatcher's default).
BATCH = 100
LAG_TARGET_RATE = 1000.0


class Consumer:
    """The asynchronous callback of both sides: counts each event's deliveries, and
    records the lag of the events named ``lag*``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.lags: list[float] = []

    def __call__(
        self,
        state_id: str,
        old_state: dict[str, Any] | None,
        new_state: dict[str, Any],
        transition: Any,
        *,
        event_id: str,
    ) -> None:
        now = time.time()
        with self.lock:
            self.counts[event_id] += 1
            if state_id.startswith("lag"):
                committed = datetime.fromisoformat(new_state["updated_at"]).timestamp()
                self.lags.append(now - committed)

    def take(self) -> Counter[str]:
        with self.lock:
            counts, self.counts = self.counts, Counter()
        return counts


class RawQueue:
    """A hand-written outbox queue on PostgreSQL through psycopg, filled with the same
    events as the library's, and its consumer."""

    def __init__(self, env: BenchEnv, url: str, history: str, consumer: Consumer) -> None:
        import psycopg

        self.url = env.libpq_url(url)
        self.consumer = consumer
        self.admin = env.closing(psycopg.connect(self.url, autocommit=True))
        self.admin.execute(
            "CREATE TABLE raw_queue (id bigserial PRIMARY KEY, event_id text NOT NULL, "
            "state_id text NOT NULL, version integer NOT NULL, status text NOT NULL, "
            "attempts integer NOT NULL, next_attempt_at double precision NOT NULL, "
            "payload jsonb NOT NULL)"
        )
        self.admin.execute("CREATE INDEX raw_queue_due ON raw_queue (status, next_attempt_at)")
        self.admin.execute("CREATE INDEX raw_queue_order ON raw_queue (state_id, version)")
        self.admin.execute(
            "INSERT INTO raw_queue (event_id, state_id, version, status, attempts, "
            "next_attempt_at, payload) SELECT event_id, state_id, version, 'pending', 0, 0, "
            f'new_record FROM "{history}" WHERE version > 1 ORDER BY id'
        )
        self.connections = [
            env.closing(psycopg.connect(self.url, autocommit=True)) for _ in range(4)
        ]
        self.claim = (
            "SELECT q.id, q.event_id, q.state_id, q.payload FROM raw_queue q "
            "WHERE q.status = 'pending' AND q.next_attempt_at <= %s AND NOT EXISTS ("
            "SELECT 1 FROM raw_queue e WHERE e.state_id = q.state_id AND e.version < q.version "
            "AND e.status = 'pending') ORDER BY q.id LIMIT %s FOR UPDATE OF q SKIP LOCKED"
        )

    def reset(self) -> None:
        self.admin.execute("UPDATE raw_queue SET status = 'pending', attempts = 0")
        self.admin.execute("VACUUM ANALYZE raw_queue")

    def _drain(self, connection: Any) -> None:
        consumer = self.consumer
        while True:
            with connection.transaction(), connection.cursor() as cursor:
                cursor.execute(self.claim, (time.time(), BATCH))
                claimed = cursor.fetchall()
                if not claimed:
                    return
                for _id, event_id, state_id, payload in claimed:
                    consumer(state_id, None, payload, "update", event_id=event_id)
                cursor.execute(
                    "UPDATE raw_queue SET status = 'delivered', attempts = attempts + 1 "
                    "WHERE id = ANY(%s)",
                    ([row[0] for row in claimed],),
                )

    def drain(self, threads: int) -> None:
        """Deliver everything with ``threads`` threads (each ends on an empty claim)."""
        _in_threads([functools.partial(self._drain, c) for c in self.connections[:threads]])


def _in_threads(bodies: Sequence[Callable[[], None]]) -> None:
    if len(bodies) == 1:
        bodies[0]()
        return
    errors: list[BaseException] = []

    def guarded(body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=guarded, args=(b,)) for b in bodies]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]


def _manager(env: BenchEnv, url: str, name: str = "dispatch") -> Any:
    from flask_tiered_state.domain.manager import StateManager

    store = build_bench_store(env, name, database_url=url, redis=True)
    return env.closing(StateManager.create(store=store, close_store=False))


def dispatch(env: BenchEnv, settings: Settings) -> list[Row]:
    import logging

    from flask_tiered_state.domain.dispatcher import EventDispatcher

    states, updates = settings.pick(1000, 200), 2
    url = env.database("dispatch")
    manager = _manager(env, url)
    consumer = Consumer()
    manager.register_callback("user_updated", consumer, asynchronous=True, key="bench")
    state_ids = [f"d{n:05d}" for n in range(states)]
    manager.batch_set_state({i: {"data": {"n": 0}} for i in state_ids}, state_type="user")
    for number in range(updates):
        manager.batch_update_state({i: {"data": {"n": number + 1}} for i in state_ids})
    events = states * updates
    history, deliveries = manager.history.table.name, manager.outbox.table.name
    raw = RawQueue(env, url, history, consumer)
    expected = {r[0] for r in raw.admin.execute("SELECT event_id FROM raw_queue").fetchall()}
    assert len(expected) == events
    # Tens of thousands of deliveries: the dispatcher's per-pass logging stays quiet.
    logging.getLogger("flask_tiered_state.dispatcher").setLevel(logging.WARNING)
    dispatchers = {
        n: EventDispatcher(manager, batch=BATCH, concurrency=n, poll_interval=0.01) for n in (1, 4)
    }
    rounds: list[tuple[str, Counter[str]]] = []

    def reset_library() -> None:
        raw.admin.execute(
            f"UPDATE \"{deliveries}\" SET status = 'pending', attempts = 0, "
            "next_attempt_at = 0, delivered_at = NULL"
        )
        raw.admin.execute(f'VACUUM ANALYZE "{deliveries}"')

    def round_of(name: str, body: Callable[[], object], reset: Callable[[], None]) -> Round:
        def setup() -> None:
            reset()
            consumer.take()

        measured = timed(body, setup)

        def run() -> float:
            seconds = measured()
            rounds.append((name, consumer.take()))
            return seconds

        return run

    samples = interleave(
        {
            "library_1": round_of("library", lambda: dispatchers[1].run(once=True), reset_library),
            "raw_1": round_of("raw", lambda: raw.drain(1), raw.reset),
            "library_4": round_of("library", lambda: dispatchers[4].run(once=True), reset_library),
            "raw_4": round_of("raw", lambda: raw.drain(4), raw.reset),
        },
        rounds=settings.rounds_for(3, 1),
    )
    lost = duplicated = delivered = 0
    for name, counts in rounds:
        if name == "library":
            lost += len(expected - set(counts))
            duplicated += sum(n - 1 for n in counts.values() if n > 1)
            delivered += sum(counts.values())
        else:
            assert set(counts) == expected and max(counts.values()) == 1, "the raw queue"
    library_rounds = sum(1 for name, _ in rounds if name == "library")
    rows = [
        Row(
            "dispatch: events lost / duplicated (every round of the library, "
            f"{library_rounds} drains of {events:,} events)",
            None,
            None,
            note=f"{lost} lost, {duplicated} duplicated of {delivered:,} deliveries",
            status="PASS" if lost == duplicated == 0 else "FAIL",
        )
    ]
    for threads in (1, 4):
        lib, base = samples[f"library_{threads}"], samples[f"raw_{threads}"]
        rows.append(
            compare(
                f"dispatch: drain a backlog of {events:,} events on {states:,} states, "
                f"{threads} thread{'s' if threads > 1 else ''}, vs a psycopg SKIP LOCKED queue "
                f"consumer ({events / statistics.median(lib):,.0f} vs "
                f"{events / statistics.median(base):,.0f} events/s)",
                samples,
                f"library_{threads}",
                f"raw_{threads}",
                units=events,
                unit="event",
            )
        )
    rows += [_lag(env, manager, consumer, settings, per_commit) for per_commit in (1, 10)]
    return rows


def _produce(
    store_options: dict[str, Any],
    state_ids: Sequence[str],
    rate: float,
    start_at: float,
    seconds: float,
    threads: int,
    per_commit: int,
    out: Any,
) -> None:
    """A producer process: transitions on its states from ``threads`` threads, at
    ``rate`` a second in all from ``start_at`` (epoch) for ``seconds``, each thread
    catching up when behind; ``per_commit`` 1: ``update_state``, one commit each,
    else ``batch_update_state`` of that many states per transaction. Reports what it
    committed and how far behind it fell."""
    from flask_tiered_state.domain.manager import StateManager
    from flask_tiered_state.storage.factory import build_store

    manager = StateManager.create(store=build_store(**store_options))
    # The dispatcher's process calls the callback; this one writes its deliveries.
    manager.register_callback("user_updated", Consumer(), asynchronous=True, key="bench")
    committed = [0] * threads
    behind = [0.0] * threads
    end = start_at + seconds

    def produce(index: int) -> None:
        mine = state_ids[index::threads]
        number = 0
        while True:
            due = start_at + (number * threads + index) * per_commit / rate
            now = time.time()
            if due >= end or now >= end:
                return
            if due > now:
                time.sleep(due - now)
            else:
                behind[index] = max(behind[index], now - due)
            if per_commit == 1:
                manager.update_state(mine[number % len(mine)], {"data": {"n": number}})
            else:
                first = number * per_commit % len(mine)
                chosen = [*mine, *mine][first : first + per_commit]
                manager.batch_update_state({i: {"data": {"n": number}} for i in chosen})
            committed[index] += per_commit
            number += 1

    _in_threads([functools.partial(produce, i) for i in range(threads)])
    manager.close()
    out.put({"committed": sum(committed), "behind": max(behind)})


def _lag(
    env: BenchEnv, manager: Any, consumer: Consumer, settings: Settings, per_commit: int
) -> Row:
    import multiprocessing

    from flask_tiered_state.domain.dispatcher import EventDispatcher

    seconds, rate = settings.pick(10, 2), settings.pick(1000, 200) * 1.0
    processes, threads = 2, 4
    state_ids = [f"lag{per_commit}_{n:05d}" for n in range(settings.pick(2000, 200))]
    manager.batch_set_state({i: {"data": {"n": 0}} for i in state_ids}, state_type="user")
    store_options = {
        "hot_url": env.redis_url(), "key_prefix": env.redis_prefix("dispatch"),
        "warm_url": str(manager.history.engine.url.render_as_string(hide_password=False)),
        "local_dir": str(env.tempdir("dispatch")),
    }  # fmt: skip
    consumer.take()
    with consumer.lock:
        consumer.lags.clear()
    dispatcher = EventDispatcher(manager, batch=BATCH, concurrency=2, poll_interval=0.05)
    stop = threading.Event()
    running = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    running.start()
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # the producers' imports and connections come first
    producers = []
    for index in range(processes):
        queue = context.Queue()
        process = context.Process(
            target=_produce,
            args=(
                store_options,
                state_ids[index::processes],
                rate / processes,
                start_at,
                seconds,
                threads,
                per_commit,
                queue,
            ),
            daemon=True,
        )
        process.start()
        producers.append((process, queue))
    reports = [queue.get(timeout=seconds + 120) for _process, queue in producers]
    for process, _queue in producers:
        process.join(timeout=30)
    total = sum(r["committed"] for r in reports)
    deadline = time.monotonic() + 60
    while sum(consumer.counts.values()) < total and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    running.join(timeout=30)
    counts = consumer.take()
    lags = sorted(consumer.lags)
    achieved = total / seconds
    missing = total - len(counts)
    p50 = statistics.median(lags)
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    reached = (
        f"{rate:,.0f} events/s offered"
        if achieved >= rate * 0.97
        else f"{rate:,.0f}/s asked, {achieved:,.0f}/s the highest offered"
    )
    how = (
        "update_state, one commit each"
        if per_commit == 1
        else f"batch_update_state, {per_commit} per transaction"
    )
    env.note(
        f"dispatch lag: {total:,} transitions committed in {seconds:g} s ({achieved:,.0f}/s) "
        f"by {processes} producer processes of {threads} threads ({how}; the furthest "
        "behind schedule "
        f"{max(r['behind'] for r in reports) * 1000:.0f} ms) while an EventDispatcher in the "
        f"bench process (2 threads, batch {BATCH}, poll 50 ms) delivered; lag p50 "
        f"{p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {lags[-1] * 1000:.1f} ms; "
        f"{missing} not delivered, {sum(n - 1 for n in counts.values() if n > 1)} delivered "
        "twice."
    )
    return Row(
        f"dispatch: lag p99 at {reached}, {how} (p50 {p50 * 1000:.1f} ms, max "
        f"{lags[-1] * 1000:.1f} ms)",
        p99,
        None,
        unit="event",
        status="PASS" if missing == 0 else "FAIL",
    )


def dispatch_backlog(env: BenchEnv, settings: Settings) -> list[Row]:
    """The first claim from a backlog that grew while the statistics still said pending
    rows are rare (the steady state: every delivery done), e.g. after a dispatcher
    outage, before PostgreSQL analyzes the table again."""
    import psycopg

    states = settings.pick(5000, 1000)
    url = env.database("dispatch_backlog")
    manager = _manager(env, url, "dispatch_backlog")
    consumer = Consumer()
    manager.register_callback("user_updated", consumer, asynchronous=True, key="bench")
    state_ids = [f"d{n:05d}" for n in range(states)]
    for start in range(0, states, 2500):
        chunk = state_ids[start : start + 2500]
        manager.batch_set_state({i: {"data": {"n": 0}} for i in chunk}, state_type="user")
        for number in (1, 2):
            manager.batch_update_state({i: {"data": {"n": number}} for i in chunk})
    deliveries = manager.outbox.table.name
    raw = RawQueue(env, url, manager.history.table.name, consumer)
    admin = raw.admin
    for table in (deliveries, "raw_queue"):
        admin.execute(f"UPDATE \"{table}\" SET status = 'delivered'")
        admin.execute(f'ANALYZE "{table}"')
        admin.execute(f"UPDATE \"{table}\" SET status = 'pending', next_attempt_at = 0")
    limit = 5.0  # the WARM engine's statement_timeout

    def library() -> float:
        started = time.perf_counter()
        try:
            with manager.history.engine.connect() as connection, connection.begin():
                manager.outbox.claim(connection, BATCH, time.time())
        except Exception:  # the statement timeout
            return limit
        return time.perf_counter() - started

    def raw_claim() -> float:
        admin.execute(f"SET statement_timeout = '{limit:g}s'")
        started = time.perf_counter()
        try:
            with admin.transaction(force_rollback=True):
                admin.execute(raw.claim, (time.time(), BATCH)).fetchall()
        except psycopg.errors.QueryCanceled:
            return limit
        return time.perf_counter() - started

    def shown(seconds: float) -> str:
        return f">= {limit:g} s (statement timeout)" if seconds >= limit else f"{seconds:.3f} s"

    stale, raw_stale = library(), raw_claim()
    admin.execute(f'ANALYZE "{deliveries}"')
    fresh = library()
    return [
        Row(
            f"dispatch_backlog: first claim of {BATCH} from {states * 2:,} pending deliveries "
            "under statistics taken when all were delivered (a backlog after a dispatcher "
            f"outage): {shown(stale)}; after ANALYZE {shown(fresh)}; the raw queue's claim "
            f"(same NOT EXISTS guard) under such statistics {shown(raw_stale)}",
            stale,
            None,
            unit="claim",
            status="FAIL" if stale >= 1.0 else "PASS",
        )
    ]


BENCHMARKS = [
    Benchmark("dispatch", "outbox dispatcher: loss, duplicates, throughput, lag", dispatch,
              ("redis", "postgres")),
    Benchmark("dispatch_backlog", "outbox claim from a backlog under stale statistics",
              dispatch_backlog, ("redis", "postgres")),
]  # fmt: skip

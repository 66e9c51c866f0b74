"""The domain layer (issue 3): ``update_state`` with history on PostgreSQL against the
same raw SQL transaction through psycopg, ``get_state`` on a local-cache hit against a
dict lookup and copy, and ``search_states`` over 100,000 states against the raw query
(with the PostgreSQL plan of the library's own statement)."""

from __future__ import annotations

import copy
import hashlib
import pickle
import re
import statistics
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from .data import dumps, record
from .env import BenchEnv
from .harness import Benchmark, Row, Settings, chunked, compare, cycling, interleave, timed
from .stores import build_bench_store

__all__ = ["BENCHMARKS"]


def _manager(env: BenchEnv, name: str, *, database_url: str | None, redis: bool) -> Any:
    from flask_tiered_state.domain.manager import StateManager

    store = build_bench_store(env, name, database_url=database_url, redis=redis)
    return env.closing(StateManager.create(store=store, close_store=False))


def _data(number: int, revision: int) -> dict[str, Any]:
    data = dict(record(number)["data"])
    data["credits"] = revision
    return data


# -- update_state ---------------------------------------------------------------------


class RawUpdates:
    """What an application would write by hand through psycopg for one update: a
    version-checked UPDATE of the record and the history INSERT, in one transaction."""

    def __init__(self, env: BenchEnv, url: str, entries: str, history: str) -> None:
        import psycopg

        self.conn = env.closing(psycopg.connect(env.libpq_url(url), autocommit=True))
        self.records: dict[str, dict[str, Any]] = {}
        self.update = (
            f'UPDATE "{entries}" SET value = %s, checksum = %s, size = %s, version = version + 1, '
            "stored_at = %s, last_accessed = %s WHERE key = %s AND version = %s AND "
            "(expires_at IS NULL OR expires_at > %s) RETURNING version"
        )
        columns = (
            "state_id, version, transition, from_status, to_status, old_record, new_record, "
            "actor, reason, correlation_id, created_at"
        )
        self.insert = (
            f'INSERT INTO "{history}" ({columns}) VALUES '
            "(%s, %s, 'update', %s, %s, %s, %s, NULL, NULL, NULL, %s)"
        )
        # One statement for both (issue 3 measured it at 0.5-0.7x the two-statement form).
        self.cte = (
            "WITH u AS (" + self.update + f') INSERT INTO "{history}" ({columns}) SELECT '
            "%s, u.version, 'update', %s, %s, %s, %s, NULL, NULL, NULL, %s FROM u"
        )

    def _next(self, state_id: str, data: dict[str, Any]) -> tuple[Any, ...]:
        old = self.records[state_id]
        now = datetime.now(timezone.utc)
        new = {**old, "data": data, "version": old["version"] + 1,
               "updated_at": now.isoformat(timespec="microseconds")}  # fmt: skip
        self.records[state_id] = new
        text = dumps(new)
        body = text.encode("utf-8")
        return old, new, text, hashlib.sha256(body).hexdigest(), len(body), now

    def two_statements(self, state_id: str, data: dict[str, Any]) -> None:
        from psycopg.types.json import Jsonb

        old, new, text, checksum, size, now = self._next(state_id, data)
        stamp = now.timestamp()
        with self.conn.transaction(), self.conn.cursor() as cursor:
            cursor.execute(self.update, (text, checksum, size, stamp, stamp,
                                         "state:" + state_id, old["version"], stamp))  # fmt: skip
            if cursor.fetchone() is None:
                raise AssertionError(f"version conflict on {state_id}")
            cursor.execute(self.insert, (state_id, new["version"], old["status"], new["status"],
                                         Jsonb(old), Jsonb(new), now))  # fmt: skip

    def one_statement(self, state_id: str, data: dict[str, Any]) -> None:
        from psycopg.types.json import Jsonb

        old, new, text, checksum, size, now = self._next(state_id, data)
        stamp = now.timestamp()
        with self.conn.cursor() as cursor:
            cursor.execute(self.cte, (text, checksum, size, stamp, stamp, "state:" + state_id,
                                      old["version"], stamp, state_id, old["status"],
                                      new["status"], Jsonb(old), Jsonb(new), now))  # fmt: skip
            if cursor.rowcount != 1:
                raise AssertionError(f"version conflict on {state_id}")


def domain_update(env: BenchEnv, settings: Settings) -> list[Row]:
    count, size = settings.pick(60, 10), 5
    url = env.database("domain_update")
    manager = _manager(env, "domain_update", database_url=url, redis=True)
    env.note(
        "domain_update: Redis HOT, PostgreSQL WARM, COLD the local directory (an update of a "
        "WARM-home record never touches COLD). domain_get: memory HOT, SQLite WARM (a cache "
        "hit touches no tier)."
    )
    ids = {side: [f"{side}{n:05d}" for n in range(count)] for side in ("lib", "raw", "cte")}
    raw = RawUpdates(env, url, manager.store.warm.table.name, manager.history.table.name)
    for side, state_ids in ids.items():
        for n, state_id in enumerate(state_ids):
            created = manager.register_state(state_id, "user", {"data": _data(n, 0)})
            if side != "lib":
                raw.records[state_id] = created
    revision = iter(range(1, 10_000_000))

    def updates(fn: Any) -> Any:
        def body(chunk: Sequence[str]) -> None:
            for state_id in chunk:
                fn(state_id, _data(0, next(revision)))

        return body

    def library(state_id: str, data: dict[str, Any]) -> None:
        manager.update_state(state_id, {"data": data})

    samples = interleave(
        {
            "library": cycling(chunked(ids["lib"], size), updates(library)),
            "raw": cycling(chunked(ids["raw"], size), updates(raw.two_statements)),
            "cte": cycling(chunked(ids["cte"], size), updates(raw.one_statement)),
        },
        rounds=settings.rounds_for(48, 4),
    )
    return [
        compare("update_state with history (PostgreSQL, Redis HOT) vs psycopg transaction: "
                "version-checked UPDATE + history INSERT", samples, "library", "raw",
                units=size, target=1.5),
        compare("update_state vs psycopg single CTE statement (UPDATE .. RETURNING feeding "
                "the history INSERT)", samples, "library", "cte", units=size),
    ]  # fmt: skip


# -- get_state ------------------------------------------------------------------------


def domain_get(env: BenchEnv, settings: Settings) -> list[Row]:
    count, size = settings.pick(2000, 200), 100
    # A cache hit never reaches a tier: embedded tiers keep this benchmark server-free.
    manager = _manager(env, "domain_get", database_url=None, redis=False)
    state_ids = [f"g{n:06d}" for n in range(count)]
    for chunk in chunked(state_ids, 500):
        manager.batch_set_state(
            {i: {"data": _data(n, 0)} for n, i in enumerate(chunk)}, state_type="user"
        )
    plain = {}
    for state_id in state_ids:
        found = manager.get_state(state_id)  # fills the cache's decoded snapshots
        assert found is not None, state_id
        plain[state_id] = found
    snapshots = {k: pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL) for k, v in plain.items()}
    chunks = chunked(state_ids, size)
    get_state, deepcopy, loads = manager.get_state, copy.deepcopy, pickle.loads

    def reads(read: Any) -> Any:
        return cycling(chunks, lambda chunk: [read(i) for i in chunk])

    samples = interleave(
        {
            "library": reads(get_state),
            "deepcopy": reads(lambda i: deepcopy(plain[i])),
            "shallow": reads(lambda i: dict(plain[i])),
            "pickle": reads(lambda i: loads(snapshots[i])),
        },
        rounds=settings.rounds_for(60, 6),
    )
    return [
        compare("get_state, local-cache hit vs dict lookup + copy.deepcopy of the record",
                samples, "library", "deepcopy", units=size, target=3.0),
        compare("get_state, local-cache hit vs dict lookup + pickle.loads of a kept snapshot "
                "(fastest deep copy)", samples, "library", "pickle", units=size),
        compare("get_state, local-cache hit vs dict lookup + dict() (shallow: shares data)",
                samples, "library", "shallow", units=size),
    ]  # fmt: skip


# -- search_states --------------------------------------------------------------------


#: The type of state ``n`` of :func:`populate_warm`: ``SEARCH_TYPES[(n // 5) % 5]``.
SEARCH_TYPES = ("user", "user", "user", "transaction", "subscription")


def populate_warm(manager: Any, count: int) -> None:
    """``count`` states written straight to the WARM tier (the search reads only that
    table): 60% users, independently 1 in 5 with ``data.status`` active (12% match)."""
    from flask_tiered_state.storage.base import WriteRequest

    types = SEARCH_TYPES
    for start in range(0, count, 10_000):
        batch = []
        for n in range(start, min(count, start + 10_000)):
            value = record(n, state_type=types[(n // 5) % len(types)], prefix="s")
            batch.append(WriteRequest("state:" + value["state_id"], dumps(value)))
        manager.store.warm.store_many(batch)


def _captured_statement(manager: Any) -> tuple[str, Any]:
    """The SQL and parameters of the library's search page query."""
    import sqlalchemy as sa

    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        seen.append((statement, parameters))

    engine = manager.store.warm.engine
    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        manager.search_states("user", {"data.status": "active"})
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    return next((s, p) for s, p in seen if "LIMIT" in s.upper())


def _plan(manager: Any, statement: str, parameters: Any) -> list[str]:
    """EXPLAIN ANALYZE of the statement with its values: the plan of its first runs."""
    engine = manager.store.warm.engine
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, COSTS OFF) " + statement, parameters)
        return [line for (line,) in rows]


def _generic_plan(conn: Any, statement: str, parameters: Mapping[str, Any]) -> list[str]:
    """The generic plan PostgreSQL may switch a prepared statement to after five runs
    (psycopg prepares a statement on its sixth use on a connection)."""
    import psycopg

    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        names.append(match.group(1))
        return f"${len(names)}"

    text = re.sub(r"%\((\w+)\)s", number, statement)
    cursor = psycopg.ClientCursor(conn)
    with conn.transaction(force_rollback=True):
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute("PREPARE bench_generic AS " + text)
        try:
            values = [parameters[n] for n in names]
            marks = ", ".join(["%s"] * len(values))
            cursor.execute(f"EXPLAIN (COSTS OFF) EXECUTE bench_generic({marks})", values)
            return [line for (line,) in cursor.fetchall()]
        finally:
            cursor.execute("DEALLOCATE bench_generic")


def domain_search(env: BenchEnv, settings: Settings) -> list[Row]:
    import json

    import psycopg
    from psycopg.types.json import Jsonb

    from flask_tiered_state.domain.search import SEARCH_COUNT_LIMIT

    count = settings.pick(100_000, 10_000)
    url = env.database("domain_search")
    manager = _manager(env, "domain_search", database_url=url, redis=True)
    started = time.perf_counter()
    populate_warm(manager, count)
    table = manager.store.warm.table.name
    libpq = env.libpq_url(url)
    prepared = env.closing(psycopg.connect(libpq, autocommit=True))
    unprepared = env.closing(psycopg.connect(libpq, autocommit=True, prepare_threshold=None))
    prepared.execute(f'ANALYZE "{table}"')
    loaded = time.perf_counter() - started

    where = (
        f'FROM "{table}" WHERE key >= %(lo)s AND key < %(hi)s AND document @> %(doc)s AND '
        "(expires_at IS NULL OR expires_at > %(now)s) AND document ->> 'status' <> 'deleted'"
    )
    page_sql = f"SELECT value {where} ORDER BY document ->> 'updated_at' DESC, key LIMIT 50"
    # the Page's total: the matches counted up to the library's bound (and one more)
    count_sql = f"SELECT count(*) FROM (SELECT 1 {where} LIMIT {SEARCH_COUNT_LIMIT + 1}) m"
    doc = Jsonb({"type": "user", "data": {"status": "active"}})

    def raw_page(conn: Any, with_count: bool = False) -> Any:
        params = {"lo": "state:", "hi": "state;", "doc": doc, "now": time.time()}
        with conn.cursor() as cursor:
            cursor.execute(page_sql, params)
            items = [json.loads(v) for (v,) in cursor.fetchall()]
            if with_count:
                cursor.execute(count_sql, params)
                return items, cursor.fetchone()
        return items

    def library() -> Any:
        return manager.search_states("user", {"data.status": "active"})

    page = library()
    expected = raw_page(unprepared, True)
    assert [r["state_id"] for r in page.items] == [r["state_id"] for r in expected[0]]
    statement, parameters = _captured_statement(manager)
    plan = _plan(manager, statement, parameters)
    generic = _generic_plan(unprepared, statement, parameters)
    env.note(
        f"search_states(USER, {{'data.status': 'active'}}) over {count:,} states "
        f"({page.total:,} match; loaded in {loaded:.1f} s). PostgreSQL plan of the library's "
        "page query with its values (EXPLAIN ANALYZE):\n\n```\n" + "\n".join(plan) + "\n```\n\n"
        "Its generic plan, which PostgreSQL may switch a prepared statement to after five "
        "runs on one connection (psycopg prepares from the sixth):\n\n```\n"
        + "\n".join(generic)
        + "\n```"
    )
    samples = interleave(
        {
            "library": timed(library),
            "raw_prepared": timed(lambda: raw_page(prepared)),
            "raw_unprepared": timed(lambda: raw_page(unprepared)),
            "raw_count": timed(lambda: raw_page(unprepared, True)),
        },
        rounds=settings.rounds_for(15, 3),
    )
    best = min(("raw_prepared", "raw_unprepared"), key=lambda n: statistics.median(samples[n]))
    label = f"search_states(USER, data.status=active), first page of 50, {count:,} states"
    return [
        Row(f"{label}: the page query uses an index", None, None, note=_index_nodes(plan),
            status="PASS" if "Index" in _index_nodes(plan) else "FAIL"),
        compare(f"{label}: vs the raw page query (psycopg, {best.split('_')[1]}: the faster)",
                samples, "library", best, target=2.0),
        compare(f"{label}: vs the raw page query + a count of up to {SEARCH_COUNT_LIMIT + 1:,} "
                "(the Page's total)", samples, "library", "raw_count"),
    ]  # fmt: skip


def _index_nodes(plan: Sequence[str]) -> str:
    """The plan's index scan nodes, e.g. "Bitmap Index Scan on ix_..."."""
    nodes = [
        re.sub(r"\s*\(actual.*$", "", line.strip().removeprefix("->").strip())
        for line in plan
        if re.search(r"Index (Only )?Scan", line)
    ]
    return "; ".join(nodes) or "no index in the plan"


BENCHMARKS = [
    Benchmark("domain_update", "update_state with history on PostgreSQL", domain_update,
              ("redis", "postgres")),
    Benchmark("domain_get", "get_state on a local-cache hit", domain_get, ()),
    Benchmark("domain_search", "search_states over 100,000 states", domain_search,
              ("redis", "postgres")),
]  # fmt: skip

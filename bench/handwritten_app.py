"""The baseline of the HTTP benchmark (:mod:`bench.http`): a Flask app written by hand
for one kind of state, doing the REST blueprint's job on the same servers.

``GET /api/states/<id>`` reads cache-aside: a dict in the process, then Redis GET, then
a ``SELECT`` on PostgreSQL, filling Redis and the dict on the way back.
``POST /api/states/<id>/transitions`` applies an ``update``: ``SELECT ... FOR UPDATE``,
the ``UPDATE`` and the history ``INSERT`` in one transaction, then Redis DEL and the
dict entry dropped. It is what a careful user writes, and no more: no other process's
dict is told of a change, no metrics, no idempotency keys, no integrity checksum.

Served by gunicorn (``bench.handwritten_app:create_app()``), configured by the
environment variables below; :func:`create_tables` and :func:`seed` prepare its tables.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from flask import Flask, Response, jsonify, request

__all__ = [
    "DATABASE_ENV",
    "HISTORY_TABLE",
    "REDIS_PREFIX_ENV",
    "REDIS_URL_ENV",
    "STATES_TABLE",
    "create_app",
    "create_tables",
    "seed",
]

#: The libpq URL of the database.
DATABASE_ENV = "BENCH_HTTP_DATABASE_URL"
REDIS_URL_ENV = "BENCH_HTTP_REDIS_URL"
#: Prefix of the Redis keys of the records (``<prefix><state id>``).
REDIS_PREFIX_ENV = "BENCH_HTTP_REDIS_PREFIX"
STATES_TABLE = "hw_states"
HISTORY_TABLE = "hw_history"
#: Seconds a Redis copy lives (the library's HOT_TTL_SECONDS default).
REDIS_TTL = 3600
#: The transitions this app applies: an update keeps the status (a deleted state refuses).
TRANSITIONS = frozenset({"update"})
CHANGEABLE = ("name", "data", "metadata")

_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {STATES_TABLE} (state_id text PRIMARY KEY, "
    "version integer NOT NULL, status text NOT NULL, record text NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (id bigserial PRIMARY KEY, "
    "state_id text NOT NULL, version integer NOT NULL, transition text NOT NULL, "
    "from_status text, to_status text NOT NULL, old_record jsonb, new_record jsonb NOT NULL, "
    "correlation_id text, created_at timestamptz NOT NULL, UNIQUE (state_id, version))",
)
_SELECT = f"SELECT record FROM {STATES_TABLE} WHERE state_id = %s"
_UPDATE = f"UPDATE {STATES_TABLE} SET record = %s, version = %s, status = %s WHERE state_id = %s"
_HISTORY = (
    f"INSERT INTO {HISTORY_TABLE} (state_id, version, transition, from_status, to_status, "
    "old_record, new_record, correlation_id, created_at) "
    "VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s)"
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def create_tables(conn: Any) -> None:
    """The app's two tables, on a psycopg connection."""
    with conn.transaction():
        for statement in _SCHEMA:
            conn.execute(statement)


def seed(conn: Any, records: Iterable[dict[str, Any]]) -> None:
    """Insert ``records`` (with their version-1 history rows) on a psycopg connection."""
    now = datetime.now(timezone.utc)
    with conn.transaction(), conn.cursor() as cursor:
        rows = [(r["state_id"], r["version"], r["status"], _dumps(r)) for r in records]
        cursor.executemany(f"INSERT INTO {STATES_TABLE} VALUES (%s, %s, %s, %s)", rows)
        cursor.executemany(
            _HISTORY,
            [(i, v, "create", None, s, None, text, None, now) for i, v, s, text in rows],
        )


def _error(status: int, code: str, message: str) -> Response:
    response = jsonify({"error": code, "message": message})
    response.status_code = status
    return response


def create_app() -> Flask:
    """The app, on the servers the environment names (one connection per process)."""
    import psycopg
    import redis

    app = Flask(__name__)
    database_url = os.environ[DATABASE_ENV]
    client = redis.Redis.from_url(os.environ[REDIS_URL_ENV])
    prefix = os.environ[REDIS_PREFIX_ENV]
    records: dict[str, dict[str, Any]] = {}
    # gunicorn's sync workers serve one request at a time: one connection each
    connections: list[Any] = []

    def database() -> Any:
        if not connections:
            connections.append(psycopg.connect(database_url, autocommit=True))
        return connections[0]

    @app.get("/api/states/<state_id>")
    def get_state(state_id: str) -> Response:
        record = records.get(state_id)
        if record is None:
            text = client.get(prefix + state_id)
            if text is None:
                row = database().execute(_SELECT, (state_id,)).fetchone()
                if row is None:
                    return _error(404, "not_found", f"No state {state_id!r}.")
                text = row[0]
                client.set(prefix + state_id, text, ex=REDIS_TTL)
            record = records[state_id] = json.loads(text)
        return jsonify(record)

    @app.post("/api/states/<state_id>/transitions")
    def transition_state(state_id: str) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error(400, "invalid_request", "The body must be a JSON object.")
        transition = body.get("transition")
        if transition not in TRANSITIONS:
            return _error(422, "validation_error", f"Unknown transition {transition!r}.")
        if not isinstance(body.get("data", {}), dict) or not isinstance(
            body.get("metadata", {}), dict
        ):
            return _error(422, "validation_error", "data and metadata must be objects.")
        correlation_id = request.headers.get("X-Correlation-ID") or uuid.uuid4().hex
        conn = database()
        with conn.transaction():
            row = conn.execute(_SELECT + " FOR UPDATE", (state_id,)).fetchone()
            if row is None:
                return _error(404, "not_found", f"No state {state_id!r}.")
            old_text = row[0]
            old = json.loads(old_text)
            if old["status"] == "deleted":
                return _error(409, "invalid_transition", f"State {state_id!r} is deleted.")
            now = datetime.now(timezone.utc)
            new = {**old, "version": old["version"] + 1, "updated_at": now.isoformat()}
            new.update((name, body[name]) for name in CHANGEABLE if name in body)
            text = _dumps(new)
            conn.execute(_UPDATE, (text, new["version"], new["status"], state_id))
            conn.execute(
                _HISTORY,
                (state_id, new["version"], transition, old["status"], new["status"], old_text,
                 text, correlation_id, now),
            )  # fmt: skip
        client.delete(prefix + state_id)
        records.pop(state_id, None)
        response = jsonify(new)
        response.headers["X-Correlation-ID"] = correlation_id
        return response

    return app

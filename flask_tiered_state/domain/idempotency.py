"""Idempotency keys, with Stripe's semantics, for every mutation of the manager.

A caller (a client retrying a request after a timeout, the REST API's
``Idempotency-Key`` header, a timer) passes ``idempotency_key=``:

1. :meth:`IdempotencyKeys.begin` inserts the key as *running*, in a short transaction of
   its own, with a fingerprint of the call's parameters and a lease (the call's time
   budget and a margin). If the key exists: with other parameters the call is refused
   (:class:`~flask_tiered_state.errors.IdempotencyKeyReusedError`, 422); completed with
   the same parameters, its stored result is returned and nothing is applied (a
   *replay*); still running, the call is refused
   (:class:`~flask_tiered_state.errors.IdempotencyKeyInUseError`, 409) unless its lease
   ran out (its process died), in which case this call takes it over.
2. The mutation's transaction stores the result with the key (*done*): both commit or
   neither does. A retry after any error, an unknown outcome included, therefore finds
   either the stored result or a key it may run again -- exactly one history row.
3. A call that fails releases its key (only while it is still its own and running),
   so a retry runs again.

Keys expire ``ttl`` seconds after their first use (24 h by default); an expired key is
as good as new, and :meth:`IdempotencyKeys.prune` deletes them.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..errors import (
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    InvalidRequestError,
    TierUnavailableError,
)

__all__ = [
    "DEFAULT_IDEMPOTENCY_TABLE",
    "IdempotencyKeys",
    "IdempotentCall",
    "Lease",
    "check_idempotency_key",
    "define_idempotency_table",
    "fingerprint",
    "idempotent_call",
]

DEFAULT_IDEMPOTENCY_TABLE = "tiered_state_idempotency"
MAX_KEY_LENGTH = 255
#: Failed calls' leases kept for release at the key's next use (beyond: the lease runs out).
MAX_UNRELEASED = 10_000

_replay: contextvars.ContextVar[IdempotentCall | None] = contextvars.ContextVar(
    "flask_tiered_state_idempotent_call", default=None
)


def define_idempotency_table(
    metadata: sa.MetaData, name: str = DEFAULT_IDEMPOTENCY_TABLE
) -> sa.Table:
    """The idempotency keys' table on ``metadata`` (the existing one if defined)."""
    existing = metadata.tables.get(name)
    if existing is not None:
        return existing
    return sa.Table(
        name,
        metadata,
        sa.Column("key", sa.String(MAX_KEY_LENGTH), primary_key=True),
        sa.Column("operation", sa.String(40), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("locked_until", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Index(f"ix_{name}_expires", "expires_at"),
    )


def check_idempotency_key(key: object) -> str:
    """``key`` if it is 1 to 255 printable ASCII characters, else InvalidRequestError."""
    if (
        isinstance(key, str)
        and 1 <= len(key) <= MAX_KEY_LENGTH
        and key.isprintable()
        and (key.isascii())
    ):
        return key
    raise InvalidRequestError(
        f"Invalid idempotency key {key!r}: use 1 to {MAX_KEY_LENGTH} printable ASCII "
        "characters (a UUID is a good choice).",
        details={"idempotency_key": repr(key)[:300]},
    )


def fingerprint(operation: str, parameters: Mapping[str, Any]) -> str:
    """The sha256 of an operation and its parameters as canonical JSON."""
    text = json.dumps(
        {"operation": operation, "parameters": parameters},
        sort_keys=True,
        separators=(",", ":"),
        default=lambda v: getattr(v, "value", str(v)),
    )
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(slots=True)
class IdempotentCall:
    """What :func:`idempotent_call` tells its caller: whether the call was a replay."""

    replayed: bool = False


@contextmanager
def idempotent_call() -> Iterator[IdempotentCall]:
    """Within the block, a manager call that replays a stored result says so.

    Example::

        with idempotent_call() as call:
            record = manager.update_state(..., idempotency_key=key)
        if call.replayed:
            ...
    """
    call = IdempotentCall()
    token = _replay.set(call)
    try:
        yield call
    finally:
        _replay.reset(token)


def mark_replayed() -> None:
    call = _replay.get()
    if call is not None:
        call.replayed = True


@dataclass(frozen=True, slots=True)
class Lease:
    """A running key this call owns: complete it in the mutation's transaction."""

    key: str
    token: str
    result: Any = None
    replayed: bool = False


class IdempotencyKeys:
    """The keys in the WARM database.

    :param engine: the WARM database's engine.
    :param table: from :func:`define_idempotency_table`.
    :param ttl: seconds a key is remembered.
    """

    def __init__(self, engine: sa.Engine, table: sa.Table, *, ttl: float = 86400.0) -> None:
        self.engine = engine
        self.table = table
        self.ttl = ttl
        # leases of failed calls that could not be released (the database was away):
        # released before the key's next use in this process, not after the lease
        self._unreleased: dict[str, Lease] = {}
        self._lock = threading.Lock()

    def create(self) -> None:
        self.table.create(self.engine, checkfirst=True)

    def begin(
        self, key: str, operation: str, digest: str | Sequence[str], *, lease_seconds: float
    ) -> Lease:
        """Take ``key`` for a call, or return the replay of its completed first use.

        ``digest`` is the call's :func:`fingerprint`, or several: the first is stored and
        any of them matches a stored one.

        :raises IdempotencyKeyReusedError: the key was used with other parameters.
        :raises IdempotencyKeyInUseError: a call with the key is running.
        """
        with self._lock:
            failed = self._unreleased.pop(key, None)
        if failed is not None:
            self.release(failed)
        try:
            return self._begin(key, operation, digest, lease_seconds)
        except sa.exc.SQLAlchemyError as exc:
            raise TierUnavailableError(
                "warm",
                f"The idempotency key {key!r} could not be checked: the database did not "
                "answer. Nothing was applied; retry with the same key.",
                details={"idempotency_key": key},
            ) from exc

    def _begin(
        self, key: str, operation: str, digest: str | Sequence[str], lease_seconds: float
    ) -> Lease:
        t = self.table
        # several digests: the first is stored, any of them matches (keyed fingerprints,
        # one per master key while keys rotate)
        accepted = (digest,) if isinstance(digest, str) else tuple(digest)
        digest = accepted[0]
        for _ in range(3):
            now = time.time()
            token = uuid.uuid4().hex
            row = {
                "key": key, "operation": operation, "fingerprint": digest, "status": "running",
                "token": token, "result": None, "locked_until": now + lease_seconds,
                "created_at": now, "expires_at": now + self.ttl,
            }  # fmt: skip
            try:
                with self.engine.begin() as connection:
                    connection.execute(t.insert(), row)
                return Lease(key, token)
            except sa.exc.IntegrityError:
                pass
            except sa.exc.SQLAlchemyError:
                # the insert may have committed (a lost reply): free it at the next use
                with self._lock:
                    self._unreleased[key] = Lease(key, token)
                raise
            with self.engine.begin() as connection:
                found = connection.execute(sa.select(t).where(t.c.key == key)).mappings().first()
                if found is None:
                    continue  # released meanwhile: take it
                if found["expires_at"] <= now:
                    connection.execute(
                        t.delete().where(t.c.key == key, t.c.token == found["token"])
                    )
                    continue
                if found["fingerprint"] not in accepted or found["operation"] != operation:
                    raise IdempotencyKeyReusedError(
                        f"Idempotency key {key!r} was first used for another request "
                        f"({found['operation']} with other parameters); a key names one "
                        "request. Use a new key for a new request.",
                        details={"idempotency_key": key, "operation": found["operation"]},
                    )
                if found["status"] == "done":
                    mark_replayed()
                    return Lease(key, found["token"], json.loads(found["result"]), True)
                if found["locked_until"] > now:
                    raise IdempotencyKeyInUseError(
                        f"A request with idempotency key {key!r} is still running; retry "
                        "after it ended to get its result.",
                        details={"idempotency_key": key},
                    )
                taken = connection.execute(
                    t.update()
                    .where(t.c.key == key, t.c.token == found["token"], t.c.status == "running")
                    .values(token=token, locked_until=now + lease_seconds)
                ).rowcount
                if taken == 1:  # its first call died: this one runs it
                    return Lease(key, token)
        raise IdempotencyKeyInUseError(
            f"Idempotency key {key!r} is contended; retry.", details={"idempotency_key": key}
        )

    def complete(self, connection: sa.Connection, lease: Lease, result: Any) -> None:
        """Store ``result`` with the key on the mutation's connection (its transaction).

        :raises IdempotencyKeyInUseError: the lease ran out and another call took the key
            (the mutation's transaction then rolls back).
        """
        t = self.table
        done = connection.execute(
            t.update()
            .where(t.c.key == lease.key, t.c.token == lease.token, t.c.status == "running")
            .values(status="done", result=json.dumps(result, separators=(",", ":")))
        ).rowcount
        if done != 1:
            raise IdempotencyKeyInUseError(
                f"Idempotency key {lease.key!r} was taken over by another call after this "
                "one outlived its lease; nothing of this call was applied.",
                details={"idempotency_key": lease.key},
            )

    def release(self, lease: Lease) -> None:
        """Free the key of a call that failed (while it is this call's and running)."""
        t = self.table
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    t.delete().where(
                        t.c.key == lease.key, t.c.token == lease.token, t.c.status == "running"
                    )
                )
        except sa.exc.SQLAlchemyError:
            # the database is away: released at the key's next use here, or the lease
            # runs out (another process)
            with self._lock:
                self._unreleased[lease.key] = lease
                if len(self._unreleased) > MAX_UNRELEASED:  # a long outage: the oldest wait
                    del self._unreleased[next(iter(self._unreleased))]

    def prune(self, now: float | None = None) -> int:
        """Delete expired keys; how many."""
        t = self.table
        moment = time.time() if now is None else now
        with self.engine.begin() as connection:
            return int(connection.execute(t.delete().where(t.c.expires_at <= moment)).rowcount)

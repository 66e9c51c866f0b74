"""A write whose reply is lost is resolved, not guessed, and leaves nothing stale.

PostgreSQL is reached through a fault proxy that lets the server process a request (a
COMMIT commits) and then drops its reply and resets the connection. Before the fix, the
caller got ``TierUnavailableError`` for a committed change, every process went on reading
the old version from its HOT copy (an hour of TTL left), every later update failed with
``ConcurrencyError`` because the conflict re-read trusted that copy, and a session's HOT
write was undone although its history row had committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flask_tiered_state import StateManager
from flask_tiered_state.domain.idempotency import idempotent_call
from flask_tiered_state.errors import (
    ConcurrencyError,
    OutcomeUnknownError,
    TierUnavailableError,
)

from .tcp_proxy import FaultProxy
from .workers import Servers, open_manager

pytestmark = pytest.mark.slow


@pytest.fixture
def make(
    private_redis: Any, postgres_db: str, proxied_postgres_url: str, tmp_path: Any
) -> Iterator[Callable[..., StateManager]]:
    """Managers on the private Redis and PostgreSQL: ``proxied=True`` reaches PostgreSQL
    through the fault proxy. Each is another process as far as caches go (a store of its
    own, with its own cache and invalidation subscriber)."""
    built: list[StateManager] = []
    prefix = f"lost{time.monotonic_ns()}:"

    def manager(*, proxied: bool = False) -> StateManager:
        servers = Servers(
            redis_url=private_redis.url,
            database_uri=proxied_postgres_url if proxied else postgres_db,
            key_prefix=prefix,
            local_dir=str(tmp_path),
        )
        # No journal replays: every connection of a proxied store is the test's own.
        built.append(open_manager(servers, drop_replay_interval=None))
        return built[-1]

    yield manager
    for each in built:
        each.close()


def eventually(check: Callable[[], bool], what: str, timeout: float = 2.0) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"not within {timeout} s: {what}"
        time.sleep(0.005)
    return time.monotonic() - started


def version(manager: StateManager, state_id: str) -> int:
    record = manager.get_state(state_id)
    assert record is not None
    return int(record["version"])


def assert_consistent(make: Callable[..., StateManager], state_id: str, expected: int) -> None:
    """A new process reads ``expected`` at once, history has as many rows, and the state
    accepts an update (it is not wedged)."""
    fresh = make()
    assert version(fresh, state_id) == expected
    assert fresh.history.count(state_id) == expected
    after = fresh.update_state(state_id, {"data": {"after": True}}, expected_version=expected)
    assert after["version"] == expected + 1


def test_lost_reply_of_a_one_statement_update_is_resolved_as_committed(
    make: Callable[..., StateManager], pg_proxy: FaultProxy
) -> None:
    writer, other = make(proxied=True), make()
    writer.register_state("u", "user", {"data": {"n": 0}})
    writer.update_state("u", {"data": {"n": 1}}, expected_version=1)
    assert writer.promote_to_hot("u")  # a HOT copy with an hour to live
    assert version(other, "u") == 2  # cached in the other process too

    pg_proxy.drop_reply_to(b"lost-reply-one")
    updated = writer.update_state("u", {"data": {"n": "lost-reply-one"}}, expected_version=2)
    assert pg_proxy.dropped_replies == 1  # the fault happened: the reply never came

    assert updated["version"] == 3  # the caller is told the truth: it committed
    assert version(writer, "u") == 3
    seen = eventually(lambda: version(other, "u") == 3, "the other process sees it")
    print(f"\nlost reply (one statement): other process current after {seen * 1000:.1f} ms")
    assert_consistent(make, "u", 3)


def test_lost_commit_reply_of_a_session_is_resolved_and_not_undone(
    make: Callable[..., StateManager], pg_proxy: FaultProxy
) -> None:
    writer, other = make(proxied=True), make()
    writer.register_state("s", "session", {"data": {"n": 0}})
    assert version(other, "s") == 1

    pg_proxy.drop_reply_to(b"COMMIT")
    updated = writer.update_state("s", {"data": {"n": 1}}, expected_version=1)
    assert pg_proxy.dropped_replies == 1

    assert updated["version"] == 2  # committed, and its HOT write kept (not undone)
    assert version(writer, "s") == 2
    eventually(lambda: version(other, "s") == 2, "the other process sees it")
    assert_consistent(make, "s", 2)


def test_lost_commit_reply_of_a_registration_is_resolved(
    make: Callable[..., StateManager], pg_proxy: FaultProxy
) -> None:
    writer = make(proxied=True)
    pg_proxy.drop_reply_to(b"COMMIT")
    created = writer.register_state("r", "user", {"data": {"n": 0}})
    assert pg_proxy.dropped_replies == 1
    assert created["version"] == 1
    assert_consistent(make, "r", 1)


def test_a_write_whose_statement_never_committed_is_reported_failed_and_undone(
    make: Callable[..., StateManager], pg_proxy: FaultProxy
) -> None:
    """The connection breaks on the history INSERT, before COMMIT: nothing committed; the
    session's HOT write (applied just before the commit) never happened or is undone."""
    writer, other = make(proxied=True), make()
    writer.register_state("s", "session", {"data": {"n": 0}})
    pg_proxy.drop_reply_to(b"never-committed")
    with pytest.raises(TierUnavailableError) as caught:
        writer.update_state("s", {"data": {"n": "never-committed"}}, expected_version=1)
    assert not isinstance(caught.value, OutcomeUnknownError)
    assert pg_proxy.dropped_replies == 1
    assert version(writer, "s") == 1 and version(other, "s") == 1
    assert_consistent(make, "s", 1)


def test_an_unresolvable_outcome_is_reported_and_leaves_no_stale_copy(
    make: Callable[..., StateManager], pg_proxy: FaultProxy
) -> None:
    """The reply is lost and the database cannot be asked (new connections are refused):
    OutcomeUnknownError, every older copy dropped; once the database answers, every
    process reads what it holds, and a retry with the same version tells what happened."""
    setup, other = make(), make()
    setup.register_state("u", "user", {"data": {"n": 0}})
    assert setup.promote_to_hot("u")
    assert version(other, "u") == 1
    writer = make(proxied=True)
    assert version(writer, "u") == 1  # its one pooled connection, through the proxy

    pg_proxy.refuse()  # the check of the outcome will need a new connection: refused
    pg_proxy.drop_reply_to(b"unknown-outcome")
    with pytest.raises(OutcomeUnknownError):
        writer.update_state("u", {"data": {"n": "unknown-outcome"}}, expected_version=1)
    pg_proxy.heal()
    assert pg_proxy.dropped_replies == 1

    # It did commit (the reply was lost after the commit): nobody reads version 1 now.
    assert version(make(), "u") == 2  # no HOT copy left to shadow it
    eventually(lambda: version(other, "u") == 2, "the other process sees it")
    assert version(writer, "u") == 2
    with pytest.raises(ConcurrencyError) as retried:  # the retry says it was applied
        writer.update_state("u", {"data": {"n": "unknown-outcome"}}, expected_version=1)
    assert retried.value.actual == 2
    assert_consistent(make, "u", 2)


def test_a_retry_with_the_idempotency_key_after_an_unknown_outcome_replays_it(
    make: Callable[..., StateManager], pg_proxy: FaultProxy
) -> None:
    """The client's retry after OutcomeUnknownError, with the same key, gets the first
    result and applies nothing: one history row."""
    setup = make()
    setup.register_state("u", "user", {"data": {"credit": 0}})
    writer = make(proxied=True)
    assert version(writer, "u") == 1

    begin = writer.idempotency.begin

    def then_lose_the_commit_reply(*args: Any, **kwargs: Any) -> Any:
        lease = begin(*args, **kwargs)  # the key is taken; now the mutation's COMMIT:
        pg_proxy.refuse()  # its outcome cannot be checked
        pg_proxy.drop_reply_to(b"COMMIT")
        return lease

    writer.idempotency.begin = then_lose_the_commit_reply  # type: ignore[method-assign]
    with pytest.raises(OutcomeUnknownError):
        writer.update_state("u", {"data": {"credit": 42}}, idempotency_key="charge-42")
    pg_proxy.heal()
    writer.idempotency.begin = begin  # type: ignore[method-assign]
    assert pg_proxy.dropped_replies == 1

    with idempotent_call() as call:
        retried = writer.update_state("u", {"data": {"credit": 42}}, idempotency_key="charge-42")
    assert call.replayed and retried["version"] == 2
    assert [r["transition"] for r in setup.get_state_history("u")] == ["create", "update"]


def test_a_retry_with_the_idempotency_key_after_a_failure_with_the_database_away_runs(
    make: Callable[..., StateManager], pg_proxy: FaultProxy
) -> None:
    """The write broke before its commit and the key could not be released then (the
    database refused connections): the same process's retry, once it answers, runs at
    once (no 409 for the lease's length) and applies the change once."""
    setup = make()
    setup.register_state("u", "user", {"data": {"credit": 0}})
    writer = make(proxied=True)
    assert version(writer, "u") == 1

    pg_proxy.refuse()
    pg_proxy.drop_reply_to(b"charge-43")  # the UPDATE's reply: the COMMIT is never sent
    with pytest.raises(TierUnavailableError):
        writer.update_state("u", {"data": {"credit": "charge-43"}}, idempotency_key="c43")
    pg_proxy.heal()

    with idempotent_call() as call:
        retried = writer.update_state("u", {"data": {"credit": "charge-43"}}, idempotency_key="c43")
    assert not call.replayed and retried["version"] == 2
    assert [r["transition"] for r in setup.get_state_history("u")] == ["create", "update"]


BATCH = [f"b{n}" for n in range(20)]


def _batch_with_hot_copies(make: Callable[..., StateManager]) -> tuple[StateManager, StateManager]:
    """A writer reaching PostgreSQL through the proxy, and another process that has every
    state of :data:`BATCH` cached at version 1, each with a HOT copy (an hour to live)."""
    writer, other = make(proxied=True), make()
    writer.batch_set_state({i: {"type": "user", "data": {"n": 0}} for i in BATCH})
    assert all(writer.promote_to_hot(i) for i in BATCH)
    assert all(version(other, i) == 1 for i in BATCH)
    return writer, other


def test_lost_commit_reply_of_a_batch_is_resolved_for_every_state(
    make: Callable[..., StateManager], pg_proxy: FaultProxy
) -> None:
    """A batch update's COMMIT commits and its reply is lost: the caller is told every
    state's new version, no process reads an old one from a HOT copy, and each state has
    one history row per version."""
    writer, other = _batch_with_hot_copies(make)
    pg_proxy.drop_reply_to(b"COMMIT")
    done = writer.batch_update_state({i: {"data": {"n": "lost-batch"}} for i in BATCH})
    assert pg_proxy.dropped_replies == 1
    assert {i: r["version"] for i, r in done.items()} == dict.fromkeys(BATCH, 2)
    seen = eventually(
        lambda: all(version(other, i) == 2 for i in BATCH), "the other process sees all"
    )
    print(f"\nlost reply (batch of {len(BATCH)}): other process current after {seen * 1000:.1f} ms")
    fresh = make()
    assert fresh.batch_get_state(BATCH).keys() == set(BATCH)
    assert {r["version"] for r in fresh.batch_get_state(BATCH).values()} == {2}
    assert all(fresh.history.count(i) == 2 for i in BATCH)
    assert_consistent(make, BATCH[0], 2)


def test_a_batch_whose_statement_never_committed_changes_no_state(
    make: Callable[..., StateManager], pg_proxy: FaultProxy
) -> None:
    """The connection breaks inside the batch's transaction, before COMMIT: the caller
    gets an error, and every process reads every state at version 1 (all or nothing)."""
    writer, other = _batch_with_hot_copies(make)
    pg_proxy.drop_reply_to(b"never-committed-batch")
    with pytest.raises(TierUnavailableError) as caught:
        writer.batch_update_state({i: {"data": {"n": "never-committed-batch"}} for i in BATCH})
    assert not isinstance(caught.value, OutcomeUnknownError)
    assert pg_proxy.dropped_replies == 1
    fresh = make()
    assert {r["version"] for r in fresh.batch_get_state(BATCH).values()} == {1}
    assert all(version(p, i) == 1 for p in (writer, other) for i in BATCH)
    assert all(fresh.history.count(i) == 1 for i in BATCH)
    assert_consistent(make, BATCH[-1], 1)

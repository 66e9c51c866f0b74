"""The fault infrastructure itself: each fault really happens, against real servers.

These tests talk to the servers with psycopg and redis-py directly, not the library.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import DisposableRedis

from .servers import PrivatePostgres, libpq_url
from .tcp_proxy import FaultProxy


def wait_until(predicate: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@contextmanager
def redis_client(url: str, **kwargs: Any) -> Iterator[redis.Redis]:
    """A client that never retries, so each fault surfaces as an error."""
    options: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2}
    with redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **(options | kwargs)) as client:
        yield client


def pg_connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(libpq_url(url), connect_timeout=5, **kwargs)


# --------------------------------------------------------------------------- forwarding


def test_proxy_forwards_postgres(pg_proxy: FaultProxy, proxied_postgres_url: str) -> None:
    with pg_connect(proxied_postgres_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert pg_proxy.connections == 1
        payload = "x" * 4_000_000
        row = conn.execute("SELECT length(%s::text), repeat('y', 3000000)", (payload,)).fetchone()
        assert row == (4_000_000, "y" * 3_000_000)

    def query(n: int) -> int:
        with pg_connect(proxied_postgres_url) as conn:
            row = conn.execute("SELECT %s::int FROM pg_sleep(0.1)", (n,)).fetchone()
            assert row is not None
            return int(row[0])

    with ThreadPoolExecutor(40) as pool:
        assert list(pool.map(query, range(80))) == list(range(80))
    wait_until(lambda: pg_proxy.connections == 0)


def test_proxy_forwards_redis(redis_proxy: FaultProxy, proxied_redis_url: str) -> None:
    with redis_client(proxied_redis_url, max_connections=50) as client:
        value = bytes(range(256)) * 40_000  # 10 MB
        client.set("big", value)
        assert client.get("big") == value

        def bump(_: int) -> None:
            for _ in range(50):
                client.incr("counter")

        with ThreadPoolExecutor(20) as pool:
            list(pool.map(bump, range(20)))
        assert client.get("counter") == b"1000"
        assert redis_proxy.connections > 1
    wait_until(lambda: redis_proxy.connections == 0)


# --------------------------------------------------------------------------- black hole


def test_black_hole_times_out_redis_until_healed(
    redis_proxy: FaultProxy, proxied_redis_url: str
) -> None:
    with redis_client(proxied_redis_url, socket_timeout=0.5) as client:
        assert client.ping()
        redis_proxy.black_hole()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        with pytest.raises(redis.TimeoutError):  # a new connection hangs too
            client.ping()
        redis_proxy.heal()
        assert client.ping()


def test_black_hole_hangs_psycopg_until_reset(
    pg_proxy: FaultProxy, proxied_postgres_url: str
) -> None:
    with pg_connect(proxied_postgres_url) as conn, ThreadPoolExecutor(1) as pool:
        conn.execute("SELECT 1")
        pg_proxy.black_hole()
        future = pool.submit(lambda: conn.execute("SELECT 2").fetchone())
        time.sleep(1)
        assert not future.done()
        pg_proxy.reset_all()
        with pytest.raises(psycopg.OperationalError):
            future.result(timeout=5)
    pg_proxy.heal()
    with pg_connect(proxied_postgres_url) as conn:
        assert conn.execute("SELECT 3").fetchone() == (3,)


# --------------------------------------------------------------------------- reset, refuse


def test_reset_all_breaks_existing_connections(
    pg_proxy: FaultProxy, proxied_postgres_url: str
) -> None:
    with pg_connect(proxied_postgres_url) as conn:
        conn.execute("SELECT 1")
        pg_proxy.reset_all()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        assert conn.broken
    with pg_connect(proxied_postgres_url) as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_reset_all_breaks_a_redis_command_in_flight(
    redis_proxy: FaultProxy, proxied_redis_url: str
) -> None:
    # redis-py's pool silently replaces an idle connection that was reset (it checks
    # whether the socket is readable before use), so the reset must hit a command.
    with redis_client(proxied_redis_url, socket_timeout=None) as client:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(client.blpop, ["queue"], 10)
            wait_until(lambda: redis_proxy.connections == 1)
            time.sleep(0.2)  # the BLPOP has reached the server
            redis_proxy.reset_all()
            with pytest.raises(redis.ConnectionError):
                future.result(timeout=5)
        assert client.ping()  # a new connection


def test_refuse_resets_new_connections_only(
    pg_proxy: FaultProxy, proxied_postgres_url: str
) -> None:
    with pg_connect(proxied_postgres_url) as existing:
        pg_proxy.refuse()
        with pytest.raises(psycopg.OperationalError):
            pg_connect(proxied_postgres_url)
        assert existing.execute("SELECT 1").fetchone() == (1,)
        pg_proxy.heal()
        with pg_connect(proxied_postgres_url) as conn:
            assert conn.execute("SELECT 2").fetchone() == (2,)


# --------------------------------------------------------------------------- lost replies


def test_lost_commit_reply_still_commits(
    pg_proxy: FaultProxy, postgres_db: str, proxied_postgres_url: str
) -> None:
    with pg_connect(postgres_db, autocommit=True) as direct:
        direct.execute("CREATE TABLE item (id int)")
    with pg_connect(proxied_postgres_url) as conn:
        conn.execute("INSERT INTO item VALUES (1)")
        pg_proxy.drop_reply_to(b"COMMIT")
        with pytest.raises(psycopg.OperationalError):
            conn.commit()
    assert pg_proxy.dropped_replies == 1
    with pg_connect(postgres_db) as direct:
        assert direct.execute("SELECT id FROM item").fetchall() == [(1,)]


def test_drop_reply_finds_a_pattern_split_over_two_reads(redis_proxy: FaultProxy) -> None:
    redis_proxy.drop_reply_to(b"GET pending")
    with socket.create_connection(("127.0.0.1", redis_proxy.port), timeout=5) as sock:
        sock.sendall(b"SET pending ")
        time.sleep(0.2)  # the proxy reads the two halves separately
        sock.sendall(b"1\r\nGET pen")
        assert sock.recv(100) == b"+OK\r\n"
        time.sleep(0.2)
        sock.sendall(b"ding\r\n")
        try:
            reply = sock.recv(100)
        except ConnectionResetError:
            reply = b""
        assert reply == b""
    assert redis_proxy.dropped_replies == 1
    with redis_client(f"redis://127.0.0.1:{redis_proxy.port}/0") as client:
        assert client.get("pending") == b"1"  # disarmed after one match


def test_drop_next_reply_applies_the_command(
    redis_proxy: FaultProxy, private_redis: DisposableRedis, proxied_redis_url: str
) -> None:
    with redis_client(proxied_redis_url) as client, redis_client(private_redis.url) as direct:
        assert client.ping()  # connected: the next chunk is the SET
        redis_proxy.drop_next_reply()
        with pytest.raises(redis.ConnectionError):
            client.set("lost-reply", "applied")
        assert direct.get("lost-reply") == b"applied"
        assert client.set("second", "ok")
    assert redis_proxy.dropped_replies == 1


def test_drop_reply_to_counts_matches_across_connections(
    redis_proxy: FaultProxy, proxied_redis_url: str
) -> None:
    redis_proxy.drop_reply_to(b"INCR", count=2)
    with redis_client(proxied_redis_url) as first, redis_client(proxied_redis_url) as second:
        first.ping()
        second.ping()
        for client in (first, second):
            with pytest.raises(redis.ConnectionError):
                client.incr("n")
        assert first.incr("n") == 3
    assert redis_proxy.dropped_replies == 2


# --------------------------------------------------------------------------- the server itself


def test_pause_blocks_queries_until_resume(
    postgres_fault: PrivatePostgres, postgres_db: str
) -> None:
    with pg_connect(postgres_db) as conn, ThreadPoolExecutor(1) as pool:
        conn.execute("SELECT 1")
        postgres_fault.pause()
        try:
            assert postgres_fault.paused
            future = pool.submit(lambda: conn.execute("SELECT 2").fetchone())
            time.sleep(1)
            assert not future.done()
        finally:
            postgres_fault.resume()
        assert future.result(timeout=10) == (2,)


def test_immediate_stop_then_start(
    postgres_fault: PrivatePostgres,
    postgres_db: str,
    pg_proxy: FaultProxy,
    proxied_postgres_url: str,
) -> None:
    with pg_connect(postgres_db) as conn:
        conn.execute("SELECT 1")
        postgres_fault.stop(mode="immediate")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    assert postgres_fault.postmaster_pid() is None
    with pytest.raises(psycopg.OperationalError):
        pg_connect(postgres_db)
    with pytest.raises(psycopg.OperationalError):  # the proxy passes "down" on as a reset
        pg_connect(proxied_postgres_url)
    postgres_fault.start()
    for url in (postgres_db, proxied_postgres_url):
        with pg_connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)

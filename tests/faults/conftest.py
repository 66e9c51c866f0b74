"""Fixtures of the fault tests: private servers, and fault proxies in front of them.

Nothing here reaches the shared servers on 127.0.0.1:5432 and :6379: PostgreSQL is a
cluster of the session's own (``PrivatePostgres``) and Redis a ``DisposableRedis`` per
test, so a test may cut, stop or pause them freely.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DisposableRedis, unique_name

from .servers import PrivatePostgres
from .tcp_proxy import FaultProxy
from .workers import Servers

_HERE = Path(__file__).parent
_POSTGRES_FIXTURES = frozenset(
    {"private_postgres", "postgres_fault", "postgres_db", "pg_proxy", "proxied_postgres_url",
     "servers", "local_cold_servers"}
)  # fmt: skip
_REDIS_FIXTURES = frozenset(
    {"private_redis", "redis_proxy", "proxied_redis_url", "servers", "local_cold_servers"}
)


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the fault tests ``postgres`` / ``redis`` by the fixtures they use."""
    for item in items:
        if _HERE not in item.path.parents:
            continue
        used = set(getattr(item, "fixturenames", ()))
        if used & _POSTGRES_FIXTURES:
            item.add_marker(pytest.mark.postgres)
        if used & _REDIS_FIXTURES:
            item.add_marker(pytest.mark.redis)


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """The session's own PostgreSQL cluster, removed at the end of the session."""
    pytest.importorskip("psycopg")
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def postgres_fault(private_postgres: PrivatePostgres) -> Iterator[PrivatePostgres]:
    """The private server, for a test that stops or pauses it: running again afterwards."""
    private_postgres.ensure_running()
    yield private_postgres
    private_postgres.ensure_running()


@pytest.fixture
def postgres_db(private_postgres: PrivatePostgres) -> Iterator[str]:
    """The SQLAlchemy URL of a fresh database on the private server, dropped afterwards."""
    private_postgres.ensure_running()
    name = unique_name("fault_")
    url = private_postgres.create_database(name)
    yield url
    private_postgres.ensure_running()  # the test may have left it stopped or paused
    private_postgres.drop_database(name)


@pytest.fixture
def pg_proxy(private_postgres: PrivatePostgres) -> Iterator[FaultProxy]:
    """A ``FaultProxy`` in front of the private PostgreSQL."""
    with FaultProxy("127.0.0.1", private_postgres.port) as proxy:
        yield proxy


@pytest.fixture
def proxied_postgres_url(
    private_postgres: PrivatePostgres, postgres_db: str, pg_proxy: FaultProxy
) -> str:
    """``postgres_db``'s SQLAlchemy URL through ``pg_proxy``."""
    return private_postgres.url(postgres_db.rsplit("/", 1)[1], port=pg_proxy.port)


# --------------------------------------------------------------------------- Redis


@pytest.fixture
def private_redis(disposable_redis: DisposableRedis) -> Iterator[DisposableRedis]:
    """A redis-server of this test's own (``tests/conftest.py``'s ``disposable_redis``)."""
    pytest.importorskip("redis")
    yield disposable_redis
    if disposable_redis.process is not None:
        # A SIGSTOPped redis-server would not act on the SIGTERM that stops it.
        with contextlib.suppress(ProcessLookupError):
            os.kill(disposable_redis.process.pid, signal.SIGCONT)


@pytest.fixture
def redis_proxy(private_redis: DisposableRedis) -> Iterator[FaultProxy]:
    """A ``FaultProxy`` in front of ``private_redis``."""
    with FaultProxy("127.0.0.1", private_redis.port) as proxy:
        yield proxy


@pytest.fixture
def proxied_redis_url(redis_proxy: FaultProxy) -> str:
    """``private_redis``'s URL through ``redis_proxy``."""
    return f"redis://127.0.0.1:{redis_proxy.port}/0"


# --------------------------------------------------------------------------- all tiers


@pytest.fixture
def local_cold_servers(private_redis: DisposableRedis, postgres_db: str, tmp_path: Path) -> Servers:
    """The test's private Redis and PostgreSQL database, with COLD in a directory (for
    the scenarios that do not move states to COLD)."""
    return Servers(
        redis_url=private_redis.url,
        database_uri=postgres_db,
        key_prefix=unique_name("faults:") + ":",
        local_dir=str(tmp_path),
    )


@pytest.fixture
def servers(
    private_redis: DisposableRedis, postgres_db: str, s3_bucket: str, s3_endpoint_url: str
) -> Servers:
    """Where the scenario's managers keep their states: the test's private Redis and
    PostgreSQL database, and a bucket of its own on moto's S3 server."""
    return Servers(
        redis_url=private_redis.url,
        database_uri=postgres_db,
        key_prefix=unique_name("faults:") + ":",
        s3_bucket=s3_bucket,
        s3_endpoint_url=s3_endpoint_url,
    )

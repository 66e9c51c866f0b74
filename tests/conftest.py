"""Fixtures that reach the real servers.

Redis and PostgreSQL are the servers on 127.0.0.1 (``make test`` starts them);
S3 is moto's standalone server on a free loopback port, reached by boto3 over
HTTP. A test that needs an absent server is skipped with the reason, except when
``TIERED_STATE_REQUIRE_SERVICES=1`` (CI): then it fails.

Every run uses its own PostgreSQL database, Redis key prefix and S3 buckets, so
concurrent runs never see each other's data.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REQUIRE_SERVICES = os.environ.get("TIERED_STATE_REQUIRE_SERVICES") == "1"
REDIS_URL = os.environ.get("TIERED_STATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN_URL = os.environ.get(
    "TIERED_STATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RUN_ID = uuid.uuid4().hex[:10]


def unavailable(reason: str) -> None:
    """Skip locally; fail where the services are required (CI)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (TIERED_STATE_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


#: Debian's Chromium (``make browsers``), driven by Playwright's Python package through
#: ``executable_path``: Playwright's own browser downloads are never used.
CHROMIUM = os.environ.get("TIERED_STATE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium, one for the whole run: Playwright's sync API allows one
    instance per thread at a time, so every browser test (dashboard, docs, demo pages)
    shares it. Without Chromium the tests skip (fail when the services are required)."""
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(
            f"Chromium is not installed at {CHROMIUM}; run `make browsers` "
            "(apt-get install chromium chromium-driver) or set TIERED_STATE_CHROMIUM"
        )
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """The screenshot folder, ``test-artifacts/`` at the project root (git-ignored)."""
    folder = Path(request.config.rootpath) / "test-artifacts"
    folder.mkdir(exist_ok=True)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique_name(prefix: str) -> str:
    return f"{prefix}{RUN_ID}{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def run_id() -> str:
    return RUN_ID


#: The "services" side of a backend parametrisation (the other side: "embedded").
SERVICES = pytest.param("services", marks=[pytest.mark.redis, pytest.mark.postgres, pytest.mark.s3])


def services_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """App configuration that points at Redis, PostgreSQL and S3 (moto); the fixtures it
    requests clean up after the test."""
    request.getfixturevalue("postgres_engine")  # drops the test's tables afterwards
    return {
        "TIERED_STATE_HOT_URL": request.getfixturevalue("redis_url"),
        "TIERED_STATE_KEY_PREFIX": request.getfixturevalue("redis_prefix"),
        "TIERED_STATE_WARM_URL": request.getfixturevalue("postgres_url"),
        "TIERED_STATE_COLD_URL": s3_url(
            request.getfixturevalue("s3_bucket"), request.getfixturevalue("s3_endpoint_url")
        ),
    }


# --------------------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_url() -> str:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis is not reachable at {REDIS_URL}: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; its keys are deleted afterwards."""
    import redis

    prefix = f"tst:{unique_name('')}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


@dataclass
class DisposableRedis:
    """A private redis-server a fault test may stop and start again."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def disposable_redis() -> Iterator[DisposableRedis]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed; fault tests start a private one")
    server = DisposableRedis(port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a database created for this run and dropped after it."""
    psycopg = pytest.importorskip("psycopg")
    name = f"tiered_state_test_{RUN_ID}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    yield f"{base}/{name}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_engine(postgres_url: str) -> Iterator[Any]:
    """An engine on the run's database; the test's tables are dropped afterwards."""
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url, connect_args={"connect_timeout": 5})
    yield engine
    engine.dispose()
    reset = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with reset.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    reset.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def sql_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An engine on each SQL database: a SQLite file, and the run's PostgreSQL database
    (:func:`postgres_engine`: the test's tables are dropped afterwards)."""
    if request.param == "postgresql":
        yield request.getfixturevalue("postgres_engine")
        return
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'database.sqlite3'}")
    yield engine
    engine.dispose()


# --------------------------------------------------------------------------- S3 (moto server)


@pytest.fixture(scope="session")
def s3_endpoint_url() -> Iterator[str]:
    """moto's standalone S3 server on a free loopback port, reached over HTTP."""
    pytest.importorskip("boto3")
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # pragma: no cover - moto[server] is a test dependency
        unavailable(f"moto[server] is not installed: {exc}")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_url(bucket: str | None, endpoint_url: str | None, prefix: str = "") -> str | None:
    """The COLD tier's URL for a bucket on the moto server (None: no bucket)."""
    if bucket is None:
        return None
    query = f"?endpoint_url={endpoint_url}&region_name=us-east-1" if endpoint_url else ""
    return f"s3://{bucket}/{prefix}{query}"


def s3_client(endpoint_url: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def s3_bucket(s3_endpoint_url: str) -> Iterator[str]:
    """A bucket created for this test on the moto server, emptied and removed afterwards."""
    name = unique_name("tst-").lower()
    client = s3_client(s3_endpoint_url)
    client.create_bucket(Bucket=name)
    yield name
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objects:
            client.delete_objects(Bucket=name, Delete={"Objects": objects})
    client.delete_bucket(Bucket=name)

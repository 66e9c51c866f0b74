"""The services a run uses, each private to it and removed at the end.

Redis keys live under ``bench:<run id>:``; PostgreSQL work happens in databases
created for the run (``tiered_state_bench_<run id>_<name>``) and dropped with
``FORCE``; S3 is moto's standalone server, started as a separate process on a free
loopback port (as a real S3 is remote: its request handling must not compete with
the measured code for this process's GIL), with buckets created for the run.
Servers are reached as the test suite reaches them (``TIERED_STATE_TEST_REDIS_URL``,
``TIERED_STATE_TEST_POSTGRES_URL``).
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["BenchEnv", "ServiceUnavailable"]

REDIS_URL = os.environ.get("TIERED_STATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN_URL = os.environ.get(
    "TIERED_STATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
#: AWS test credentials, for the moto server and for the library's boto3 clients.
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: moto's standalone server; ``-H 127.0.0.1 -p PORT`` are appended.
MOTO_COMMAND = (sys.executable, "-m", "moto.server")
#: Seconds to wait for a started moto server to answer (importing moto takes a few).
MOTO_START_TIMEOUT = 30.0
T = TypeVar("T")


class ServiceUnavailable(RuntimeError):
    """A server a benchmark needs is not reachable; the benchmark is skipped."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_http(server: subprocess.Popen[bytes], port: int, timeout: float) -> str | None:
    """None once ``server`` answers HTTP on ``port``; else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return f"exited with status {server.returncode} before answering"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return None
        except (OSError, http.client.HTTPException):  # not listening yet, or starting
            time.sleep(0.1)
        finally:
            conn.close()
    return f"did not answer on port {port} within {timeout:g} s"


class BenchEnv:
    """Lazily started, run-private services; :meth:`close` removes everything made.

    :param s3_endpoint_url: use this S3 endpoint instead of starting moto.
    """

    def __init__(
        self,
        *,
        redis_url: str = REDIS_URL,
        postgres_admin_url: str = POSTGRES_ADMIN_URL,
        s3_endpoint_url: str | None = None,
    ) -> None:
        self.run_id = uuid.uuid4().hex[:10]
        self._redis_url = redis_url
        self._admin_url = postgres_admin_url
        self._s3_endpoint = s3_endpoint_url
        self._s3_failure: str | None = None
        self._redis_checked = False
        self._cleanups: list[tuple[str, Callable[[], object]]] = []
        self._tmp: Path | None = None
        #: Text printed under the table (plans, sizes used), in order.
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)

    def on_close(self, what: str, fn: Callable[[], object]) -> None:
        """Run ``fn`` at :meth:`close` (last registered, first run)."""
        self._cleanups.append((what, fn))

    def closing(self, resource: T) -> T:
        """Close (``close()`` or ``dispose()``) ``resource`` at :meth:`close`."""
        closer = getattr(resource, "close", None) or resource.dispose  # type: ignore[attr-defined]
        self.on_close(repr(resource), closer)
        return resource

    def close(self) -> None:
        while self._cleanups:
            what, fn = self._cleanups.pop()
            try:
                fn()
            except Exception as exc:  # clean up the rest whatever one step does
                print(f"[bench] cleanup of {what} failed: {exc}", file=sys.stderr)

    def __enter__(self) -> BenchEnv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- Redis -------------------------------------------------------------------

    def redis_url(self) -> str:
        if not self._redis_checked:
            import redis

            client = redis.Redis.from_url(self._redis_url, socket_connect_timeout=2)
            try:
                client.ping()
            except redis.RedisError as exc:
                raise ServiceUnavailable(f"Redis at {self._redis_url}: {exc}") from exc
            finally:
                client.close()
            self._redis_checked = True
            self.on_close("Redis keys", self._delete_redis_keys)
        return self._redis_url

    def redis_prefix(self, name: str) -> str:
        """A key prefix private to this run and ``name``."""
        self.redis_url()
        return f"bench:{self.run_id}:{name}:"

    def redis_client(self) -> Any:
        """A plain redis-py client (hiredis parses replies when installed)."""
        import redis

        return self.closing(redis.Redis.from_url(self.redis_url()))

    def benchmark_done(self) -> None:
        """Delete the Redis keys a finished benchmark left: a later one's key listings
        (``SCAN`` walks the whole keyspace) must not pay for them. A backup of 1,000 keys
        measured 302 ms after the other benchmarks' keys, 35 ms alone."""
        if self._redis_checked:
            self._delete_redis_keys()

    def _delete_redis_keys(self) -> None:
        import redis

        client = redis.Redis.from_url(self._redis_url)
        try:
            batch: list[bytes] = []
            for name in client.scan_iter(match=f"bench:{self.run_id}:*", count=5000):
                batch.append(name)
                if len(batch) == 5000:
                    client.unlink(*batch)
                    batch = []
            if batch:
                client.unlink(*batch)
        finally:
            client.close()

    # -- PostgreSQL -----------------------------------------------------------------

    def database(self, name: str) -> str:
        """A new database for this run; its SQLAlchemy URL (psycopg 3)."""
        import psycopg

        database = f"tiered_state_bench_{self.run_id}_{name}"
        try:
            admin = psycopg.connect(self._admin_url, autocommit=True, connect_timeout=3)
        except psycopg.Error as exc:
            raise ServiceUnavailable(f"PostgreSQL at {self._admin_url}: {exc}") from exc
        with admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        self.on_close(f"database {database}", lambda: self._drop_database(database))
        base = self._admin_url.rsplit("/", 1)[0]
        return base.replace("postgresql://", "postgresql+psycopg://", 1) + "/" + database

    def _drop_database(self, database: str) -> None:
        import psycopg

        with psycopg.connect(self._admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    @staticmethod
    def libpq_url(sqlalchemy_url: str) -> str:
        """The libpq form of a ``postgresql+psycopg://`` URL, for psycopg itself."""
        return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)

    # -- S3 ----------------------------------------------------------------------------

    def s3_endpoint(self) -> str:
        """The S3 endpoint: the override given, else a moto server started for the run."""
        if self._s3_endpoint is None:
            if self._s3_failure is not None:  # do not wait for a broken server again
                raise ServiceUnavailable(self._s3_failure)
            for name, value in AWS_TEST_ENV.items():
                os.environ.setdefault(name, value)
            try:
                self._s3_endpoint = self._start_moto()
            except ServiceUnavailable as exc:
                self._s3_failure = str(exc)
                raise
        return self._s3_endpoint

    def _start_moto(self) -> str:
        # find_spec, not import: moto's modules stay out of this process's heap
        if importlib.util.find_spec("moto") is None:
            raise ServiceUnavailable("moto[server] is not installed")
        port = _free_port()
        # werkzeug logs every request: thousands of lines per benchmark, kept out of stderr
        log_path = self.tempdir("moto") / "moto-server.log"
        log = log_path.open("wb")
        command = [*MOTO_COMMAND, "-H", "127.0.0.1", "-p", str(port)]
        server = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **AWS_TEST_ENV, "MOTO_PORT": str(port)},
        )
        log.close()  # the child holds its own descriptor

        def stop() -> None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

        self.on_close("moto server", stop)
        problem = _wait_for_http(server, port, MOTO_START_TIMEOUT)
        if problem is not None:
            stop()
            # the run's directory goes at close; keep the log where the message says
            kept = Path(tempfile.gettempdir()) / f"tiered-state-bench-{self.run_id}-moto.log"
            shutil.copyfile(log_path, kept)
            lines = kept.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            last = f"; its last line: {lines[-1][:200]}" if lines else " (empty)"
            where = f"moto server ({' '.join(command)})"
            raise ServiceUnavailable(f"{where} {problem}; log {kept}{last}")
        return f"http://127.0.0.1:{port}"

    def s3_client(self, **config: Any) -> Any:
        """A plain boto3 S3 client on the endpoint (botocore ``Config(**config)``)."""
        import boto3
        from botocore.config import Config

        return self.closing(
            boto3.client(
                "s3",
                endpoint_url=self.s3_endpoint(),
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=Config(**config) if config else None,
            )
        )

    def bucket(self, name: str) -> str:
        """A new, empty bucket, emptied and removed at :meth:`close`."""
        bucket = f"bench-{self.run_id}-{name}".lower().replace("_", "-")[:63]
        client = self.s3_client()
        client.create_bucket(Bucket=bucket)

        def remove() -> None:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if objects:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": objects})
            client.delete_bucket(Bucket=bucket)

        self.on_close(f"bucket {bucket}", remove)
        return bucket

    # -- files -------------------------------------------------------------------------

    def tempdir(self, name: str) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix=f"tiered-state-bench-{self.run_id}-"))
            tmp = self._tmp
            self.on_close("temporary directory", lambda: shutil.rmtree(tmp, ignore_errors=True))
        path = self._tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path

"""The HTTP path (issue 16): the REST blueprint against a hand-written Flask app doing the
same job (:mod:`bench.handwritten_app`), each served by gunicorn with 2 sync workers on
Redis + PostgreSQL, over 1,000 user states.

The library's app is configured as a production app would be: Redis HOT, PostgreSQL
WARM, metrics on (Prometheus), correlation ids (the default: generated per request and
written to the history), every write with its history row and compare-and-set. The load
is ``wrk`` (1 thread, 8 connections, 8 s a round; ``scripts/ensure-wrk.sh`` installs
Debian's package), or, without it, a Python generator of 8 threads on keep-alive
``http.client`` connections; the row's note names the generator. GETs read random states
of the 1,000 with every cache warm (a short warm-up round first); POSTs apply an
``update`` transition with new data to random states. All GET rounds run before the POST
rounds (a write round would leave the next read round's caches cold), each set
interleaved (library, hand-written; then the other way round).

Throughput is shown as its inverse, the cost of a request, as every row of the harness
is a cost ratio (library / baseline): a throughput ratio of 0.95 is a cost ratio of
1.05, 0.8 is 1.25. Each run uses its own database and Redis prefix; the gunicorn
servers are stopped (their process groups killed if they do not stop) at the end, even
after an error.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import handwritten_app
from .data import record
from .env import BenchEnv, ServiceUnavailable
from .harness import Benchmark, Row, Settings, compare, interleave

__all__ = ["BENCHMARKS", "LIBRARY_CONFIG_ENV", "create_library_app"]

#: The app configuration of the library's app, as JSON (read by :func:`create_library_app`).
LIBRARY_CONFIG_ENV = "BENCH_HTTP_LIBRARY_CONFIG"
#: ``python`` forces the Python load generator even where wrk is installed.
LOAD_ENV = "BENCH_HTTP_LOAD"
#: A directory: each library worker writes its cProfile stats there (see ``_profiled``).
PROFILE_ENV = "BENCH_HTTP_PROFILE_DIR"
STATES = 1000
WORKERS = 2
CONNECTIONS = 8
API = "/api"
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Seconds to wait for a started gunicorn to answer.
START_TIMEOUT = 60.0


def state_id(number: int) -> str:
    return f"u{number:07d}"


# -- the library's app -----------------------------------------------------------------


def create_library_app() -> Any:
    """The library's app, from the JSON configuration in ``BENCH_HTTP_LIBRARY_CONFIG``
    (gunicorn loads ``bench.http:create_library_app()`` in each worker)."""
    from flask import Flask

    from flask_tiered_state import TieredState

    config = json.loads(os.environ[LIBRARY_CONFIG_ENV])
    app = Flask("bench_http_library", instance_path=config.pop("instance_path"))
    app.config.update(config)
    TieredState().init_app(app)
    directory = os.environ.get(PROFILE_ENV)
    if directory:
        app.wsgi_app = _profiled(app.wsgi_app, Path(directory))  # type: ignore[method-assign]
    return app


def _profiled(wsgi_app: Any, directory: Path, every: int = 100) -> Any:
    """``wsgi_app`` under cProfile timing CPU time (waits for the servers left out: on a
    shared machine they measure the scheduler); the stats go to ``worker-<pid>.prof``
    every ``every`` requests (a killed worker keeps what it wrote)."""
    import cProfile

    profiler = cProfile.Profile(time.process_time)
    served = [0]

    def app(environ: Any, start_response: Any) -> Any:
        profiler.enable()
        try:
            return wsgi_app(environ, start_response)
        finally:
            profiler.disable()
            served[0] += 1
            if served[0] % every == 0:
                profiler.dump_stats(directory / f"worker-{os.getpid()}.prof")

    return app


def library_config(env: BenchEnv, database_url: str) -> dict[str, Any]:
    local = env.tempdir("http_library")
    return {
        "instance_path": str(local / "instance"),
        "TIERED_STATE_HOT_URL": env.redis_url(),
        "TIERED_STATE_KEY_PREFIX": env.redis_prefix("http_lib"),
        "TIERED_STATE_WARM_URL": database_url,
        "TIERED_STATE_COLD_URL": (local / "cold").as_uri(),
        "TIERED_STATE_LOCAL_DIR": str(local),
        "TIERED_STATE_API_PREFIX": API,
        "TIERED_STATE_ACCESS_CONTROL": "allow-all",
        # the hand-written app has none, and 300 reads a minute would stop the load
        "TIERED_STATE_RATE_LIMIT": False,
        "TIERED_STATE_METRICS": True,
    }


def seed_library(config: Mapping[str, Any]) -> None:
    """The 1,000 user states, written through the library in this process."""
    from flask_tiered_state.app_state import get_app_state

    os.environ[LIBRARY_CONFIG_ENV] = json.dumps(config)
    try:
        app = create_library_app()
    finally:
        del os.environ[LIBRARY_CONFIG_ENV]
    state = get_app_state(app)
    try:
        with app.app_context():
            for start in range(0, STATES, 500):
                items = {}
                for n in range(start, min(STATES, start + 500)):
                    value = record(n)
                    items[value["state_id"]] = {k: value[k] for k in ("name", "data", "metadata")}
                state.manager.batch_set_state(items, state_type="user")
    finally:
        state.close()


def seed_handwritten(env: BenchEnv, database_url: str) -> None:
    import psycopg

    with psycopg.connect(env.libpq_url(database_url), autocommit=True) as conn:
        handwritten_app.create_tables(conn)
        handwritten_app.seed(conn, (record(n) for n in range(STATES)))


# -- gunicorn ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A gunicorn (2 sync workers) serving ``app`` on a free port, in its own process
    group: :meth:`stop` ends the master and, if need be, every process of the group."""

    def __init__(self, env: BenchEnv, name: str, app: str, variables: Mapping[str, str]) -> None:
        self.name = name
        self.port = _free_port()
        self.log_path = env.tempdir("http_logs") / f"{name}.log"
        command = [
            sys.executable, "-m", "gunicorn", "--workers", str(WORKERS),
            "--worker-class", "sync", "--bind", f"127.0.0.1:{self.port}",
            "--log-level", "warning", "--timeout", "60", "--chdir", str(REPO_ROOT), app,
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **variables},
                start_new_session=True,
            )
        env.on_close(f"gunicorn {name}", self.stop)

    def stop(self) -> None:
        if self.process.returncode is not None:
            return
        try:
            self.process.send_signal(signal.SIGTERM)  # gunicorn stops its workers
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        finally:
            # the group is this server's own (start_new_session)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def wait_ready(self, path: str) -> None:
        """Return once ``path`` answers 200; else stop and raise with the log's last line."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    return
            except (OSError, http.client.HTTPException):  # not listening yet
                pass
            finally:
                conn.close()
            time.sleep(0.2)
        self.stop()
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise RuntimeError(
            f"gunicorn {self.name} did not answer GET {path} with 200 within "
            f"{START_TIMEOUT:g} s; log {self.log_path}: {lines[-1] if lines else '(empty)'}"
        )

    def worker_pids(self) -> list[int]:
        """The worker processes (for a profiler)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(p) for p in children.read_text().split()]


# -- load ----------------------------------------------------------------------------------


def _post_body_parts() -> tuple[str, str]:
    """The POST body around its ``credits`` number: a transition with new data (the data
    of a record, about 300 bytes of JSON)."""
    data = dict(record(0)["data"])
    data["credits"] = 123456789
    text = json.dumps({"transition": "update", "data": data}, separators=(",", ":"))
    before, after = text.split("123456789")
    return before, after


@dataclass(frozen=True)
class Load:
    """What a load generator measured in one run."""

    requests_per_second: float
    requests: int
    failures: int


class Wrk:
    """``wrk -t1 -c8 -d<s>s`` with a Lua script choosing a random state per request."""

    name = "wrk"

    def __init__(self, env: BenchEnv, executable: str) -> None:
        self.executable = executable
        directory = env.tempdir("http_wrk")
        ids = ", ".join(f'"{state_id(n)}"' for n in range(STATES))
        before, after = _post_body_parts()
        self.scripts = {"GET": directory / "get.lua", "POST": directory / "post.lua"}
        self.scripts["GET"].write_text(
            f"local ids = {{{ids}}}\n"
            "request = function()\n"
            f'  return wrk.format("GET", "{API}/states/" .. ids[math.random(#ids)])\n'
            "end\n",
            encoding="utf-8",
        )
        self.scripts["POST"].write_text(
            f"local ids = {{{ids}}}\n"
            "local headers = {['Content-Type'] = 'application/json'}\n"
            "local counter = 0\n"
            "request = function()\n"
            "  counter = counter + 1\n"
            f'  local path = "{API}/states/" .. ids[math.random(#ids)] .. "/transitions"\n'
            f"  local body = [==[{before}]==] .. counter .. [==[{after}]==]\n"
            '  return wrk.format("POST", path, headers, body)\n'
            "end\n",
            encoding="utf-8",
        )

    def run(self, method: str, port: int, seconds: float) -> Load:
        command = [
            self.executable, "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s",
            "-s", str(self.scripts[method]), f"http://127.0.0.1:{port}",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        out = done.stdout
        rate = re.search(r"Requests/sec:\s*([\d.]+)", out)
        total = re.search(r"(\d+) requests in", out)
        if rate is None or total is None:
            raise RuntimeError(f"wrk printed no rate: {out.strip()[-300:]}")
        failed = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
        return Load(
            float(rate.group(1)), int(total.group(1)), int(failed.group(1)) if failed else 0
        )


class PythonLoad:
    """The fallback: 8 threads, each on its own keep-alive ``http.client`` connection (it
    reconnects when the server closes one, as gunicorn's sync workers do after each
    answer), sending requests back to back for the round's seconds."""

    name = "Python load generator (8 threads, http.client)"

    def __init__(self) -> None:
        before, after = _post_body_parts()
        self._body = (before.encode(), after.encode())

    def _request(self, method: str, rng: random.Random, n: int) -> tuple[str, bytes | None]:
        path = f"{API}/states/{state_id(rng.randrange(STATES))}"
        if method == "GET":
            return path, None
        return path + "/transitions", self._body[0] + str(n).encode() + self._body[1]

    def run(self, method: str, port: int, seconds: float) -> Load:
        counts = [0] * CONNECTIONS
        failures = [0] * CONNECTIONS
        headers = {"Content-Type": "application/json"} if method == "POST" else {}
        start = threading.Barrier(CONNECTIONS + 1)
        deadline = [0.0]

        def client(slot: int) -> None:
            rng = random.Random(slot)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            start.wait()
            try:
                while time.perf_counter() < deadline[0]:
                    path, body = self._request(method, rng, counts[slot])
                    try:
                        conn.request(method, path, body=body, headers=headers)
                        response = conn.getresponse()
                        response.read()
                        ok = response.status < 300
                    except (OSError, http.client.HTTPException):
                        conn.close()
                        ok = False
                    counts[slot] += ok
                    failures[slot] += not ok
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CONNECTIONS)]
        for thread in threads:
            thread.start()
        began = time.perf_counter()
        deadline[0] = began + seconds
        start.wait()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        return Load(sum(counts) / elapsed, sum(counts), sum(failures))


def load_generator(env: BenchEnv) -> Wrk | PythonLoad:
    executable = shutil.which("wrk")
    if executable is None or os.environ.get(LOAD_ENV) == "python":
        return PythonLoad()
    return Wrk(env, executable)


# -- the benchmark ------------------------------------------------------------------------


def http_path(env: BenchEnv, settings: Settings) -> list[Row]:
    if importlib.util.find_spec("gunicorn") is None:
        raise ServiceUnavailable("gunicorn is not installed (it comes with the dev extra)")
    seconds = settings.pick(8, 2)
    rounds = settings.rounds_for(3, 1)
    database_url = env.database("http")
    config = library_config(env, database_url)
    seed_library(config)
    seed_handwritten(env, database_url)
    load = load_generator(env)
    servers = {
        "library": Server(env, "library", "bench.http:create_library_app()",
                          {LIBRARY_CONFIG_ENV: json.dumps(config)}),
        "handwritten": Server(env, "handwritten", "bench.handwritten_app:create_app()", {
            handwritten_app.DATABASE_ENV: env.libpq_url(database_url),
            handwritten_app.REDIS_URL_ENV: env.redis_url(),
            handwritten_app.REDIS_PREFIX_ENV: env.redis_prefix("http_raw"),
        }),
    }  # fmt: skip
    rates: dict[str, list[float]] = {}
    try:
        for server in servers.values():
            server.wait_ready(f"{API}/states/{state_id(0)}")

        def round_of(
            method: str, side: str, duration: float, *, kept: bool = True
        ) -> Callable[[], float]:
            def run() -> float:
                measured = load.run(method, servers[side].port, duration)
                if measured.failures > 0.001 * measured.requests:
                    raise RuntimeError(
                        f"{side} answered {measured.failures} of {measured.requests} "
                        f"{method} requests with an error status"
                    )
                if kept:
                    rates.setdefault(f"{method} {side}", []).append(measured.requests_per_second)
                return 1.0 / measured.requests_per_second

            return run

        samples: dict[str, Sequence[float]] = {}
        for method in ("GET", "POST"):
            for side in servers:  # warm every worker's caches and connections, untimed
                round_of(method, side, settings.pick(3, 1), kept=False)()
            variants = {f"{method} {side}": round_of(method, side, seconds) for side in servers}
            samples.update(interleave(variants, rounds=rounds, warmup=0))
    finally:
        for server in servers.values():
            server.stop()

    def row(method: str, what: str, throughput_floor: float) -> Row:
        library = statistics.median(rates[f"{method} library"])
        raw = statistics.median(rates[f"{method} handwritten"])
        cost_target = round(1.0 / throughput_floor, 2)
        return compare(
            f"HTTP {method} {what}: REST blueprint vs hand-written Flask app, cost per request "
            f"(throughput >= {throughput_floor:g}x is cost <= {cost_target:g}x)",
            samples, f"{method} library", f"{method} handwritten", unit="request",
            target=None if settings.quick else cost_target,
            note=f"{library:,.0f} vs {raw:,.0f} req/s; {load.name}",
        )  # fmt: skip

    env.note(
        f"http: gunicorn, {WORKERS} sync workers per app, {STATES:,} user states, Redis + "
        f"PostgreSQL; load by {load.name}, {CONNECTIONS} connections, {seconds:g} s a round, "
        f"{rounds} interleaved round(s) per row. Rows are costs per request (1 / throughput)."
    )
    return [
        row("GET", "a state (cache warm)", 0.95),
        row("POST", "an UPDATE transition", 0.8),
    ]


BENCHMARKS = [
    Benchmark(
        "http",
        "the REST blueprint vs a hand-written Flask app under gunicorn, GET and POST",
        http_path,
        needs=("redis", "postgres"),
    ),
]

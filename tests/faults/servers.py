"""A private PostgreSQL cluster that a fault test may stop, crash, pause and start again.

The shared server on 127.0.0.1:5432 is never touched: each session runs ``initdb`` for
a cluster of its own in a temporary directory, on a free port. PostgreSQL refuses to run as
root, so as root the cluster belongs to an unprivileged system user,
``tiered_state_pg``, and ``initdb`` / ``pg_ctl`` run through ``runuser`` (or ``setpriv``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import free_port, unavailable

PG_OS_USER = "tiered_state_pg"
_SBIN_PATH = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
_PG_CTL_WAIT = 30
_STOP_MODES = ("smart", "fast", "immediate")


def postgres_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    ``pg_config --bindir`` first, then the highest ``/usr/lib/postgresql/*/bin``; calls
    ``unavailable()`` when neither has the server binaries.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
        )
        if result.returncode == 0:
            candidates.append(Path(result.stdout.strip()))
    # Debian's pg_config (libpq-dev) may name a version whose server is not installed.
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.name)],
        reverse=True,
    )
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    unavailable("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    raise AssertionError("unavailable() raises")


def ensure_os_user(name: str = PG_OS_USER) -> tuple[int, int]:
    """The uid and gid of the system user ``name``, created when missing (needs root)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd", path=_SBIN_PATH)
        if useradd is None:
            unavailable(f"useradd is missing: cannot create the OS user {name} for PostgreSQL")
            raise AssertionError("unavailable() raises") from None
        result = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        try:  # a concurrent run may have created it first, making useradd fail
            entry = pwd.getpwnam(name)
        except KeyError:
            raise RuntimeError(f"useradd {name} failed: {result.stderr.strip()}") from None
    return entry.pw_uid, entry.pw_gid


def run_as_prefix(uid: int, gid: int) -> list[str]:
    """A command prefix that runs the rest of the command line as ``uid``/``gid``."""
    runuser = shutil.which("runuser", path=_SBIN_PATH)
    if runuser is not None:
        return [runuser, "-u", pwd.getpwuid(uid).pw_name, "--"]
    setpriv = shutil.which("setpriv", path=_SBIN_PATH)
    if setpriv is not None:
        return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--"]
    unavailable("neither runuser nor setpriv is installed: cannot run PostgreSQL as non-root")
    raise AssertionError("unavailable() raises")


def libpq_url(url: str) -> str:
    """``url`` without SQLAlchemy's driver suffix, as psycopg / libpq take it."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name: state, ppid, ..."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after its last ")".
    return stat.rsplit(")", 1)[1].split()


def _state(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[0] if fields else None


def child_pids(pid: int) -> list[int]:
    """The child processes of ``pid``, read from /proc."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) and int(fields[1]) == pid:
            children.append(int(entry))
    return children


class PrivatePostgres:
    """A PostgreSQL cluster of this test session's own, on 127.0.0.1 and a free port.

    Trust authentication as ``postgres``; ``fsync=off`` for speed, while
    ``synchronous_commit`` stays on so a commit survives a crash of the server processes
    (``stop("immediate")``), which is what the fault tests need.
    """

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir if bindir is not None else postgres_bindir()
        self.port = free_port()
        #: The temporary directory of the cluster (data, socket, log); set by ``start()``.
        self.directory: Path | None = None
        self._prefix: list[str] = []
        self._paused: list[int] = []

    # ------------------------------------------------------------------ addresses

    @property
    def admin_url(self) -> str:
        """The libpq URL of the ``postgres`` database, as the ``postgres`` superuser."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, dbname: str, *, port: int | None = None) -> str:
        """The SQLAlchemy (``postgresql+psycopg://``) URL of ``dbname``, via ``port`` if given."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{port or self.port}/{dbname}"

    @property
    def data_dir(self) -> Path:
        return self._directory() / "data"

    @property
    def log_file(self) -> Path:
        return self._directory() / "server.log"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the server (``initdb`` first, the first time); returns once it accepts
        connections. Does nothing when it already runs."""
        if self.directory is None:
            self._init_cluster()
        if self.postmaster_pid() is not None:
            return
        self._pg_ctl("-l", str(self.log_file), "start")
        self._wait_until_accepting()

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode`` (``fast`` or ``immediate``, a crash); resumes a paused
        server first. Does nothing when it is not running."""
        if mode not in _STOP_MODES:
            raise ValueError(f"mode must be one of {_STOP_MODES}, not {mode!r}")
        if self.directory is None or self.postmaster_pid() is None:
            return
        self.resume()  # a stopped postmaster would never act on the shutdown signal
        self._pg_ctl("-m", mode, "stop")

    def restart(self) -> None:
        self.stop("fast")
        self.start()

    def ensure_running(self) -> None:
        """Resume the server if paused, start it if stopped."""
        self.resume()
        if self.postmaster_pid() is None:
            self.start()

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        if self.directory is None:
            return
        try:
            self.resume()
            if self.postmaster_pid() is not None:
                self._pg_ctl("-m", "immediate", "stop")
        finally:
            pid = self.postmaster_pid()
            if pid is not None:  # pg_ctl failed: the backends exit on postmaster death
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    # ------------------------------------------------------------------ SIGSTOP / SIGCONT

    @property
    def paused(self) -> bool:
        return bool(self._paused)

    def pause(self) -> None:
        """SIGSTOP the postmaster and all its children: every connection hangs, and new
        ones are accepted by the kernel but never answered."""
        pid = self.postmaster_pid()
        if pid is None:
            raise RuntimeError("the private PostgreSQL is not running")
        if self._paused:
            return
        # The postmaster first, so it forks no child the scan below could miss.
        os.kill(pid, signal.SIGSTOP)
        stopped = [pid]
        while new := [child for child in child_pids(pid) if child not in stopped]:
            for child in new:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGSTOP)
            stopped += new
        self._paused = stopped
        deadline = time.monotonic() + 10
        # A backend that exited just before stays a zombie: its stopped parent cannot reap it.
        while any(_state(p) not in ("T", "Z", "X", None) for p in stopped):
            if time.monotonic() > deadline:
                raise RuntimeError("the PostgreSQL processes did not stop")
            time.sleep(0.01)

    def resume(self) -> None:
        """SIGCONT every process ``pause()`` stopped."""
        for pid in reversed(self._paused):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._paused = []

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid, or None."""
        if self.directory is None:
            return None
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _state(pid) not in (None, "Z", "X") else None

    # ------------------------------------------------------------------ databases

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, disconnecting its sessions (WITH (FORCE))."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    # ------------------------------------------------------------------ internals

    def _directory(self) -> Path:
        if self.directory is None:
            raise RuntimeError("the private PostgreSQL has not been started")
        return self.directory

    def _init_cluster(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="tiered-state-pg-"))
        self.directory = directory
        try:
            if os.geteuid() == 0:
                uid, gid = ensure_os_user()
                os.chown(directory, uid, gid)
                self._prefix = run_as_prefix(uid, gid)
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
                timeout=120,
            )
            with (self.data_dir / "postgresql.conf").open("a") as conf:
                conf.write(
                    "\n# tests/faults/servers.py\n"
                    "listen_addresses = '127.0.0.1'\n"
                    f"port = {self.port}\n"
                    f"unix_socket_directories = '{directory}'\n"
                    "max_connections = 200\n"
                    "fsync = off\n"
                )
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            self.directory = None
            raise

    def _pg_ctl(self, *args: str) -> None:
        wait = ("-w", "-t", str(_PG_CTL_WAIT))
        self._run("pg_ctl", "-D", str(self.data_dir), *wait, *args, timeout=_PG_CTL_WAIT + 15)

    def _run(self, tool: str, *args: str, timeout: float) -> None:
        command = [*self._prefix, str(self.bindir / tool), *args]
        try:
            # pg_ctl points the postmaster's output at the log file, so the pipes close.
            result = subprocess.run(
                command,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"{tool} {' '.join(args)}: no answer in {timeout} s" + self._tail()
            ) from exc
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({result.returncode}): "
                f"{(result.stdout + result.stderr).strip()}" + self._tail()
            )

    def _wait_until_accepting(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL does not accept connections: {exc}" + self._tail()
                    ) from exc
                time.sleep(0.05)

    def _tail(self, chars: int = 3000) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except (OSError, RuntimeError):
            return ""
        return f"\n--- {self.log_file} (tail) ---\n{text[-chars:]}"

"""Field encryption at rest, end to end (issue 14): secrets written through the REST API
and the manager, copied to every tier, the history, the outbox, the idempotency results
and the logs, are found in plaintext nowhere; every one decrypts after ``flask state
rotate-keys`` with the old master key removed; and after an erasure no copy anywhere
yields them, while the history still verifies.

The services run writes 10,000 records (9,000 users, 1,000 sessions) to Redis +
PostgreSQL + S3 (moto server): 600 through ``POST /api/states``, the rest through
``batch_set_state`` (10,000 requests take over three minutes on a busy two-core machine,
where this whole test takes about one); the embedded run (memory + SQLite + COLD
directory) writes 1,000. The logs are captured at DEBUG throughout. Each secret is a
unique ``pw-``/``cn-``/``tok-`` followed by 32 hex digits, so one regular expression
finds every candidate in a blob and a set intersection tells whether one is a secret.
Canaries of the same form, in a type that encrypts nothing, prove that each scanned
place was really read.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_tiered_state import generate_master_key
from flask_tiered_state.domain.dispatcher import EventDispatcher
from flask_tiered_state.domain.encryption import TOKEN_PREFIX
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import TieredState, get_app_state
from flask_tiered_state.storage.base import StateCategory
from tests.conftest import SERVICES, s3_client, services_config

from .conftest import AppFactory

USER_FIELDS = ["data.password", "data.card.number"]
#: Every secret and canary: one pattern, so a scan finds all candidates in one pass.
CANDIDATE = re.compile(rb"(?:pw|cn|tok|canary)-[0-9a-f]{32}")
AUDIT_KEY = "audit-key-of-the-encryption-test-0123456789"


def unique(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


@dataclass
class Secrets:
    """The secrets written, by state; canaries are secrets of an unencrypted type."""

    by_state: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: The latest plaintext of each state's encrypted fields, as a reader must see them.
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    canaries: dict[str, str] = field(default_factory=dict)

    def new(self, state_id: str, kind: str) -> str:
        secret = unique(kind)
        self.by_state[state_id].append(secret)
        return secret

    def all(self) -> set[str]:
        return {s for secrets in self.by_state.values() for s in secrets}


@dataclass
class Scan:
    """Candidates found in each place, and how many blobs each place gave."""

    found: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    blobs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sealed: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def feed(self, where: str, blob: bytes | str | None) -> None:
        if blob is None:
            return
        data = blob.encode("utf-8", "surrogateescape") if isinstance(blob, str) else blob
        self.blobs[where] += 1
        self.sealed[where] += data.count(TOKEN_PREFIX.encode("ascii"))
        for match in CANDIDATE.findall(data):
            self.found[where].add(match.decode("ascii"))

    def leaks(self, secrets: set[str]) -> dict[str, list[str]]:
        """The secrets found, by place (empty: nothing leaked)."""
        return {w: sorted(f & secrets)[:5] for w, f in self.found.items() if f & secrets}

    def places_with(self, secrets: set[str]) -> set[str]:
        return {w for w, f in self.found.items() if f & secrets}

    def summary(self) -> str:
        return ", ".join(f"{w}: {n} blobs, {self.sealed[w]} tokens" for w, n in self.blobs.items())


# -- the apps ------------------------------------------------------------------------


def set_up_types(manager: StateManager) -> None:
    manager.register_state_type("user", encrypted_fields=USER_FIELDS)
    manager.register_state_type("session", home_tier=StateCategory.HOT, encrypted_fields=["data"])
    manager.register_state_type("ledger")  # encrypts nothing: the canaries


@dataclass
class Setup:
    """How the test's apps are made: every app shares the tiers of the first."""

    make_app: AppFactory
    config: dict[str, Any]
    services: bool
    delivered: list[tuple[str, str]] = field(default_factory=list)
    apps: list[Flask] = field(default_factory=list)

    def app(self, *keys: str) -> Flask:
        extension = TieredState()
        extension.manager_setup(set_up_types)
        extension.manager_setup(self._callbacks)
        app = self.make_app(
            extension=extension,
            TIERED_STATE_API_PREFIX="/api",
            TIERED_STATE_ACCESS_CONTROL="allow-all",
            TIERED_STATE_ENCRYPTION_KEYS=list(keys),
            TIERED_STATE_AUDIT_KEYS=AUDIT_KEY,
            **self.config,
        )
        self.apps.append(app)
        return app

    def _callbacks(self, manager: StateManager) -> None:
        def password_changed(
            state_id: str, old: Any, new: Any, transition: Any, *, event_id: str
        ) -> None:
            self.delivered.append((state_id, new["data"]["password"]))

        manager.register_callback("user_updated", password_changed, asynchronous=True)


@pytest.fixture(params=[pytest.param("services", marks=[*SERVICES.marks, pytest.mark.slow]),
                        "embedded"])  # fmt: skip
def setup(request: pytest.FixtureRequest, make_app: AppFactory, tmp_path: Path) -> Setup:
    services = request.param == "services"
    config = services_config(request) if services else {}
    # Every app of the test shares the SQLite file and the COLD directory of the first.
    config["TIERED_STATE_LOCAL_DIR"] = str(tmp_path / "local")
    return Setup(make_app, config, services)


def manager_of(app: Flask) -> StateManager:
    return get_app_state(app).manager


def cli(app: Flask, *args: str) -> Any:
    result = app.test_cli_runner().invoke(args=["state", *args])
    assert result.exit_code == 0, result.output
    return result


# -- writing --------------------------------------------------------------------------


def user_body(secrets: Secrets, state_id: str) -> dict[str, Any]:
    password, number = secrets.new(state_id, "pw"), secrets.new(state_id, "cn")
    secrets.latest[state_id] = {"password": password, "number": number}
    return {"password": password, "card": {"number": number, "exp": "12/30"}, "plan": "free"}


@dataclass(frozen=True)
class Volume:
    """How many records, and how many of them go through HTTP (the rest through
    ``batch_set_state`` / ``batch_update_state`` in chunks)."""

    users: int
    sessions: int
    http_users: int
    http_sessions: int


def write_everything(app: Flask, secrets: Secrets, volume: Volume) -> dict[str, Any]:
    """Users and sessions through POST /api/states and batch_set_state, new secrets for
    one user in ten through POST /api/states/<id>/transitions and batch_update_state
    (history keeps old and new), some requests with an Idempotency-Key; some users
    promoted to HOT, some demoted to COLD (API and CLI), the events delivered. Returns
    the ids by role."""
    client = app.test_client()
    manager = manager_of(app)
    user_ids = [f"u{n:05d}" for n in range(volume.users)]
    session_ids = [f"s{n:05d}" for n in range(volume.sessions)]
    http_users, http_sessions = user_ids[: volume.http_users], session_ids[: volume.http_sessions]
    through_http = set(http_users)
    for n, state_id in enumerate(http_users):
        headers = {"Idempotency-Key": f"reg-{state_id}"} if n % 10 == 0 else {}
        body = {"state_id": state_id, "type": "user", "name": f"User {n}",
                "data": user_body(secrets, state_id)}  # fmt: skip
        response = client.post("/api/states", json=body, headers=headers)
        assert response.status_code == 201, response.get_json()
        assert response.get_json()["data"]["password"] == secrets.latest[state_id]["password"]
    for state_id in http_sessions:
        body = {"state_id": state_id, "type": "session", "data": session_data(secrets, state_id)}
        assert client.post("/api/states", json=body).status_code == 201
    rest = [*user_ids[volume.http_users :], *session_ids[volume.http_sessions :]]
    for start in range(0, len(rest), 1000):
        manager.batch_set_state(
            {
                state_id: {"type": "session", "data": session_data(secrets, state_id)}
                if state_id.startswith("s")
                else {"type": "user", "name": state_id, "data": user_body(secrets, state_id)}
                for state_id in rest[start : start + 1000]
            }
        )
    # New passwords and card numbers for one user in ten: history keeps old and new.
    changed = user_ids[::10]
    for n, state_id in enumerate(changed):
        if state_id not in through_http:
            continue
        headers = {"Idempotency-Key": f"upd-{state_id}"} if n % 2 == 0 else {}
        body = {"transition": "update", "data": user_body(secrets, state_id)}
        response = client.post(f"/api/states/{state_id}/transitions", json=body, headers=headers)
        assert response.status_code == 200, response.get_json()
    by_batch = [i for i in changed if i not in through_http]
    for start in range(0, len(by_batch), 1000):
        chunk = by_batch[start : start + 1000]
        manager.batch_update_state({i: {"data": user_body(secrets, i)} for i in chunk})
    for state_id in user_ids[1::20][:100]:
        body = {"transition": "activate", "reason": "email verified"}
        assert client.post(f"/api/states/{state_id}/transitions", json=body).status_code == 200
    # Canaries: a type that encrypts nothing, one per place the scan must reach.
    for place in ("warm", "hot", "cold"):
        canary = secrets.canaries[place] = unique("canary")
        manager.register_state(f"canary-{place}", "ledger", {"data": {"note": canary}})
    logging.getLogger("tests.encryption").debug("canary in the log: %s", log_canary(secrets))

    hot = user_ids[2::25]
    cold = user_ids[3::25]
    for state_id in [*hot, "canary-hot"]:
        assert manager.promote_to_hot(state_id)
    for state_id in cold[:-5]:
        assert manager.demote_to_cold(state_id)
    moved = cli(app, "demote", *cold[-5:], "canary-cold", "--json").stdout
    assert len(json.loads(moved)["moved"]) == 6
    # An update of an archived (COLD) record.
    archived = cold[0]
    body = {"transition": "update", "data": user_body(secrets, archived)}
    assert client.post(f"/api/states/{archived}/transitions", json=body).status_code == 200

    with EventDispatcher(manager, batch=500) as dispatcher:
        while dispatcher.run_once().delivered:
            pass
    return {"users": user_ids, "sessions": session_ids, "changed": changed, "hot": hot,
            "cold": cold, "http": http_users}  # fmt: skip


def session_data(secrets: Secrets, state_id: str) -> dict[str, Any]:
    token = secrets.new(state_id, "tok")
    secrets.latest[state_id] = {"token": token}
    return {"token": token, "device": "phone"}


def log_canary(secrets: Secrets) -> str:
    return secrets.canaries.setdefault("log", unique("canary"))


# -- scanning -------------------------------------------------------------------------


def scan_everything(
    setup: Setup, app: Flask, caplog: pytest.LogCaptureFixture, state_ids: Iterable[str]
) -> Scan:
    scan = Scan()
    state = get_app_state(app)
    manager = state.manager
    if setup.services:
        scan_redis(scan, setup.config["TIERED_STATE_HOT_URL"],
                   setup.config["TIERED_STATE_KEY_PREFIX"])  # fmt: skip
        scan_s3(scan, setup.config["TIERED_STATE_COLD_URL"])
    else:  # the in-process HOT tier: what it holds is what a heap dump would show
        hot = manager.get_repositories().hot
        for key in hot.keys("*"):
            entry = hot.fetch(key)
            scan.feed("memory HOT", None if entry is None else entry.value)
    # The process's local cache: its stored values and the snapshots it decodes.
    cache = manager.store.cache
    canaries = ["canary-warm", "canary-hot", "canary-cold"]
    keys = ["state:" + state_id for state_id in [*state_ids, *canaries]]
    for key, stored in cache.get_entries(keys, scan=True).items():
        scan.feed("local cache", stored.value)
        scan.feed("local cache", repr(cache.lookup(key)[0]))
    scan_database(scan, manager.history.engine)
    scan_files(scan, Path(setup.config["TIERED_STATE_LOCAL_DIR"]))
    for app_ in setup.apps:
        scan_files(scan, Path(app_.instance_path), "instance files")
    scan_logs(scan, caplog.records)
    return scan


def scan_redis(scan: Scan, url: str, prefix: str) -> None:
    """Every key under the prefix, read by its type (DUMP would compress long strings)."""
    import redis

    from flask_tiered_state.storage.redis.codec import redis_literal

    client = redis.Redis.from_url(url)
    readers: dict[bytes, Callable[[bytes], Iterable[Any]]] = {
        b"string": lambda k: [client.get(k)],
        b"hash": lambda k: [b for kv in client.hgetall(k).items() for b in kv],
        b"list": lambda k: client.lrange(k, 0, -1),
        b"set": lambda k: client.smembers(k),
        b"zset": lambda k: client.zrange(k, 0, -1),
        b"stream": lambda k: [repr(client.xrange(k)).encode()],
    }
    try:
        for key in client.scan_iter(match=redis_literal(prefix) + "*", count=1000):
            scan.feed("Redis keys", key)
            kind: Any = client.type(key)
            for value in readers[kind](key):
                scan.feed("Redis values", value)
    finally:
        client.close()


def scan_s3(scan: Scan, cold_url: str) -> None:
    """Every version of every object of the bucket, its metadata and body."""
    url = urlsplit(cold_url)
    client = s3_client(parse_qs(url.query)["endpoint_url"][0])
    bucket = url.netloc
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for version in page.get("Versions", []):
            obj = client.get_object(
                Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"]
            )
            scan.feed("S3 objects", obj["Body"].read())
            scan.feed("S3 metadata", json.dumps(obj.get("Metadata", {})) + version["Key"])
    client.close()


def scan_database(scan: Scan, engine: sa.Engine) -> None:
    """Every row of every table of the WARM database, as text."""
    inspector = sa.inspect(engine)
    with engine.connect() as connection:
        for table in inspector.get_table_names():
            if engine.dialect.name == "postgresql":
                rows = connection.execute(sa.text(f'SELECT t::text FROM "{table}" AS t'))
                where = f"PostgreSQL {table}"
            else:
                rows = connection.execute(sa.text(f'SELECT * FROM "{table}"'))
                where = f"SQLite {table}"
            for row in rows:
                scan.feed(where, repr(tuple(row)))


def scan_files(scan: Scan, root: Path, where: str | None = None) -> None:
    """Every file's bytes (the SQLite file, its journal, the COLD directory...)."""
    if not root.exists():
        return
    for path in sorted(root.rglob("*")):
        if path.is_file():
            scan.feed(where or ("SQLite files" if ".sqlite" in path.name else "COLD files"),
                      path.read_bytes())  # fmt: skip


def scan_logs(scan: Scan, records: Iterable[logging.LogRecord]) -> None:
    """Each captured record: its message and every attribute (structured fields)."""
    formatter = logging.Formatter()
    for record in records:
        scan.feed("logs", formatter.format(record) + repr(vars(record)))


@pytest.fixture
def published(setup: Setup) -> Iterator[list[bytes]]:
    """What is published on the test's Redis channels while it runs (cache invalidations)."""
    messages: list[bytes] = []
    if not setup.services:
        yield messages
        return
    import redis

    client = redis.Redis.from_url(setup.config["TIERED_STATE_HOT_URL"])
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(setup.config["TIERED_STATE_KEY_PREFIX"] + "*")
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message is not None:
                messages.append(message["channel"] + b" " + bytes(message["data"]))

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    yield messages
    stop.set()
    thread.join(5)
    pubsub.close()
    client.close()


# -- the test -------------------------------------------------------------------------


def test_no_plaintext_at_rest_rotation_and_erasure(
    setup: Setup, caplog: pytest.LogCaptureFixture, published: list[bytes]
) -> None:
    caplog.set_level(logging.DEBUG)
    volume = (
        Volume(users=9000, sessions=1000, http_users=500, http_sessions=100)
        if setup.services
        else Volume(users=900, sessions=100, http_users=300, http_sessions=50)
    )
    old_key = generate_master_key()
    secrets = Secrets()
    app = setup.app(old_key)
    started = time.perf_counter()
    ids = write_everything(app, secrets, volume)
    written = time.perf_counter() - started
    assert len(secrets.latest) == volume.users + volume.sessions
    # every update's asynchronous callback ran, with the plaintext
    assert len(setup.delivered) == len(ids["changed"]) + 1
    assert all(password in secrets.by_state[i] for i, password in setup.delivered)

    scan = scan_everything(setup, app, caplog, secrets.latest)
    for blob in published:
        scan.feed("Redis published messages", blob)
    everything = secrets.all()
    assert scan.leaks(everything) == {}, scan.summary()
    # The scan did read each place: the canaries (an unencrypted type) are found there.
    canaries = set(secrets.canaries.values())
    expected = {"logs", "local cache"} | (
        {"Redis values", "S3 objects", "PostgreSQL tiered_state_entries",
         "PostgreSQL tiered_state_history"}
        if setup.services else {"memory HOT", "SQLite files", "COLD files"}
    )  # fmt: skip
    assert expected <= scan.places_with(canaries), (sorted(scan.places_with(canaries)), scan)
    assert sum(scan.sealed.values()) > 2 * len(secrets.latest)  # the ciphertext is there
    print(f"\n{len(secrets.latest)} records written in {written:.1f} s; {scan.summary()}")

    # -- rotation: a new key first, rotate-keys, then an app with the new key only -------
    new_key = generate_master_key()
    both = setup.app(new_key, old_key)
    rotated = json.loads(cli(both, "rotate-keys", "--chunk-size", "700", "--json").stdout)
    assert rotated["rewrapped"] == len(secrets.latest) and rotated["left"] == 0
    only_new = setup.app(new_key)
    manager = manager_of(only_new)
    readable = [i for i in secrets.latest if setup.services or not i.startswith("s")]
    # (the embedded HOT tier is process memory: a new app does not see the sessions)
    found = manager.batch_get_state(readable)
    for state_id in readable:
        record = found[state_id]
        assert record is not None, state_id
        wanted = secrets.latest[state_id]
        if "token" in wanted:
            assert record["data"]["token"] == wanted["token"]
        else:
            assert record["data"]["password"] == wanted["password"], state_id
            assert record["data"]["card"]["number"] == wanted["number"]
    for state_id in ids["changed"][:25] + ids["changed"][-25:]:  # through HTTP and batches
        history = manager.get_state_history(state_id)
        first, second = secrets.by_state[state_id][:2], secrets.by_state[state_id][2:4]
        assert history[0]["new_record"]["data"]["password"] == first[0]
        assert history[1]["old_record"]["data"]["card"]["number"] == first[1]
        assert history[1]["new_record"]["data"]["password"] == second[0]

    # -- erasure: through the manager and through `flask state erase --yes` ----------------
    by_manager = [ids["hot"][0], ids["cold"][0], ids["changed"][3], ids["users"][5]]
    by_cli = [ids["cold"][-1], ids["users"][-1]]
    if setup.services:
        by_manager.append(ids["sessions"][7])
    for state_id in by_manager:
        manager.erase_state(state_id, reason="GDPR art. 17 request", actor="dpo")
    for state_id in by_cli:
        cli(only_new, "erase", state_id, "--reason", "GDPR art. 17 request", "--yes")
    erased = by_manager + by_cli
    erased_secrets = {s for i in erased for s in secrets.by_state[i]}

    after = scan_everything(setup, only_new, caplog, secrets.latest)
    assert after.leaks(erased_secrets) == {}
    assert after.leaks(everything) == {}
    # No copy yields the data: every tier's copy, every history row, through a fresh app
    # with the same key (no data key cached) as well as the manager that erased them.
    fresh_app = setup.app(new_key)
    fresh = manager_of(fresh_app)
    for reader in (manager, fresh):
        for state_id in erased:
            assert_erased(reader, state_id)
    # The history still verifies: `flask state audit verify` checks every sealed chain
    # and the current records (the erased ones among them). The embedded HOT tier is the
    # first app's memory: there the sessions are left out.
    listed = [] if setup.services else [i for i in secrets.latest if not i.startswith("s")]
    report = json.loads(cli(fresh_app, "audit", "verify", *listed, "--json").stdout)
    assert report["states"] == [] and report["counts"]["verified"] == report["checked"]
    assert report["checked"] >= (len(secrets.latest) if setup.services else len(listed))


def assert_erased(manager: StateManager, state_id: str) -> None:
    record = manager.get_state(state_id, include_deleted=True)
    assert record is not None and record["status"] == "deleted", state_id
    copies: list[dict[str, Any]] = []
    repositories = manager.get_repositories()
    for category in StateCategory:
        entry = repositories.by_category(category).fetch("state:" + state_id)
        if entry is not None:
            opened = manager.cipher.open(json.loads(entry.value))
            assert opened is not None
            copies.append(opened)
    assert copies, state_id
    history = manager.get_state_history(state_id)
    assert history[-1]["transition"] == "erase"
    for row in history:
        copies += [r for r in (row["old_record"], row["new_record"]) if r is not None]
    for copy in [record, *copies]:
        data = copy["data"]
        if copy["type"] == "session":
            assert data is None, (state_id, copy)
        else:
            assert data.get("password") is None and data["card"].get("number") is None, copy

"""Recovery of critical keys into HOT (flask_tiered_state.ops.recovery) after a Redis
restart that lost everything: by hand, by ``flask state recover``, and automatically.

Each test starts a redis-server of its own (``disposable_redis``) and restarts it empty;
the shared Redis is never touched. WARM is the run's PostgreSQL database, COLD a
directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.errors import ConfigurationError, InvalidRequestError
from flask_tiered_state.extension import EXTENSION_KEY, AppState, TieredState, get_app_state
from flask_tiered_state.ops.recovery import RecoveryHandler
from flask_tiered_state.storage.base import StateCategory
from flask_tiered_state.storage.factory import build_store
from tests.conftest import DisposableRedis, unique_name

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

CRITICAL = ["position:*", "risk_limits", "state:acct-*", "limits_hot"]


@pytest.fixture(autouse=True)
def _no_default_manager() -> Iterator[None]:
    StateManager.set_context_resolver(None)
    StateManager.reset_instance()
    yield
    StateManager.reset_instance()


def restart_empty(server: DisposableRedis) -> None:
    """Stop the private redis-server and start it again on its port, with nothing in it."""
    server.stop()
    server.start()


@pytest.fixture
def manager(
    disposable_redis: DisposableRedis, postgres_engine: Any, tmp_path: Path
) -> Iterator[StateManager]:
    store = build_store(
        hot_url=disposable_redis.url,
        key_prefix=unique_name("rec:") + ":",
        engine=postgres_engine,
        local_dir=tmp_path / "tiers",
        hot_ttl_seconds=900,
    )
    created = StateManager.create(store=store)
    try:
        yield created
    finally:
        created.close()


def seed(manager: StateManager) -> dict[str, Any]:
    """Critical keys in WARM and COLD with HOT copies, others that are not critical, and a
    HOT-home critical key (lost with Redis: nothing below holds it)."""
    store = manager.store
    for name in ("eur", "usd", "gbp"):
        store.set(f"position:{name}", {"qty": len(name)})
    store.set("risk_limits", {"max": 10})
    store.set("limits_hot", {"max": 1}, category=StateCategory.HOT, ttl_seconds=900)
    for i in range(40):
        manager.register_state(f"acct-{i}", "user", {"data": {"n": i}})
        manager.register_state(f"other-{i}", "user", {"data": {"n": i}})
    manager.update_state("acct-3", {"data": {"n": 33}})
    manager.demote_to_cold("acct-5")  # archived: its copy comes from COLD
    critical = [f"position:{n}" for n in ("eur", "usd", "gbp")]
    critical += ["risk_limits", *(f"state:acct-{i}" for i in range(40))]
    store.batch_promote(critical + [f"state:other-{i}" for i in range(40)])
    below = {}
    for key in critical:
        entry = store.coordinator.locate(key)
        assert entry is not None
        below[key] = entry[1]
    hot = manager.get_repositories().hot
    assert set(hot.fetch_many(critical)) == set(critical)
    return below


def check_recovered(manager: StateManager, below: dict[str, Any]) -> None:
    """HOT holds every critical key again, with the version and checksum of its copy below
    and the HOT TTL; the keys that are not critical stay cold."""
    hot = manager.get_repositories().hot
    found = hot.fetch_many(list(below))
    assert set(found) == set(below)
    for key, source in below.items():
        assert found[key].metadata.version == source.metadata.version, key
        assert found[key].metadata.checksum == source.metadata.checksum, key
    client: Any = hot.client  # type: ignore[attr-defined]
    prefix = hot.key_prefix  # type: ignore[attr-defined]
    assert 0 < client.ttl(prefix + "risk_limits") <= 900
    assert not hot.fetch_many([f"state:other-{i}" for i in range(40)])


def test_recover_critical_state_after_an_empty_restart(
    manager: StateManager, disposable_redis: DisposableRedis
) -> None:
    below = seed(manager)
    restart_empty(disposable_redis)
    handler = RecoveryHandler.for_manager(manager, CRITICAL)

    dry = handler.recover_critical_state(dry_run=True)
    assert dry.dry_run and len(dry.recovered) == len(below)
    assert not manager.get_repositories().hot.fetch_many(list(below))  # nothing placed

    report = handler.recover_critical_state()
    assert len(report.recovered) == len(below)
    assert report.recovered["state:acct-5"] == "cold"
    assert report.recovered["state:acct-3"] == "warm"
    assert report.by_tier == {"warm": len(below) - 1, "cold": 1}
    assert report.missing == ["limits_hot"]  # a HOT home: in no other tier
    assert not report.ok and not report.corrupt and not report.superseded
    check_recovered(manager, below)
    # Reads see the same records, now served from HOT.
    assert manager.get_state("acct-3")["data"] == {"n": 33}  # type: ignore[index]

    again = handler.recover_critical_state()
    assert not again.recovered and again.already_hot == len(below)
    summary = again.to_dict()
    assert summary["counts"]["already_hot"] == len(below) and summary["missing"] == ["limits_hot"]


def test_corrupt_copies_and_unmatched_patterns_are_reported(
    manager: StateManager, disposable_redis: DisposableRedis
) -> None:
    below = seed(manager)
    restart_empty(disposable_redis)
    warm: Any = manager.get_repositories().warm
    with warm.engine.begin() as connection:  # damage one WARM value behind the store's back
        connection.execute(
            sa.update(warm.table)
            .where(warm.table.c.key == "position:usd")
            .values(value='{"qty":999}')
        )
    report = RecoveryHandler.for_manager(manager).recover_critical_state(
        ["position:*", "nothing:*"]
    )
    assert report.corrupt == [{"key": "position:usd", "tier": "warm"}]
    assert report.failed_keys == ["position:usd"]
    assert report.unmatched == ["nothing:*"]
    assert set(report.recovered) == {"position:eur", "position:gbp"}
    hot = manager.get_repositories().hot
    assert set(hot.fetch_many(list(below))) == {"position:eur", "position:gbp"}


def test_recovery_refuses_bad_arguments(manager: StateManager) -> None:
    repositories = manager.get_repositories()
    with pytest.raises(ConfigurationError, match="StateRepositories"):
        RecoveryHandler(manager)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="list of globs"):
        RecoveryHandler(repositories, "position:*")
    with pytest.raises(InvalidRequestError, match="No critical keys"):
        RecoveryHandler(repositories).recover_critical_state()
    with pytest.raises(InvalidRequestError, match="dry_run"):
        RecoveryHandler(repositories, ["a"]).recover_critical_state(dry_run="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="critical keys"):
        RecoveryHandler(repositories).watch()


def test_without_a_manager_copies_go_straight_to_hot(
    manager: StateManager, disposable_redis: DisposableRedis
) -> None:
    below = seed(manager)
    restart_empty(disposable_redis)
    handler = RecoveryHandler(manager.get_repositories(), CRITICAL, hot_ttl_seconds=900)
    report = handler.recover_critical_state()
    assert len(report.recovered) == len(below)
    check_recovered(manager, below)


@pytest.mark.parametrize("with_manager", [True, False])
def test_recovery_never_overwrites_a_hot_home_write_made_after_it_looked(
    manager: StateManager, with_manager: bool
) -> None:
    """A key HOT lacks, with a COLD copy at version 5: a HOT-home write lands between the
    recovery's look and its placing, numbered afresh (version 1). The copy, though of a
    higher version, must not replace it: it is reported superseded."""
    store = manager.store
    for n in range(5):
        store.set("limits_hot", {"max": n}, category=StateCategory.HOT, ttl_seconds=900)
    assert store.demote_to_cold("limits_hot")
    repositories = manager.get_repositories()
    handler = RecoveryHandler(
        repositories, ["limits_hot"], manager=manager if with_manager else None,
        hot_ttl_seconds=900,
    )  # fmt: skip
    fetch = handler._fetch
    written: list[int] = []

    def then_another_process_writes(*args: Any, **kwargs: Any) -> Any:
        found = fetch(*args, **kwargs)
        if args[0] is repositories.cold and not written:
            other = repositories.hot.store("limits_hot", json.dumps({"max": 99}), ttl_seconds=900)
            written.append(other.version)
        return found

    handler._fetch = then_another_process_writes  # type: ignore[method-assign]
    report = handler.recover_critical_state()
    assert written == [1]
    assert report.superseded == ["limits_hot"] and report.recovered == {}
    hit = repositories.hot.fetch("limits_hot")
    assert hit is not None and json.loads(hit.value) == {"max": 99}


# -- the Flask side: the automatic recovery and the command ---------------------------------


@pytest.fixture
def make_app(
    disposable_redis: DisposableRedis, postgres_url: str, postgres_engine: Any, tmp_path: Path
) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def factory(**config: Any) -> Flask:
        app = Flask(unique_name("recovery_app_"), instance_path=str(tmp_path / "instance"))
        settings = {
            "TIERED_STATE_HOT_URL": disposable_redis.url,
            "TIERED_STATE_KEY_PREFIX": unique_name("recapp:") + ":",
            "TIERED_STATE_WARM_URL": postgres_url,
            "TIERED_STATE_HOT_TTL_SECONDS": 900,
            "TIERED_STATE_CRITICAL_KEYS": CRITICAL,
        }
        app.config.update(TESTING=True, **{**settings, **config})
        TieredState(app)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        state = app.extensions.get(EXTENSION_KEY)
        if isinstance(state, AppState):
            state.close()


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds} s for {what}")
        time.sleep(0.1)


def test_a_restarted_redis_is_refilled_automatically(
    make_app: Callable[..., Flask], disposable_redis: DisposableRedis
) -> None:
    app = make_app(TIERED_STATE_RECOVER_ON_HOT_RESTART=True)
    manager = get_app_state(app).manager
    below = seed(manager)
    hot = manager.get_repositories().hot
    restart_empty(disposable_redis)
    wait_for(lambda: len(hot.fetch_many(list(below))) == len(below), 15, "the recovery")
    check_recovered(manager, below)
    # A second restart is noticed too.
    restart_empty(disposable_redis)
    wait_for(lambda: len(hot.fetch_many(list(below))) == len(below), 15, "the second recovery")


def test_the_recover_command(
    make_app: Callable[..., Flask], disposable_redis: DisposableRedis
) -> None:
    app = make_app()
    manager = get_app_state(app).manager
    below = seed(manager)
    restart_empty(disposable_redis)
    runner = app.test_cli_runner()

    dry = runner.invoke(args=["state", "recover", "--dry-run", "--json"])
    assert dry.exit_code == 1, dry.output  # limits_hot is missing everywhere
    report = json.loads(dry.stdout)
    assert report["dry_run"] and report["counts"]["recovered"] == len(below)
    assert report["missing"] == ["limits_hot"]
    assert not manager.get_repositories().hot.fetch_many(list(below))

    narrow = runner.invoke(args=["state", "recover", "--pattern", "position:*", "--json"])
    assert narrow.exit_code == 0, narrow.output
    assert json.loads(narrow.stdout)["counts"]["recovered"] == 3

    text = runner.invoke(args=["state", "recover"])
    assert text.exit_code == 1
    assert f"placed {len(below) - 3} HOT copies" in text.output
    assert "limits_hot" in text.output
    check_recovered(manager, below)


def test_the_settings_need_keys_and_redis(make_app: Callable[..., Flask]) -> None:
    with pytest.raises(ConfigurationError, match="TIERED_STATE_CRITICAL_KEYS"):
        make_app(TIERED_STATE_RECOVER_ON_HOT_RESTART=True, TIERED_STATE_CRITICAL_KEYS=[])
    with pytest.raises(ConfigurationError, match="redis://"):
        make_app(TIERED_STATE_RECOVER_ON_HOT_RESTART=True, TIERED_STATE_HOT_URL="memory://")


def test_acting_as_a_role_checks_the_recovery_action(manager: StateManager) -> None:
    from flask_tiered_state.errors import AccessDeniedError
    from flask_tiered_state.roles import RoleBasedAccess

    manager.set_roles(
        RoleBasedAccess({"support": ["states.read"], "ops": ["recovery.run"]}, identity="header:X")
    )
    manager.store.set("position:eur", {"qty": 1})
    handler = RecoveryHandler.for_manager(manager, ["position:*"])
    with manager.acting_as("support"), pytest.raises(AccessDeniedError, match=r"recovery\.run"):
        handler.recover_critical_state()
    with manager.acting_as("ops"):
        assert handler.recover_critical_state().recovered == {"position:eur": "warm"}

"""What the dashboard's figures mean: reads counted, "not read yet" instead of 0 %,
archived states labelled, expected absences neutral, one size measure, and one health
answer per tier when a tier really does not answer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import state_key
from flask_tiered_state.extension import get_app_state
from tests.conftest import free_port

from .conftest import build_app
from .test_pages import html


def section(page: str, marker: str, end: str = "</table>") -> str:
    return page.split(marker, 1)[1].split(end, 1)[0]


def copy_row(page: str, tier: str) -> str:
    """The row of ``tier`` (``cache``, ``hot``, ...) in the state page's copies table."""
    rows = section(page, 'id="copies"').split("<tr")
    (row,) = [r for r in rows if f"<td>{tier}</td>" in r]
    return row


@pytest.fixture
def fresh_app(tmp_path: Path) -> Iterator[Flask]:
    """An embedded app nothing has read from or written to yet."""
    app = build_app(tmp_path)
    yield app
    get_app_state(app).close()
    StateManager.reset_instance()


def test_reads_are_counted_on_the_operations_panel(dash_app: Flask) -> None:
    manager = get_app_state(dash_app).manager
    for n in range(30):
        assert manager.get_state(f"user-{n % 12:02d}") is not None
    manager.batch_get_state(["user-01", "user-02"])
    operations = section(html(dash_app, "/dash/tiers"), 'id="operations"')
    counts = dict(re.findall(r"<tr><td>(\w+)</td><td class=\"num\">(\d+)</td>", operations))
    assert counts["read"] == "30" and counts["batch_read"] == "1"
    assert counts["create"] == "14"  # the writes are still there
    assert manager.get_performance_metrics()["operations"]["read"]["count"] == 30


def test_tiers_never_read_say_so_instead_of_0_percent(fresh_app: Flask) -> None:
    tiers = html(fresh_app, "/dash/tiers")
    table = section(tiers, 'id="tiers"')
    assert table.count("not read yet") == 4  # cache, HOT, WARM, COLD
    assert not re.search(r"\d\s%", table) and "<meter" not in table
    for page in (html(fresh_app, "/dash/"), html(fresh_app, "/dash/health")):
        assert "cache not read yet" in page and not re.search(r"hit rate \d", page)
    manager = get_app_state(fresh_app).manager
    manager.register_state("u1", "user", {})
    manager.store.cache.invalidate(state_key("u1"))
    manager.get_state("u1")  # a cache miss, then a read the HOT tier misses and WARM hits
    table = section(html(fresh_app, "/dash/tiers"), 'id="tiers"')
    warm = section(table, 'class="tier-warm"', "</tr>")
    assert "100.0\u00a0%" in warm and "<meter" in warm  # "%" never wraps alone
    cold = section(table, 'class="tier-cold"', "</tr>")
    assert "not read yet" in cold  # found above it: no read reached COLD
    assert "cache hit rate 0.0\u00a0%" in html(fresh_app, "/dash/")  # a real 0 %: read, missed


def test_an_archived_state_is_labelled(dash_app: Flask) -> None:
    manager = get_app_state(dash_app).manager
    assert "archived" not in section(html(dash_app, "/dash/states/user-05"), "<h1", "</div>")
    manager.demote_to_cold("user-05")
    manager.store.cache.invalidate(state_key("user-05"))
    page = html(dash_app, "/dash/states/user-05")
    heading = section(page, "<h1", "</div>")
    assert 'id="archived"' in heading and ">archived</span>" in heading
    assert "lives in COLD" in heading
    cold, warm = copy_row(page, "cold"), copy_row(page, "warm")
    assert '<span class="ok">yes</span>' in cold and "archived: the record lives here" in cold
    assert '<span class="muted">none</span>' in warm and "archived to COLD" in warm
    assert 'class="bad"' not in section(page, 'id="copies"')


def test_an_expected_absent_copy_is_neutral_and_a_missing_one_red(dash_app: Flask) -> None:
    manager = get_app_state(dash_app).manager
    page = html(dash_app, "/dash/states/user-01")  # WARM home, never promoted
    hot = copy_row(page, "hot")
    assert '<span class="muted">none</span>' in hot and "normal" in hot
    assert 'class="bad"' not in section(page, 'id="copies"')
    assert "home: the record lives here" in copy_row(page, "warm")
    assert "not archived" in copy_row(page, "cold")
    # A WARM copy that should exist and does not: the one red mark.
    manager.promote_to_hot("user-04")
    manager.get_repositories().warm.delete(state_key("user-04"))
    page = html(dash_app, "/dash/states/user-04")
    warm = copy_row(page, "warm")
    assert '<span class="bad">missing</span>' in warm
    assert '<span class="ok">yes</span>' in copy_row(page, "hot")
    assert section(page, 'id="copies"').count('class="bad"') == 1


def test_the_cache_and_the_tiers_show_the_same_size_for_one_version(dash_app: Flask) -> None:
    manager = get_app_state(dash_app).manager
    for _ in range(2):  # the first hit keeps a decoded copy: more memory, same value
        manager.get_state("user-03")
    key = state_key("user-03")
    info = manager.store.cache.info(key)
    stored = manager.get_repositories().warm.fetch(key)
    assert info is not None and stored is not None
    assert info.size > stored.metadata.size  # what the page showed before, as "size"
    page = html(dash_app, "/dash/states/user-03")
    sizes = {}
    for tier in ("cache", "warm"):
        row = copy_row(page, tier)
        sizes[tier] = re.findall(r'<td class="num">(\d+ B)', row)[0]
        assert re.search(rf'<td class="num">{stored.metadata.version}</td>', row)
    assert sizes["cache"] == sizes["warm"] == f"{stored.metadata.size} B"
    assert f"{info.size} B in memory" in copy_row(page, "cache")


def _closed_port_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


def assert_one_answer(manager: StateManager, *, hot_up: bool) -> dict[str, Any]:
    """The store's stats, the manager's health and its detailed health agree about
    every tier: available and healthy are one answer, and a down tier has failures."""
    stats = manager.get_storage_stats()["tiers"]
    for tier, detail in stats.items():
        assert detail["available"] is detail["health"]["healthy"], (tier, detail)
        assert (detail["health"]["failures"] == 0) is detail["available"], (tier, detail)
    health = manager.get_health_status()
    detailed = manager.get_health_status(include_errors=True)
    for tier, entry in health["tiers"].items():
        assert entry["available"] is stats[tier]["available"], tier
        assert (entry["failures"] == 0) is entry["available"], (tier, entry)
        assert "last_error" not in entry
        assert (entry["degraded_for_seconds"] is None) is entry["available"], (tier, entry)
        assert bool(detailed["tiers"][tier]["last_error"]) is not entry["available"], tier
        assert bool(stats[tier].get("error")) is not entry["available"], tier
    assert health["tiers"]["hot"]["available"] is hot_up
    return health


def test_a_tier_that_does_not_answer_is_down_everywhere(tmp_path: Path) -> None:
    app = build_app(tmp_path, TIERED_STATE_HOT_URL=_closed_port_url())
    manager = get_app_state(app).manager
    try:
        # Before anything used HOT: the health check alone finds it down.
        health = assert_one_answer(manager, hot_up=False)
        assert health["status"] == "degraded"
        manager.register_state("u1", "user", {})
        assert manager.get_state("u1") is not None  # WARM serves
        assert_one_answer(manager, hot_up=False)
        rest = app.test_client().get("/api/health")
        assert rest.status_code == 200
        hot = rest.get_json()["tiers"]["hot"]
        assert hot["available"] is False and hot["failures"] >= 1
        assert "last_error" not in hot  # backend text stays out of HTTP answers
        page = html(app, "/dash/health")
        card = section(page, 'id="health-hot"', "</section>")
        assert 'data-available="no"' in card and '<span class="bad">down</span>' in card
        assert int(re.findall(r'<dd class="num failures">(\d+)</dd>', card)[0]) >= 1
        assert "WARM serves" in card and "did not answer" in card
        warm = section(page, 'id="health-warm"', "</section>")
        assert '<span class="ok">up</span>' in warm and 'failures">0<' in warm
        tiers = section(html(app, "/dash/tiers"), 'id="tiers"')
        assert '<span class="bad">down</span>' in section(tiers, 'class="tier-hot"', "</tr>")
        overview = html(app, "/dash/")
        assert '<span class="bad">down</span>' in section(overview, "tier-hot", "</a>")
        state = html(app, "/dash/states/u1")
        assert '<span class="warn"' in copy_row(state, "hot")  # an optional copy: not red
        assert "the tier is down" in copy_row(state, "hot")
        assert 'class="bad"' not in section(state, 'id="copies"')
    finally:
        get_app_state(app).close()
        StateManager.reset_instance()


@pytest.mark.redis
def test_health_follows_a_private_redis_down_and_back(
    disposable_redis: Any, tmp_path: Path
) -> None:
    app = build_app(tmp_path, TIERED_STATE_HOT_URL=disposable_redis.url)
    manager = get_app_state(app).manager
    try:
        manager.register_state("u1", "user", {})
        assert_one_answer(manager, hot_up=True)
        disposable_redis.stop()
        down = assert_one_answer(manager, hot_up=False)
        assert down["status"] == "degraded"
        assert manager.update_state("u1", {"data": {"x": 1}})["version"] == 2
        page = html(app, "/dash/health")
        assert '<span class="bad">down</span>' in section(page, 'id="health-hot"', "</section>")
        disposable_redis.start()
        up = assert_one_answer(manager, hot_up=True)  # checked now: no backoff wait
        assert up["status"] == "healthy" and up["tiers"]["hot"]["pending_drops"] == 0
        page = html(app, "/dash/health")
        assert '<span class="ok">up</span>' in section(page, 'id="health-hot"', "</section>")
    finally:
        get_app_state(app).close()
        StateManager.reset_instance()

"""Every dashboard page, server-side through the test client, on both backends."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flask import Flask

from flask_tiered_state.domain.model import state_key
from flask_tiered_state.extension import get_app_state

from .conftest import build_app, populate


def html(app: Flask, url: str, status: int = 200) -> str:
    response = app.test_client().get(url)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def listed_ids(page: str) -> list[str]:
    table = page.split('id="results"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<a class="mono" href="/dash/states/([^"]+)">', table)


def test_overview_counts_states_by_type_and_status(dash_app: Flask) -> None:
    page = html(dash_app, "/dash/")
    counts = page.split('id="counts"', 1)[1].split("</table>", 1)[0]
    user_row = counts.split('href="/dash/states?type=user">user</a>', 1)[1].split("</tr>", 1)[0]
    cells = re.findall(r'<td class="num[^"]*">(?:<a [^>]*>)?(?:<span [^>]*>)?(\d+)', user_row)
    assert cells == ["1", "9", "1", "1", "12"]  # created, active, suspended, expired, total
    assert 'href="/dash/states?type=user&amp;status=suspended">1</a>' in counts
    assert "session" in page.split("Not listed:", 1)[1][:200]
    activity = page.split('id="activity"', 1)[1]
    assert 'href="/dash/states/sess-01"' in activity and "healthy" in page


def test_states_are_listed_by_type_and_status_with_paging(dash_app: Flask) -> None:
    everything = html(dash_app, "/dash/states?per_page=25")
    assert len(listed_ids(everything)) == 13  # 12 users and a subscription; no session
    suspended = html(dash_app, "/dash/states?type=user&status=suspended")
    assert listed_ids(suspended) == ["user-01"]
    first = html(dash_app, "/dash/states?type=user&per_page=25&page=1")
    assert "page 1 of 1 · 12 states" in first
    ids = set(listed_ids(first))
    assert ids == {f"user-{n:02d}" for n in range(12)}
    assert listed_ids(html(dash_app, "/dash/states?type=user&page=2")) == []


def test_the_pager_says_when_more_states_match_than_were_counted(
    dash_app: Flask, monkeypatch: Any
) -> None:
    monkeypatch.setattr("flask_tiered_state.domain.search.SEARCH_COUNT_LIMIT", 4)
    first = html(dash_app, "/dash/states?type=user&per_page=3")
    assert "page 1 of 2+ · 4+ states" in first and 'rel="next"' in first
    assert len(listed_ids(first)) == 3
    last = html(dash_app, "/dash/states?type=user&per_page=3&page=4")
    assert "page 4 of 4 · 12 states" in last and 'rel="next"' not in last


def test_search_with_dotted_filters(dash_app: Flask) -> None:
    pro = html(dash_app, "/dash/states?type=user&q=data.plan%3Dpro")
    assert sorted(listed_ids(pro)) == ["user-00", "user-06", "user-09"]  # user-03 is team now
    both = html(dash_app, "/dash/states?q=data.plan%3Dfree+data.country%3DDE")
    assert sorted(listed_ids(both)) == ["user-01", "user-02", "user-04"]
    quoted = html(dash_app, "/dash/states?q=name%3D%22User+07%22")
    assert listed_ids(quoted) == ["user-07"]
    assert 'value="data.plan=pro"' in pro  # the form keeps the query


def test_bad_searches_answer_400_with_the_reason(dash_app: Flask) -> None:
    for query, words in (
        ("q=plan", "expected path=value"),
        ("q=secret.x%3D1", "unknown root"),
        ("q=data.x%3D%22open", "No closing quotation"),
        ("type=session", "not searchable"),
        ("type=nope", "nope"),
        ("page=0", "page"),
        ("per_page=5000", "per_page"),
    ):
        page = html(dash_app, f"/dash/states?{query}", 400)
        assert words in page, query


def test_a_states_page(dash_app: Flask) -> None:
    page = html(dash_app, "/dash/states/user-01")
    assert '<h1 class="mono">user-01</h1>' in page
    timeline = page.split('id="timeline"', 1)[1]
    versions = re.findall(r'data-version="(\d+)"', timeline)
    assert versions == ["3", "2", "1"]  # newest first
    assert "“payment failed”" in timeline and "by billing" in timeline
    svg = page.split("<svg", 1)[1].split("</svg>", 1)[0]
    assert '<g class="node current" data-status="suspended">' in svg
    assert '<g class="node next" data-status="active">' in svg  # resume / activate
    assert "activate / resume" in svg and "current status suspended" in svg
    copies = page.split('id="copies"', 1)[1].split("</table>", 1)[0]
    assert re.search(
        r"<td>warm</td><td>\w+</td>\s*<td class=\"copy-state\"><span class=\"ok\">yes", copies
    )


def test_a_diff_between_two_versions(dash_app: Flask) -> None:
    page = html(dash_app, "/dash/states/user-03?from=1&to=3")
    diff = page.split('id="diff"', 1)[1].split("</table>", 1)[0]
    assert (
        '<td class="mono">data.plan</td><td><code>"pro"</code></td><td><code>"team"</code>' in diff
    )
    assert "data.country" in diff and "status" in diff
    assert "No difference" in html(dash_app, "/dash/states/user-03?from=2&to=2")
    missing = html(dash_app, "/dash/states/user-03?from=1&to=9", 404)
    assert "has no version 9" in missing
    assert "Query parameter from=&#39;x&#39; is invalid" in html(
        dash_app, "/dash/states/user-03?from=x", 400
    )


def test_unknown_states_and_lookups(dash_app: Flask) -> None:
    assert "No state with id" in html(dash_app, "/dash/states/nobody", 404)
    client = dash_app.test_client()
    found = client.get("/dash/lookup?state_id=sess-01")
    assert found.status_code == 302 and found.location.endswith("/dash/states/sess-01")
    session = html(dash_app, "/dash/states/sess-01")
    assert "home tier hot" in session
    assert "Invalid state id" in html(dash_app, "/dash/lookup?state_id=bad+id", 400)
    deleted = get_app_state(dash_app).manager
    deleted.delete_state("user-11")
    tombstone = html(dash_app, "/dash/states/user-11")
    assert '<span class="status status-deleted">deleted</span>' in tombstone


def movement_counts(page: str) -> list[int]:
    """promoted to HOT, promoted on frequent reads, demoted to COLD, as the page shows them."""
    moves = page.split('id="movements"', 1)[1].split("</dl>", 1)[0]
    return [int(n) for n in re.findall(r'<dd class="num">(\d+)</dd>', moves)]


def test_the_tiers_page_counts_keys_and_movements(dash_app: Flask) -> None:
    manager = get_app_state(dash_app).manager
    before = movement_counts(html(dash_app, "/dash/tiers"))
    store_counts = manager.store.movements()
    assert before == [
        store_counts["promotions"],
        store_counts["auto_promotions"],
        store_counts["demotions"],
    ]
    manager.promote_to_hot("user-04")
    manager.demote_to_cold("user-05")
    manager.demote_to_cold("user-06")
    page = html(dash_app, "/dash/tiers")
    tiers = page.split('id="tiers"', 1)[1].split("</table>", 1)[0]
    for tier in ("cache", "hot", "warm", "cold"):
        assert f'<th scope="row">{tier}</th>' in tiers
    cold_row = tiers.split('class="tier-cold"', 1)[1].split("</tr>", 1)[0]
    assert re.findall(r'<td class="num">(\d+)</td>', cold_row)[0] == "2"
    assert "<meter" in tiers
    assert movement_counts(page) == [before[0] + 1, before[1], before[2] + 2]
    recent = page.split('id="recent-moves"', 1)[1].split("</table>", 1)[0]
    listed = re.findall(r'href="/dash/states/([^"]+)">[^<]*</a></td><td>(\w+)</td>', recent)
    assert listed == [("user-06", "demoted"), ("user-05", "demoted"), ("user-04", "promoted")]


def test_the_tiers_page_counts_automatic_promotions(dash_app: Flask) -> None:
    manager = get_app_state(dash_app).manager
    store = manager.store
    before = movement_counts(html(dash_app, "/dash/tiers"))
    key = state_key("user-07")
    assert store.get_repositories().hot.fetch(key) is None
    # Reads served by the cache count as accesses; the next read from below the cache
    # then finds the value read often enough and places a HOT copy.
    for _ in range(store.policy.promote_after_accesses):
        assert manager.get_state("user-07") is not None
    store.cache.invalidate(key)
    assert manager.get_state("user-07") is not None
    assert store.get_repositories().hot.fetch(key) is not None
    page = html(dash_app, "/dash/tiers")
    assert movement_counts(page) == [before[0], before[1] + 1, before[2]]
    assert 'id="recent-moves"' not in page  # only moves asked for are listed


def test_the_health_page(dash_app: Flask) -> None:
    page = html(dash_app, "/dash/health")
    assert 'Overall: <span class="status status-healthy">healthy</span>' in page
    for tier in ("hot", "warm", "cold"):
        assert f'id="health-{tier}"' in page


def test_assets_are_served_by_the_blueprint_with_a_strict_policy(dash_app: Flask) -> None:
    client = dash_app.test_client()
    page = client.get("/dash/")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    text = page.get_data(as_text=True)
    assert not re.search(r'(src|href)="(https?:)?//', text), "no external assets"
    assert "style=" not in text  # inline styles would break the policy
    for asset in re.findall(r'(?:src|href)="(/dash/static/[^"]+)"', text):
        response = client.get(asset)
        assert response.status_code == 200 and response.data
        response.close()
    package = Path(__file__).parents[2] / "flask_tiered_state" / "dashboard"
    assert (package / "static" / "dashboard.css").is_file()


def test_the_pages_stay_up_when_the_hot_tier_is_down(disposable_redis: Any, tmp_path: Path) -> None:
    app = build_app(tmp_path, TIERED_STATE_HOT_URL=disposable_redis.url)
    try:
        populate(get_app_state(app).manager)
        get_app_state(app).manager.promote_to_hot("user-04")
        disposable_redis.stop()
        health = html(app, "/dash/health")
        assert 'Overall: <span class="status status-degraded">degraded</span>' in health
        hot = health.split('id="health-hot"', 1)[1].split("</section>", 1)[0]
        assert '<dd class="tier-state"><span class="bad">down</span>' in hot
        assert "degraded" in html(app, "/dash/")
        html(app, "/dash/tiers")
        state = html(app, "/dash/states/user-04")
        copies = state.split('id="copies"', 1)[1].split("</table>", 1)[0]
        assert "unavailable" in copies and "<td>warm</td>" in copies
    finally:
        get_app_state(app).close()

"""A state's page shows its history 50 changes at a time, newest first, with next/previous
links: issue 13's unbounded ``/history`` had a twin on the dashboard, which loaded and
rendered every change of the state (and a version list as long) on each view."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_tiered_state.dashboard.queries import HISTORY_PER_PAGE
from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.extension import get_app_state

from .conftest import build_app

CHANGES = 2 * HISTORY_PER_PAGE + 20  # 120: pages of 50, 50 and 20


@pytest.fixture
def long_app(backend: dict[str, Any], tmp_path: Path) -> Iterator[Flask]:
    """An app whose state ``u1`` has :data:`CHANGES` history rows."""
    app = build_app(tmp_path, **backend)
    manager = get_app_state(app).manager
    manager.register_state("u1", "user", {"data": {"n": 1}})
    for n in range(2, CHANGES + 1):
        manager.update_state("u1", {"data": {"n": n}}, reason=f"change {n}")
    yield app
    get_app_state(app).close()
    StateManager.reset_instance()


def get(app: Flask, url: str, status: int = 200) -> str:
    response = app.test_client().get(url)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    return response.get_data(as_text=True)


def shown_versions(page: str) -> list[int]:
    timeline = page.split('id="timeline"', 1)[1].split("</ol>", 1)[0]
    return [int(v) for v in re.findall(r'data-version="(\d+)"', timeline)]


def pager_links(page: str) -> dict[str, str]:
    history = page.split('id="history"', 1)[1]
    nav = history.split('<nav class="pager"', 1)[1].split("</nav>", 1)[0]
    return {
        rel: html.unescape(href)
        for rel, href in re.findall(r'rel="(prev|next)" href="([^"]+)"', nav)
    }


def test_the_first_page_shows_the_newest_50_changes(long_app: Flask) -> None:
    page = get(long_app, "/dash/states/u1")
    assert shown_versions(page) == list(range(CHANGES, CHANGES - HISTORY_PER_PAGE, -1))
    assert f"{CHANGES} changes, newest first" in page
    assert "page 1 of 3 · 120 changes" in page
    assert pager_links(page) == {"next": "?page=2#history"}
    # The version choices of the compare form are this page's, not the whole history's.
    form = page.split('id="diff-form"', 1)[1].split("</form>", 1)[0]
    options = re.findall(r'<select name="from">(.*?)</select>', form, re.S)[0]
    choices = [int(v) for v in re.findall(r'<option value="(\d+)"', options)]
    assert choices == list(range(CHANGES - HISTORY_PER_PAGE + 1, CHANGES + 1))
    assert f'<option value="{CHANGES - 1}" selected>' in options


def test_following_pages_and_the_last_one(long_app: Flask) -> None:
    second = get(long_app, "/dash/states/u1?page=2")
    assert shown_versions(second) == list(range(70, 20, -1))
    assert pager_links(second) == {"prev": "?page=1#history", "next": "?page=3#history"}
    last = get(long_app, "/dash/states/u1?page=3")
    assert shown_versions(last) == list(range(20, 0, -1))
    assert pager_links(last) == {"prev": "?page=2#history"}
    assert "“change 20”" in last and "data.n" not in last.split('data-version="1"', 1)[1]


def test_a_page_past_the_last_one_says_so(long_app: Flask) -> None:
    page = get(long_app, "/dash/states/u1?page=9")
    assert shown_versions(page) == []
    assert "Page 9 is past the last page (3)." in page
    assert pager_links(page) == {"prev": "?page=8#history"}


@pytest.mark.parametrize("value", ["0", "-1", "x", "1000001", "99999999999999999999"])
def test_a_bad_page_answers_400(long_app: Flask, value: str) -> None:
    assert "page" in get(long_app, f"/dash/states/u1?page={value}", 400)


def test_a_diff_keeps_the_page_and_may_reach_any_version(long_app: Flask) -> None:
    page = get(long_app, "/dash/states/u1?page=3&from=5&to=110")
    assert shown_versions(page) == list(range(20, 0, -1))
    diff = page.split('id="diff"', 1)[1].split("</table>", 1)[0]
    assert "data.n" in diff and "<code>5</code>" in diff and "<code>110</code>" in diff
    form = page.split('id="diff-form"', 1)[1].split("</form>", 1)[0]
    assert '<input type="hidden" name="page" value="3">' in form
    assert '<option value="110" selected>' in form  # a version of another page, chosen
    links = pager_links(page)
    assert links["prev"] == "?page=2&from=5&to=110#history"


def test_a_short_history_has_no_pager(long_app: Flask) -> None:
    get_app_state(long_app).manager.register_state("u2", "user")
    page = get(long_app, "/dash/states/u2")
    assert shown_versions(page) == [1]
    assert '<nav class="pager"' not in page.split('id="history"', 1)[1]
    assert "1 change, newest first" in page

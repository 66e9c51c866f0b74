"""A search counts its matches up to a bound, so that a first page costs the same over a
thousand states or a million; the page says when there are more."""

from __future__ import annotations

from typing import Any

import pytest

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateType


def test_counts_stop_at_the_bound_and_say_so(
    manager: StateManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting every match made a first page over 1,000,000 states cost 200 times one
    over 1,000; a search counts up to SEARCH_COUNT_LIMIT, or to its page's end."""
    monkeypatch.setattr("flask_tiered_state.domain.search.SEARCH_COUNT_LIMIT", 5)
    for i in range(12):
        manager.register_state(f"u{i:02d}", StateType.USER, {"data": {"plan": "pro"}})
    manager.register_state("other", StateType.USER, {"data": {"plan": "free"}})
    newest_first = [f"u{i:02d}" for i in reversed(range(12))]

    def ids(page: Any) -> list[str]:
        return [r["state_id"] for r in page.items]

    first = manager.search_states(StateType.USER, {"data.plan": "pro"}, per_page=2)
    assert ids(first) == newest_first[:2]
    assert (first.total, first.total_exact, first.pages, first.has_next) == (5, False, 3, True)
    # a page whose end is past the bound counts up to its end
    third = manager.search_states(StateType.USER, {"data.plan": "pro"}, page=3, per_page=4)
    assert ids(third) == newest_first[8:] and (third.total, third.total_exact) == (12, True)
    assert not third.has_next
    wide = manager.search_states(StateType.USER, {"data.plan": "pro"}, per_page=10)
    assert ids(wide) == newest_first[:10] and (wide.total, wide.total_exact) == (10, False)
    few = manager.search_states(StateType.USER, {"data.plan": "free"})
    assert ids(few) == ["other"] and (few.total, few.total_exact) == (1, True)
    past = manager.search_states(StateType.USER, {"data.plan": "pro"}, page=9, per_page=2)
    assert past.items == [] and (past.total, past.total_exact) == (12, True)


def test_the_cli_says_there_are_more() -> None:
    from flask_tiered_state.cli import page_lines
    from flask_tiered_state.domain.paging import Page

    record = {"state_id": "u1", "type": "user", "status": "active", "version": 1,
              "name": "", "updated_at": "2026-12-07T00:00:00+00:00"}  # fmt: skip
    more = page_lines(Page([record] * 2, 10_000, 1, 2, total_exact=False))
    assert more[-1] == "page 1 of 5,000+, 10,000+ states"
    exact = page_lines(Page([record] * 2, 3, 1, 2))
    assert exact[-1] == "page 1 of 2, 3 states"

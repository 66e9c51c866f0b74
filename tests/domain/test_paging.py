"""Pages and filter parsing."""

from __future__ import annotations

from typing import Any

import pytest

from flask_tiered_state.domain.paging import Page, validate_paging
from flask_tiered_state.domain.search import parse_filters
from flask_tiered_state.errors import InvalidRequestError


def test_page_arithmetic() -> None:
    page = Page(items=[1, 2], total=5, page=3, per_page=2)
    assert page.pages == 3 and not page.has_next and page.has_prev
    assert page.to_dict() == {"items": [1, 2], "total": 5, "page": 3, "per_page": 2, "pages": 3,
                              "total_exact": True}  # fmt: skip
    assert Page([], 0, 1, 50).pages == 0


@pytest.mark.parametrize(
    ("page", "per_page", "fragment"),
    [
        (0, 10, "page"),
        (1, 0, "per_page"),
        (1, 1001, "1 to 1000"),
        ("1", 5, "page"),
        (1, 2.0, "per_page"),
    ],
)
def test_paging_bounds(page: Any, per_page: Any, fragment: str) -> None:
    with pytest.raises(InvalidRequestError, match=fragment):
        validate_paging(page, per_page)


def test_filters_parse() -> None:
    assert parse_filters({"data.profile.tier": "gold", "status": "active", "version": 3}) == [
        (("data", "profile", "tier"), "gold"),
        (("status",), "active"),
        (("version",), 3),
    ]
    assert parse_filters(None) == []


@pytest.mark.parametrize(
    ("filters", "fragment"),
    [
        ({"colour": "red"}, "unknown root 'colour'"),
        ({"data": "x"}, "name a key inside data"),
        ({"name.first": "x"}, "name has no fields"),
        ({"data.a b": 1}, "key 'a b' is not allowed"),
        ({"data..x": 1}, "key '' is not allowed"),
        ({"data.x": [1]}, "filter values are strings"),
        ({"data.x": {"y": 1}}, "filter values are strings"),
        ({"data.x": float("nan")}, "numbers must be finite"),
    ],
)
def test_bad_filters(filters: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_filters(filters)
    assert fragment in info.value.message
    if "path" in info.value.message:
        assert "data.<key>" in info.value.message


def test_a_page_of_a_bounded_count_says_there_is_more() -> None:
    full = Page(items=[1, 2], total=10, page=5, per_page=2, total_exact=False)
    assert full.pages == 5 and full.has_next and full.has_prev
    assert full.to_dict()["total_exact"] is False
    short = Page(items=[1], total=10, page=6, per_page=2, total_exact=False)
    assert not short.has_next  # a page that did not come full is the last one

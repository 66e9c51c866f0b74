"""How the ``flask state`` commands print."""

from __future__ import annotations

import json
from typing import Any

import click

from ..domain.paging import Page

__all__ = ["count", "echo_json", "page_lines", "record_line"]


def echo_json(value: Any) -> None:
    """Print ``value`` as stable JSON: keys sorted, indented by two spaces."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str))


def count(number: int, noun: str) -> str:
    """``"1 state"``, ``"2 states"``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def record_line(record: dict[str, Any]) -> str:
    """One state on one line: id, type, status, version, last change."""
    return (
        f"{record['state_id']}  {record['type']}  {record['status']}  "
        f"v{record['version']}  {record['updated_at']}"
    )


def page_lines(page: Page[dict[str, Any]]) -> list[str]:
    """A search result page as text: one line per state, then where the page is.

    A search without results says so (its page object has ``pages == 0``, as over the
    REST API); a page past the last one says how many pages there are.
    """
    if page.total == 0:
        return ["No states match."]
    if not page.items:
        verb = "matches" if page.total == 1 else "match"
        return [
            f"Page {page.page} is past the last page ({page.pages}); "
            f"{count(page.total, 'state')} {verb}."
        ]
    summary = f"page {page.page} of {page.pages}, {count(page.total, 'state')}"
    return [*(record_line(record) for record in page.items), summary]

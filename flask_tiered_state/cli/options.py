"""Options and argument parsing shared by the ``flask state`` commands."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import click

__all__ = ["json_object", "json_option", "path_filters"]

#: ``--json``: print machine-readable output.
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def json_object(text: str | None, what: str) -> dict[str, Any] | None:
    """``text`` parsed as a JSON object (None stays None); bad usage otherwise."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"{what} must be JSON: {exc}") from None
    if not isinstance(value, dict):
        raise click.BadParameter(f"{what} must be a JSON object, not {type(value).__name__}.")
    return value


def path_filters(items: Iterable[str]) -> dict[str, Any]:
    """``PATH=VALUE`` items as search filters; a value is JSON when it parses, else text."""
    filters: dict[str, Any] = {}
    for item in items:
        path, sep, text = item.partition("=")
        if not sep or not path:
            raise click.BadParameter(f"{item!r} is not PATH=VALUE.", param_hint="--filter")
        try:
            filters[path] = json.loads(text)
        except ValueError:
            filters[path] = text
    return filters

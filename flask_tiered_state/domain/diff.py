"""Differences between two records as dotted paths.

Objects are walked key by key (``data.address.city``); any other value, lists
included, is a leaf compared as a whole. The bookkeeping fields that change with
every mutation (``version``, ``created_at``, ``updated_at``) and the fixed ones
(``state_id``, ``type``) are left out, so a diff shows what a mutation changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["IGNORED_FIELDS", "diff_records", "flatten"]

IGNORED_FIELDS = frozenset({"state_id", "type", "version", "created_at", "updated_at"})


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; an empty object is a leaf."""
    flat: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            flat.update(flatten(item, path + "."))
        else:
            flat[path] = item
    return flat


def diff_records(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """What changed from ``old`` to ``new``.

    :return: ``{"added": {path: value}, "removed": {path: old value},
        "changed": {path: {"from": old, "to": new}}}``, each sorted by path.
    """
    before = flatten({k: v for k, v in old.items() if k not in IGNORED_FIELDS})
    after = flatten({k: v for k, v in new.items() if k not in IGNORED_FIELDS})
    added = {p: after[p] for p in sorted(after.keys() - before.keys())}
    removed = {p: before[p] for p in sorted(before.keys() - after.keys())}
    changed = {
        p: {"from": before[p], "to": after[p]}
        for p in sorted(before.keys() & after.keys())
        if before[p] != after[p] or type(before[p]) is not type(after[p])
    }
    return {"added": added, "removed": removed, "changed": changed}

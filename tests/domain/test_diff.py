"""Diffs as dotted paths."""

from __future__ import annotations

from flask_tiered_state.domain.diff import diff_records, flatten


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1], "e": {}}


def test_added_removed_changed() -> None:
    old = {
        "state_id": "u1",
        "version": 1,
        "updated_at": "t1",
        "status": "created",
        "name": "Ann",
        "data": {"balance": 10, "tier": "gold", "address": {"city": "Oslo"}},
        "metadata": {},
    }
    new = {
        **old,
        "version": 2,
        "updated_at": "t2",
        "status": "active",
        "data": {"balance": 15, "address": {"city": "Oslo", "zip": "0150"}, "flag": True},
        "metadata": {"source": "api"},
    }
    diff = diff_records(old, new)
    assert diff["added"] == {
        "data.address.zip": "0150",
        "data.flag": True,
        "metadata.source": "api",
    }
    assert diff["removed"] == {"data.tier": "gold", "metadata": {}}
    assert diff["changed"] == {
        "data.balance": {"from": 10, "to": 15},
        "status": {"from": "created", "to": "active"},
    }
    assert diff_records(old, old) == {"added": {}, "removed": {}, "changed": {}}


def test_type_change_is_a_change() -> None:
    diff = diff_records({"data": {"x": 1}}, {"data": {"x": True}})
    assert diff["changed"] == {"data.x": {"from": 1, "to": True}}

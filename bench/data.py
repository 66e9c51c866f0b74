"""The values every benchmark stores: domain-shaped records of about 600 bytes."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["STATUSES", "dumps", "keys", "record", "records"]

#: ``data.status`` cycles through these (1 in 5 records is "active").
STATUSES = ("active", "pending", "suspended", "trial", "closed")
_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> str:
    """Canonical JSON, as the store writes it, so both sides move the same bytes."""
    return _encoder.encode(value)


def record(number: int, *, state_type: str = "user", prefix: str = "u") -> dict[str, Any]:
    """A record like the domain layer's (``state_id, name, type, status, data, ...``)."""
    state_id = f"{prefix}{number:07d}"
    second = number % 60
    stamp = f"2024-05-{1 + number % 28:02d}T{number % 24:02d}:{number % 60:02d}:{second:02d}"
    return {
        "state_id": state_id,
        "name": f"Customer {number}",
        "type": state_type,
        "status": "active",
        "data": {
            "status": STATUSES[number % len(STATUSES)],
            "email": f"customer{number}@example.com",
            "plan": ("free", "pro", "team")[number % 3],
            "credits": number % 10_000,
            "limits": {"daily": 1000 + number % 7, "monthly": 30_000},
            "tags": ["beta", "eu", f"cohort-{number % 12}"],
            "profile": {"country": "DE", "locale": "de-DE", "newsletter": number % 2 == 0},
        },
        "metadata": {"source": "bench", "region": "eu-central-1", "revision": number % 5},
        "version": 1,
        "created_at": f"{stamp}.{number % 1_000_000:06d}+00:00",
        "updated_at": f"{stamp}.{(number * 7) % 1_000_000:06d}+00:00",
    }


def keys(namespace: str, count: int) -> list[str]:
    return [f"{namespace}:{n:07d}" for n in range(count)]


def records(
    namespace: str, count: int, *, distinct: int | None = None
) -> dict[str, dict[str, Any]]:
    """``count`` records under keys ``namespace:0000000`` ...; with ``distinct``, only that
    many different record objects, shared by the keys in turn (big batches stay small in
    memory; the store still encodes and hashes every item)."""
    if distinct is None:
        return {key: record(n) for n, key in enumerate(keys(namespace, count))}
    pool = [record(n) for n in range(min(distinct, count))]
    return {key: pool[n % len(pool)] for n, key in enumerate(keys(namespace, count))}

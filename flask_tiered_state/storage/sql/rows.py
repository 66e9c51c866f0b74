"""Rows of the WARM tier: values prepared for writes, and verified on reads.

A prepared row is a dict holding every column of the table plus ``now`` (the write's
clock reading) and ``explicit`` (whether the caller gave the version); compiled
statements take the names they need from it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import IntegrityError, InvalidRequestError
from ..base import StateCategory, StateMetadata, StoredValue, WriteRequest
from ..checks import check_write

__all__ = ["prepare_row", "prepare_rows", "row_metadata", "verified"]

#: Column text to enum: a dict lookup costs a fraction of ``StateCategory(text)`` per row.
_CATEGORIES = {c.value: c for c in StateCategory}
_stored, _metadata = StoredValue._make, StateMetadata._make


def prepare_row(
    key: str, value: str, version: int | None, ttl: int | None, now: float, category: str
) -> dict[str, Any]:
    """Check a write's arguments and compute its columns."""
    check_write(key, value, version, ttl)
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"The value for {key!r} cannot be encoded as UTF-8 ({exc.reason}); "
            "store valid Unicode text.",
            details={"key": key},
        ) from exc
    return {
        "key": key,
        "value": value,
        "checksum": hashlib.sha256(encoded).hexdigest(),
        "size": len(encoded),
        "version": 1 if version is None else version,
        "explicit": version is not None,
        "category": category,
        "stored_at": now,
        "last_accessed": now,
        "now": now,
        "ttl_seconds": ttl,
        "expires_at": None if ttl is None else now + ttl,
    }


def prepare_rows(items: Sequence[WriteRequest], now: float, category: str) -> list[dict[str, Any]]:
    """The rows of a batch, one per key (its last item), in key order."""
    rows: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, WriteRequest):
            raise InvalidRequestError(
                f"store_many item {index} is a {type(item).__name__}; pass WriteRequest "
                "items (key, value, version=None, ttl_seconds=None).",
                details={"index": index},
            )
        rows[item.key] = prepare_row(
            item.key, item.value, item.version, item.ttl_seconds, now, category
        )
    # One lock order for every writer: concurrent batches cannot deadlock.
    return [rows[key] for key in sorted(rows)]


def row_metadata(row: Mapping[str, Any], version: int, category: StateCategory) -> StateMetadata:
    return StateMetadata(
        row["checksum"], row["size"], version, category, row["now"], row["ttl_seconds"]
    )


def verified(key: str, row: Sequence[Any], tier: str, backend: str) -> StoredValue:
    """The value of a fetched row (value, checksum, size, version, category, stored_at,
    ttl_seconds), or :class:`IntegrityError` when the value does not match its checksum."""
    value, checksum, size, version, category, stored_at, ttl = row
    actual = hashlib.sha256(value.encode("utf-8")).hexdigest()
    if actual != checksum:
        raise IntegrityError(
            key,
            f"The {tier} copy of {key!r} does not match its checksum (stored "
            f"{checksum[:16]}..., computed {actual[:16]}...); the value is not returned. "
            "Restore it from another tier or a backup.",
            details={"tier": tier, "backend": backend},
        )
    member = _CATEGORIES.get(category)
    if member is None:
        member = StateCategory(category)
    # _make: batch reads verify a row per key, and it skips a Python-level __new__
    return _stored((key, value, _metadata((checksum, size, version, member, stored_at, ttl))))

"""Undoing a store transaction's HOT and COLD writes when its SQL does not commit.

Writes to a HOT or COLD home are applied just before the SQL commit (the tiers have no
shared transaction). When a later write or the commit itself fails, the writes already
applied are put back as they were, so a failed transaction leaves neither its values
nor its rows behind (invariant 4): a replaced value is restored with its version
(compare-and-set on the version just written), a new key is deleted if it is still the
value written. A value another writer changed meanwhile is left alone, and a tier that
fails during the undo is logged: those are the only ways a failed transaction's value
can remain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConcurrencyError, IntegrityError, TierUnavailableError
from .base import StateCategory, StoredValue
from .health import logger

if TYPE_CHECKING:
    from .coordinator import StateRepositoryCoordinator

__all__ = ["AppliedWrite", "previous_value", "undo_applied"]


@dataclass(frozen=True, slots=True)
class AppliedWrite:
    """A write applied to a HOT or COLD home before the commit, and what it replaced."""

    category: StateCategory
    previous: StoredValue | None
    written: StoredValue


def previous_value(repository: Any, key: str, expected_version: int | None) -> StoredValue | None:
    """The value a write is about to replace (None for a new key, or an unreadable one)."""
    if expected_version == 0:
        return None
    try:
        found: StoredValue | None = repository.fetch(key)
    except IntegrityError:
        return None
    return found


def undo_applied(coordinator: StateRepositoryCoordinator, applied: Sequence[AppliedWrite]) -> None:
    """Put every applied write back as it was (last first), then make every process
    forget the values that never committed."""
    if not applied:
        return
    for write in reversed(applied):
        key = write.written.key
        repository = coordinator.repositories.by_category(write.category)
        try:
            if write.previous is None:
                _delete_if_unchanged(repository, write.written)
            else:
                meta = write.previous.metadata
                repository.store(
                    key,
                    write.previous.value,
                    version=meta.version,
                    ttl_seconds=meta.ttl_seconds,
                    expected_version=write.written.metadata.version,
                )
        except ConcurrencyError:
            logger.warning(
                "Not undoing the %s write of %r: another writer changed it since.",
                write.category.value,
                key,
            )
        except TierUnavailableError as exc:
            logger.error(
                "Could not undo the %s write of %r after the transaction failed: %s",
                write.category.value,
                key,
                exc,
            )
    keys = [write.written.key for write in applied]
    coordinator.cache.invalidate_many(keys)
    try:
        coordinator.announce(keys)
    except TierUnavailableError as exc:
        logger.warning("Could not announce %d undone writes: %s", len(keys), exc)


def _delete_if_unchanged(repository: Any, written: StoredValue) -> None:
    repository.delete_unchanged([written])

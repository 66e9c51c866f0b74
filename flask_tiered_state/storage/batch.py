"""Bulk operations: one round trip per tier per chunk, never a loop of single calls.

Each call hands the whole batch to the tier's ``fetch_many`` / ``store_many`` /
``delete_many``, which chunk it (Redis pipelines and MGET, multi-row SQL statements
in one transaction, concurrent S3 requests, ``delete_objects`` per 1,000 keys).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..errors import TierUnavailableError
from .base import StateCategory, StateMetadata, StoredValue, WriteRequest
from .coordinator import StateRepositoryCoordinator
from .keys import validate_keys
from .tiering import StateTierManager

__all__ = ["StateBatchOperations"]

HOT = StateCategory.HOT


class StateBatchOperations:
    """``batch_get``, ``batch_set``, ``batch_delete``, ``batch_promote`` over the tiers.

    :param coordinator: the coordinator of the tiers and the cache.
    :param tier_manager: used for promotions and demotions.
    """

    def __init__(
        self, coordinator: StateRepositoryCoordinator, tier_manager: StateTierManager
    ) -> None:
        self.coordinator = coordinator
        self.tier_manager = tier_manager

    def batch_get(self, keys: Sequence[str]) -> dict[str, StoredValue]:
        """The values present among ``keys``, in the order of ``keys`` (absent keys left out).

        Cache hits cost nothing below; the rest go down the waterfall with one
        ``fetch_many`` per tier. Values the policy calls hot get HOT copies in one call.
        A batch larger than the cache's ``scan_threshold`` is a scan: it uses cache hits
        but neither fills the cache nor records accesses.
        """
        keys = list(dict.fromkeys(validate_keys(keys)))
        coordinator, cache = self.coordinator, self.coordinator.cache
        scan = len(keys) > cache.scan_threshold
        found = cache.get_entries(keys, scan=scan)
        missing = [k for k in keys if k not in found]
        if not missing:
            return found
        token = cache.fill_token()
        located = coordinator.locate_many(missing)
        policy = coordinator.policy
        if not scan:
            cache.fill_many([stored for _, stored in located.values()], token)
        if not scan and policy.auto_promote:
            since = cache.clock() - policy.promotion_window_seconds
            below = [k for k, (category, _) in located.items() if category is not HOT]
            hot = cache.frequent(below, policy.promote_after_accesses, since)
            if hot and coordinator.hot_usable():
                coordinator.place_hot_copies([located[k][1] for k in hot], token)
        for key, (_, stored) in located.items():
            found[key] = stored
        return {k: found[k] for k in keys if k in found}

    def batch_set(
        self,
        items: Mapping[str, str],
        *,
        category: StateCategory = StateCategory.WARM,
        ttl_seconds: int | None = None,
    ) -> dict[str, StateMetadata]:
        """Write JSON texts to their home tier ``category`` in one ``store_many`` call
        (all or nothing where the tier has transactions), refresh the cache and drop
        the stale copies in the other tiers with one ``delete_many`` per tier (for a
        HOT home, only of the keys the tier directory marks)."""
        keys = validate_keys(list(items))
        if not keys:
            return {}
        coordinator = self.coordinator
        coordinator.retry_pending()
        if category is HOT and not coordinator.hot_usable():
            raise TierUnavailableError(
                "hot",
                f"The HOT tier is unavailable, so {len(keys)} values cannot be written to it.",
            )
        repository = coordinator.repositories.by_category(category)
        requests = [WriteRequest(k, v, ttl_seconds=ttl_seconds) for k, v in items.items()]
        with coordinator.locked(keys):
            if category is not HOT:
                coordinator.mark_lower_copies(keys)
            try:
                with coordinator.consulting(category) as answer:
                    written = repository.store_many(requests)
            except TierUnavailableError as exc:
                coordinator.tier_failed(category, exc)
                raise
            coordinator.after_home_write(
                [StoredValue(r.key, r.value, written[r.key]) for r in requests],
                category,
                versioned=False,
                marked=None if answer is None else answer.marked_keys(),
            )
        return written

    def batch_delete(self, keys: Sequence[str]) -> int:
        """Delete ``keys`` from every tier; how many existed in any tier."""
        keys = validate_keys(keys)
        return self.coordinator.delete_many(keys) if keys else 0

    def batch_promote(self, keys: Sequence[str], *, ttl_seconds: int | None = None) -> int:
        """Place verified HOT copies of ``keys``; how many got one."""
        return self.tier_manager.promote_many(keys, ttl_seconds=ttl_seconds)

    def batch_demote(self, keys: Sequence[str]) -> int:
        """Move ``keys`` to COLD (copy, verify, delete above); how many moved."""
        return self.tier_manager.demote_many(keys)

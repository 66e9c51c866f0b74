"""What a :class:`~.store.TieredStore` reports about itself: its repositories, per-tier
figures and health, the cache's counters, keys moved between tiers and the state of
cross-process invalidation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import StateCategory, StateRepositories
from .cache import StateCache
from .coordinator import StateRepositoryCoordinator

if TYPE_CHECKING:
    from ..observability.metrics import MetricsCollector
    from .invalidation import CacheInvalidation

__all__ = ["StoreIntrospection"]


class StoreIntrospection:
    """The reporting part of :class:`~.store.TieredStore`."""

    cache: StateCache
    coordinator: StateRepositoryCoordinator
    metrics_collector: MetricsCollector | None
    invalidation: CacheInvalidation | None

    def get_repositories(self) -> StateRepositories:
        """The repositories behind the tiers, for direct access (backups, recovery)."""
        return self.coordinator.get_repositories()

    def _tier_rates(self, category: StateCategory) -> dict[str, Any]:
        hits = self.coordinator.tier_hits[category]
        misses = self.coordinator.tier_misses[category]
        return {"hits": hits, "misses": misses, "hit_rate": hits / (hits + misses or 1)}

    def stats(self) -> dict[str, Any]:
        """Per tier: backend, key count, bytes where cheap, hit rate and health; the cache."""
        tiers: dict[str, Any] = {}
        health = self.coordinator.guard.report()
        for repository in self.get_repositories():
            category = repository.category
            entry: dict[str, Any] = {"backend": repository.backend, "available": True}
            try:
                entry.update(repository.stats().to_dict())
            except Exception as exc:  # a dead tier must not hide the others' figures
                entry.update(available=False, error=str(exc))
            entry.update(self._tier_rates(category), health=health[category.value])
            tiers[category.value] = entry
        return {
            "cache": self.cache.stats().to_dict(),
            "tiers": tiers,
            "movements": self.movements(),
            "invalidation": self.invalidation_stats(),
        }

    def movements(self) -> dict[str, int]:
        """Keys moved by this store since it was built: ``promotions`` (asked for),
        ``auto_promotions`` (HOT copies placed on frequent reads) and ``demotions``."""
        coordinator = self.coordinator
        with coordinator._counts_lock:
            return dict(coordinator.movements)

    def invalidation_stats(self) -> dict[str, Any]:
        """The state of cross-process invalidation (``enabled`` False without it)."""
        invalidation = self.invalidation
        if invalidation is None:
            return {"enabled": False}
        return {"enabled": True, **invalidation.stats()}

    def metrics(self) -> dict[str, Any]:
        """Cache counters, per-tier hit rates, movements, invalidation and the
        collector's figures (if any)."""
        collector = self.metrics_collector
        return {
            "cache": self.cache.stats().to_dict(),
            "tiers": {c.value: self._tier_rates(c) for c in StateCategory},
            "movements": self.movements(),
            "invalidation": self.invalidation_stats(),
            "repositories": {} if collector is None else collector.snapshot(),
        }

"""Tiers, health and metrics of a manager: moves between tiers, the store's figures."""

from __future__ import annotations

from typing import Any

from .. import signals
from ..errors import StateNotFoundError
from ..storage.base import StateRepositories
from ..storage.deadlines import within_budget
from .manager_base import ManagerBase
from .model import state_key, validate_state_id
from .operations import health_status

__all__ = ["TiersMixin"]


class TiersMixin(ManagerBase):
    """``promote_to_hot``, ``demote_to_cold``, ``get_repositories``, ``get_storage_stats``,
    ``get_health_status`` and ``get_performance_metrics``."""

    @within_budget
    def promote_to_hot(self, state_id: str, *, ttl_seconds: int | None = None) -> bool:
        """Copy a state to the HOT tier; False when nothing was moved.

        :raises StateNotFoundError: no record exists under ``state_id``.
        """
        return self._move(state_id, hot=True, ttl_seconds=ttl_seconds)

    @within_budget
    def demote_to_cold(self, state_id: str) -> bool:
        """Move a state to the COLD tier (archive); False when nothing was moved. An
        archived state is read and updated as usual but is not searchable.

        :raises StateNotFoundError: no record exists under ``state_id``.
        """
        return self._move(state_id, hot=False, ttl_seconds=None)

    def _move(self, state_id: str, *, hot: bool, ttl_seconds: int | None) -> bool:
        key = state_key(validate_state_id(state_id))
        if hot:
            moved = self.store.promote_to_hot(key, ttl_seconds=ttl_seconds)
        else:
            moved = self.store.demote_to_cold(key)
        if not moved:
            if self.store.get_entry(key) is None:
                raise StateNotFoundError(state_id)
            return False
        signal = signals.state_promoted if hot else signals.state_demoted
        self.dispatcher.send(signal, None, state_id=state_id, key=key)
        return True

    def get_repositories(self) -> StateRepositories:
        """The store's repositories, for direct tier access."""
        return self.store.get_repositories()

    def get_storage_stats(self) -> dict[str, Any]:
        """The store's statistics (tiers, cache) and the history row count."""
        return {**self.store.stats(), "history_rows": self.history.count()}

    def get_health_status(self) -> dict[str, Any]:
        """``{"status", "state_count", "cache_hit_rate", "tiers": {...}}``; status is
        ``healthy``, ``degraded`` (HOT or COLD down) or ``unhealthy`` (WARM down)."""
        return health_status(self.store, self._search.count)

    def get_performance_metrics(self) -> dict[str, Any]:
        """Per-operation counts and durations, plus the store's metrics."""
        return {"operations": self._ops.snapshot(), "store": self.store.metrics()}

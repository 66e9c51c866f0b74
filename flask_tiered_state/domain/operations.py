"""Operation timings and the health report of a manager."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..storage.base import StateCategory

if TYPE_CHECKING:
    from ..storage.store import TieredStore

__all__ = ["OperationStats", "health_status"]

logger = logging.getLogger("flask_tiered_state.domain")


class OperationStats:
    """Count, total and peak duration per operation name; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: dict[str, list[float]] = {}

    def record(self, operation: str, duration_ms: float) -> None:
        with self._lock:
            stats = self._ops.get(operation)
            if stats is None:
                self._ops[operation] = [1, duration_ms, duration_ms]
            else:
                stats[0] += 1
                stats[1] += duration_ms
                stats[2] = max(stats[2], duration_ms)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """``{operation: {"count", "total_ms", "avg_ms", "max_ms"}}``."""
        with self._lock:
            return {
                name: {
                    "count": int(count),
                    "total_ms": total,
                    "avg_ms": total / count,
                    "max_ms": peak,
                }
                for name, (count, total, peak) in self._ops.items()
            }


def health_status(
    store: TieredStore, count_states: Callable[[], int], *, include_errors: bool = False
) -> dict[str, Any]:
    """``{"status", "state_count", "cache_hit_rate", "cache_lookups", "tiers": {...}}``.

    Each tier is checked now (:meth:`~flask_tiered_state.storage.store.TieredStore.check_tiers`),
    and its entry is the store's one answer: ``backend``, ``available`` (it answers and
    the store uses it), ``failures`` (failed checks and calls since it went down; 0 when
    available), ``degraded_for_seconds``, ``next_check_in_seconds``, ``pending_drops``
    and, with ``include_errors``, ``last_error`` (backend text: kept out of HTTP
    answers).

    ``status`` is ``healthy`` when every tier is available, ``degraded`` when HOT or
    COLD is not (reads and writes of WARM-home states go on) and ``unhealthy`` when
    WARM is not; ``state_count`` (states in WARM, not deleted) is None then.
    ``cache_hit_rate`` is 0.0 while ``cache_lookups`` is 0 (nothing read yet).
    """
    tiers = store.check_tiers()
    if not include_errors:
        for entry in tiers.values():
            entry.pop("last_error", None)
    warm_up = tiers[StateCategory.WARM.value]["available"]
    status = "healthy" if all(t["available"] for t in tiers.values()) else "degraded"
    state_count: int | None = None
    if warm_up:
        try:
            state_count = count_states()
        except Exception as exc:
            logger.warning("Counting states failed: %s", exc)
            warm_up = False
    if not warm_up:
        status = "unhealthy"
    cache = store.cache.stats()
    return {
        "status": status,
        "state_count": state_count,
        "cache_hit_rate": cache.hit_rate,
        "cache_lookups": cache.hits + cache.misses,
        "tiers": tiers,
    }

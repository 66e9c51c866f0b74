"""Metrics of the storage layer: a collector protocol and two collectors.

The store records repository calls only when it is given a collector (it then wraps
each repository in :class:`~flask_tiered_state.storage.instrumented.InstrumentedRepository`,
and the unit of work of each store transaction in
:class:`~flask_tiered_state.storage.instrumented.InstrumentedUnitOfWork`, so the WARM
writes of domain changes are counted too); without one there is no wrapper and no
overhead.

Prometheus names follow the seeds: ``state_repository_{tier}_operations_{op}_total``,
``state_repository_{tier}_errors_total`` and the ``state_repository_{tier}_batch_size``
histogram, plus ``state_repository_{tier}_operation_duration_seconds{operation=...}``.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigurationError

__all__ = [
    "OPERATIONS",
    "TIERS",
    "MetricsCollector",
    "PrometheusMetricsCollector",
    "SimpleMetricsCollector",
]

TIERS = ("hot", "warm", "cold")
#: ``publish``: an invalidation announcement sent alone (with no HOT copy to drop).
OPERATIONS = (
    "fetch", "fetch_many", "store", "store_many", "delete", "delete_many", "keys", "publish",
)  # fmt: skip
_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 5000, 10_000, 50_000, 100_000)
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip


@runtime_checkable
class MetricsCollector(Protocol):
    """Receives one observation per repository call."""

    def observe(
        self,
        tier: str,
        operation: str,
        seconds: float,
        *,
        error: bool = False,
        batch_size: int | None = None,
    ) -> None:
        """Record a call of ``operation`` on ``tier`` that took ``seconds``."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The figures so far, as a JSON-serialisable dict."""
        ...


class SimpleMetricsCollector:
    """In-memory counts and timings per tier and operation; no dependency."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (tier, operation) -> [count, errors, total_seconds, max_seconds]
        self._ops: dict[tuple[str, str], list[float]] = {}
        # tier -> [batches, items, largest]
        self._batches: dict[str, list[int]] = {}

    def observe(
        self,
        tier: str,
        operation: str,
        seconds: float,
        *,
        error: bool = False,
        batch_size: int | None = None,
    ) -> None:
        with self._lock:
            row = self._ops.get((tier, operation))
            if row is None:
                row = self._ops[(tier, operation)] = [0, 0, 0.0, 0.0]
            row[0] += 1
            row[1] += error
            row[2] += seconds
            row[3] = max(row[3], seconds)
            if batch_size is not None:
                batch = self._batches.setdefault(tier, [0, 0, 0])
                batch[0] += 1
                batch[1] += batch_size
                batch[2] = max(batch[2], batch_size)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {}
            for (tier, operation), (count, errors, total, largest) in sorted(self._ops.items()):
                entry = out.setdefault(tier, {"operations": {}, "errors": 0})
                entry["operations"][operation] = {
                    "count": int(count),
                    "errors": int(errors),
                    "total_seconds": total,
                    "mean_seconds": total / count if count else 0.0,
                    "max_seconds": largest,
                }
                entry["errors"] += int(errors)
            for tier, (batches, items, largest_batch) in self._batches.items():
                out.setdefault(tier, {"operations": {}, "errors": 0})["batch_size"] = {
                    "count": batches,
                    "sum": items,
                    "max": largest_batch,
                }
            return out


class PrometheusMetricsCollector:
    """Prometheus counters and histograms with the seed names.

    :param registry: where to register; by default a private ``CollectorRegistry``,
        so several stores (and test runs) never clash. Pass
        ``prometheus_client.REGISTRY`` to expose through the default registry.
    :raises ConfigurationError: when prometheus-client is not installed.
    """

    def __init__(self, registry: Any = None) -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise ConfigurationError(
                "PrometheusMetricsCollector needs prometheus-client; install it with "
                'pip install "flask-tiered-state[metrics]".'
            ) from exc
        self._prom = prom
        self.registry = prom.CollectorRegistry() if registry is None else registry
        self._operations: dict[tuple[str, str], Any] = {}
        self._errors: dict[str, Any] = {}
        self._batch: dict[str, Any] = {}
        self._latency: dict[str, Any] = {}
        for tier in TIERS:
            self._add_tier(tier)

    def _add_tier(self, tier: str) -> None:
        prom, registry, base = self._prom, self.registry, f"state_repository_{tier}"
        for operation in OPERATIONS:
            self._operations[(tier, operation)] = prom.Counter(
                f"{base}_operations_{operation}_total",
                f"{operation} calls on the {tier} tier.",
                registry=registry,
            )
        self._errors[tier] = prom.Counter(
            f"{base}_errors_total", f"Failed calls on the {tier} tier.", registry=registry
        )
        self._batch[tier] = prom.Histogram(
            f"{base}_batch_size",
            f"Keys per batch call on the {tier} tier.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self._latency[tier] = prom.Histogram(
            f"{base}_operation_duration_seconds",
            f"Duration of calls on the {tier} tier.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )

    def observe(
        self,
        tier: str,
        operation: str,
        seconds: float,
        *,
        error: bool = False,
        batch_size: int | None = None,
    ) -> None:
        counter = self._operations.get((tier, operation))
        if counter is None:
            if tier not in self._errors:
                self._add_tier(tier)
            counter = self._operations.get((tier, operation))
        if counter is not None:
            counter.inc()
        self._latency[tier].labels(operation=operation).observe(seconds)
        if error:
            self._errors[tier].inc()
        if batch_size is not None:
            self._batch[tier].observe(batch_size)

    def snapshot(self) -> dict[str, Any]:
        """Every sample of the registry, keyed by name and labels."""
        out: dict[str, Any] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (for a ``/metrics`` endpoint)."""
        return bytes(self._prom.generate_latest(self.registry))

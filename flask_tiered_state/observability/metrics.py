"""Metrics of the storage layer: a collector protocol and two collectors.

The store records repository calls only when it is given a collector (it then wraps
each repository in :class:`~flask_tiered_state.storage.instrumented.InstrumentedRepository`,
and the unit of work of each store transaction in
:class:`~flask_tiered_state.storage.instrumented.InstrumentedUnitOfWork`, so the WARM
writes of domain changes are counted too); without one there is no wrapper and no
overhead.

Prometheus names are the design documents' ``state.repository.{backend}.operations.*``
with dots as underscores: ``state_repository_{backend}_operations_{op}_total``,
``state_repository_{backend}_operations_errors_total`` and the
``state_repository_{backend}_operations_batch_size`` histogram, each labelled with
``tier`` and ``backend``; plus the latency histograms
``state_repository_{tier}_operation_duration_seconds{operation=...}``. ``{backend}`` is
``redis``, ``postgres`` or ``s3`` for those backends and the backend's own name for the
others (``memory``, ``sqlite``, ``filesystem``, a third-party backend's): see
:func:`metric_name`.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigurationError

__all__ = [
    "OPERATIONS",
    "TIERS",
    "MetricsCollector",
    "PrometheusMetricsCollector",
    "SimpleMetricsCollector",
    "metric_name",
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
#: The design documents' names of their backends; the other backends go by their own.
_DOCUMENT_NAMES = {"postgresql": "postgres"}
_NOT_IN_NAMES = re.compile(r"[^a-zA-Z0-9_]")
_LABELS = ("tier", "backend")
#: The backend of an observation that names none, on a tier no repository was added for.
_UNKNOWN = "unknown"


def metric_name(backend: str, metric: str) -> str:
    """The Prometheus name of a repository metric of ``backend``.

    ``metric_name("postgresql", "fetch_total")`` is
    ``"state_repository_postgres_operations_fetch_total"``. The backend's part is
    ``redis``, ``postgres`` or ``s3`` for the backends of the design documents, and the
    backend's own name for the others, with any character outside ``[a-zA-Z0-9_]`` as
    ``_`` (``state_repository_sqlite_operations_fetch_total``).

    :param backend: a repository's ``backend`` (``"redis"``, ``"postgresql"``, ...).
    :param metric: ``"{operation}_total"``, ``"errors_total"`` or ``"batch_size"``.
    """
    part = _DOCUMENT_NAMES.get(backend) or _NOT_IN_NAMES.sub("_", backend) or _UNKNOWN
    return f"state_repository_{part}_operations_{metric}"


@runtime_checkable
class MetricsCollector(Protocol):
    """Receives one observation per repository call.

    A collector may also have ``add_repository(tier, backend)``: the store calls it for
    each repository it wraps, before the first call, so that the repository's figures
    exist (at zero) from the start.
    """

    def observe(
        self,
        tier: str,
        operation: str,
        seconds: float,
        *,
        error: bool = False,
        batch_size: int | None = None,
        backend: str | None = None,
    ) -> None:
        """Record a call of ``operation`` on ``tier`` that took ``seconds``.

        :param error: the call failed in the tier (never for the caller's mistakes, such
            as an invalid key, nor for a version conflict).
        :param batch_size: the number of keys (or items) of a batch call.
        :param backend: the repository's ``backend`` (``"redis"``, ``"sqlite"``, ...);
            None: the backend last added for ``tier``.
        """
        ...

    def snapshot(self) -> dict[str, Any]:
        """The figures so far, as a JSON-serialisable dict."""
        ...


class _Figures:
    """What a :class:`SimpleMetricsCollector` knows of one backend on one tier."""

    __slots__ = ("batches", "operations")

    def __init__(self) -> None:
        # operation -> [count, errors, total_seconds, max_seconds]
        self.operations: dict[str, list[float]] = {}
        # [batch calls, keys in them, largest]
        self.batches = [0, 0, 0]


class SimpleMetricsCollector:
    """In-memory counts and timings per tier, backend and operation; no dependency.

    :meth:`snapshot` is keyed by tier. Each tier has the figures of all its backends
    together (``operations``: per operation the count, errors and total, mean and
    largest duration; ``errors``; ``batch_size`` once there was a batch call) and, under
    ``backends``, per backend the counts that :class:`PrometheusMetricsCollector`
    exposes: ``operations`` (the calls of every operation of :data:`OPERATIONS`, zeros
    included), ``errors`` and ``batch_size`` (``count``, ``sum`` and ``max``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._figures: dict[tuple[str, str], _Figures] = {}
        # tier -> the backend last added for it (for observations that name none)
        self._added: dict[str, str] = {}
        # (outcome, event name) -> count; the outbox's lag in seconds
        self._events: dict[tuple[str, str], int] = {}
        self._lag = 0.0
        # (layer, tier, operation) -> slow operations (see observability.slow)
        self._slow: dict[tuple[str, str, str], int] = {}

    def observe_slow(self, layer: str, tier: str, operation: str) -> None:
        """Count an operation slower than the threshold (see :mod:`.slow`)."""
        with self._lock:
            key = (layer, tier, operation)
            self._slow[key] = self._slow.get(key, 0) + 1

    def slow_operations(self) -> dict[str, dict[str, dict[str, int]]]:
        """``{layer: {tier: {operation: count}}}`` of the slow operations so far."""
        with self._lock:
            out: dict[str, dict[str, dict[str, int]]] = {}
            for (layer, tier, operation), count in sorted(self._slow.items()):
                out.setdefault(layer, {}).setdefault(tier, {})[operation] = count
            return out

    def observe_event(self, outcome: str, event: str) -> None:
        """Count a delivery of the outbox: ``delivered``, ``failed`` or ``dead``."""
        with self._lock:
            self._events[(outcome, event)] = self._events.get((outcome, event), 0) + 1

    def set_outbox_lag(self, seconds: float) -> None:
        """The age of the oldest pending delivery."""
        self._lag = seconds

    def events(self) -> dict[str, Any]:
        """``{"delivered": {event: n}, "failed": ..., "dead": ..., "lag_seconds": s}``."""
        with self._lock:
            out: dict[str, Any] = {"delivered": {}, "failed": {}, "dead": {}}
            for (outcome, event), count in sorted(self._events.items()):
                out.setdefault(outcome, {})[event] = count
            out["lag_seconds"] = self._lag
            return out

    def add_repository(self, tier: str, backend: str) -> None:
        """Start the figures of ``backend`` on ``tier`` at zero."""
        with self._lock:
            self._added[tier] = backend
            self._figures.setdefault((tier, backend), _Figures())

    def observe(
        self,
        tier: str,
        operation: str,
        seconds: float,
        *,
        error: bool = False,
        batch_size: int | None = None,
        backend: str | None = None,
    ) -> None:
        with self._lock:
            key = (tier, backend or self._added.get(tier, _UNKNOWN))
            figures = self._figures.get(key)
            if figures is None:
                figures = self._figures[key] = _Figures()
            row = figures.operations.get(operation)
            if row is None:
                row = figures.operations[operation] = [0, 0, 0.0, 0.0]
            row[0] += 1
            row[1] += error
            row[2] += seconds
            row[3] = max(row[3], seconds)
            if batch_size is not None:
                batch = figures.batches
                batch[0] += 1
                batch[1] += batch_size
                batch[2] = max(batch[2], batch_size)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {}
            for (tier, backend), figures in sorted(self._figures.items()):
                entry = out.setdefault(tier, {"operations": {}, "errors": 0, "backends": {}})
                counts = dict.fromkeys(OPERATIONS, 0)
                for operation, (count, errors, total, largest) in figures.operations.items():
                    counts[operation] = int(count)
                    row = entry["operations"].setdefault(
                        operation,
                        {"count": 0, "errors": 0, "total_seconds": 0.0, "max_seconds": 0.0},
                    )
                    row["count"] += int(count)
                    row["errors"] += int(errors)
                    row["total_seconds"] += total
                    row["max_seconds"] = max(row["max_seconds"], largest)
                failed = sum(int(row[1]) for row in figures.operations.values())
                entry["errors"] += failed
                batches, keys, largest_batch = figures.batches
                entry["backends"][backend] = {
                    "operations": counts,
                    "errors": failed,
                    "batch_size": {"count": batches, "sum": keys, "max": largest_batch},
                }
                if batches:
                    batch = entry.setdefault("batch_size", {"count": 0, "sum": 0, "max": 0})
                    batch["count"] += batches
                    batch["sum"] += keys
                    batch["max"] = max(batch["max"], largest_batch)
            for entry in out.values():
                entry["operations"] = dict(sorted(entry["operations"].items()))
                for row in entry["operations"].values():
                    row["mean_seconds"] = (
                        row["total_seconds"] / row["count"] if row["count"] else 0.0
                    )
            return out


# The families of each registry given to a collector, so that collectors sharing one
# (say two apps exposing through prometheus_client.REGISTRY) share its series instead
# of failing with "Duplicated timeseries". The families hold no reference to the registry.
_SHARED: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_CREATION_LOCK = threading.Lock()


class _Series:
    """The labelled children of one repository (a tier and a backend)."""

    __slots__ = ("batch_size", "errors", "operations")

    def __init__(self, operations: dict[str, Any], errors: Any, batch_size: Any) -> None:
        self.operations = operations
        self.errors = errors
        self.batch_size = batch_size


class PrometheusMetricsCollector:
    """Prometheus counters and histograms with the design documents' names.

    Per backend (see :func:`metric_name`), labelled with ``tier`` and ``backend``:
    ``state_repository_{backend}_operations_{op}_total`` for each operation of
    :data:`OPERATIONS`, ``state_repository_{backend}_operations_errors_total`` and the
    ``state_repository_{backend}_operations_batch_size`` histogram; per tier, the
    ``state_repository_{tier}_operation_duration_seconds`` histogram labelled with
    ``operation``. A repository's series exist, at zero, once the store has added it.

    :param registry: where to register; by default a private ``CollectorRegistry``,
        so several stores (and test runs) never clash. Pass
        ``prometheus_client.REGISTRY`` to expose through the default registry;
        collectors given the same registry share its series.
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
        self._families = {} if registry is None else _shared_families(registry)
        self._series: dict[tuple[str, str], _Series] = {}
        self._latency: dict[tuple[str, str], Any] = {}  # (tier, operation) -> child
        # tier -> the backend last added for it (for observations that name none)
        self._added: dict[str, str] = {}
        for tier in TIERS:
            self._latency_family(tier)
        self._event_outcomes = self._family(
            "state_events_total",
            lambda: prom.Counter(
                "state_events_total",
                "Deliveries of the outbox to asynchronous callbacks, by outcome "
                "(delivered, failed: retried later, dead) and event name.",
                ["outcome", "event"],
                registry=self.registry,
            ),
        )
        self._outbox_lag = self._family(
            "state_outbox_lag_seconds",
            lambda: prom.Gauge(
                "state_outbox_lag_seconds",
                "Age of the oldest pending delivery of the outbox (0: none pending).",
                registry=self.registry,
            ),
        )
        self._slow = self._family(
            "state_slow_operations_total",
            lambda: prom.Counter(
                "state_slow_operations_total",
                "Operations slower than TIERED_STATE_SLOW_OPERATION_MS, by layer (manager: "
                "a committed change; tier: a repository call), tier and operation.",
                ["layer", "tier", "operation"],
                registry=self.registry,
            ),
        )

    def observe_slow(self, layer: str, tier: str, operation: str) -> None:
        """Count an operation slower than the threshold (see :mod:`.slow`)."""
        self._slow.labels(layer=layer, tier=tier, operation=operation).inc()

    def observe_event(self, outcome: str, event: str) -> None:
        """Count a delivery of the outbox: ``delivered``, ``failed`` or ``dead``."""
        self._event_outcomes.labels(outcome=outcome, event=event).inc()

    def set_outbox_lag(self, seconds: float) -> None:
        """The age of the oldest pending delivery."""
        self._outbox_lag.set(seconds)

    def _family(self, name: str, make: Callable[[], Any]) -> Any:
        family = self._families.get(name)
        if family is None:
            with _CREATION_LOCK:
                family = self._families.get(name)
                if family is None:
                    family = self._families[name] = make()
        return family

    def _latency_family(self, tier: str) -> Any:
        name = f"state_repository_{tier}_operation_duration_seconds"
        return self._family(
            name,
            lambda: self._prom.Histogram(
                name,
                f"Duration of calls on the {tier} tier.",
                ["operation"],
                buckets=_LATENCY_BUCKETS,
                registry=self.registry,
            ),
        )

    def _series_of(self, tier: str, backend: str) -> _Series:
        series = self._series.get((tier, backend))
        if series is not None:
            return series
        prom, registry = self._prom, self.registry

        def child(metric: str, documentation: str, kind: Any, **options: Any) -> Any:
            name = metric_name(backend, metric)
            family = self._family(
                name, lambda: kind(name, documentation, _LABELS, registry=registry, **options)
            )
            return family.labels(tier=tier, backend=backend)

        operations = {
            operation: child(
                f"{operation}_total", f"{operation} calls of the repository.", prom.Counter
            )
            for operation in OPERATIONS
        }
        errors = child(
            "errors_total", "Calls of the repository that failed in the tier.", prom.Counter
        )
        batch_size = child(
            "batch_size",
            "Keys per batch call of the repository.",
            prom.Histogram,
            buckets=_BATCH_BUCKETS,
        )
        with _CREATION_LOCK:
            return self._series.setdefault((tier, backend), _Series(operations, errors, batch_size))

    def add_repository(self, tier: str, backend: str) -> None:
        """Create the series of ``backend`` on ``tier`` (at zero); observations that name
        no backend for ``tier`` go to it."""
        self._series_of(tier, backend)
        self._added[tier] = backend

    def observe(
        self,
        tier: str,
        operation: str,
        seconds: float,
        *,
        error: bool = False,
        batch_size: int | None = None,
        backend: str | None = None,
    ) -> None:
        series = None if backend is None else self._series.get((tier, backend))
        if series is None:
            series = self._series_of(tier, backend or self._added.get(tier, _UNKNOWN))
        counter = series.operations.get(operation)
        if counter is not None:
            counter.inc()
        if error:
            series.errors.inc()
        if batch_size is not None:
            series.batch_size.observe(batch_size)
        latency = self._latency.get((tier, operation))
        if latency is None:
            latency = self._latency_family(tier).labels(operation=operation)
            self._latency[(tier, operation)] = latency
        latency.observe(seconds)

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


def _shared_families(registry: Any) -> dict[str, Any]:
    """The families of the collectors given ``registry``."""
    with _CREATION_LOCK:
        try:
            families = _SHARED.get(registry)
        except TypeError:  # a registry that cannot be weakly referenced: not shared
            return {}
        if families is None:
            families = _SHARED[registry] = {}
        return families

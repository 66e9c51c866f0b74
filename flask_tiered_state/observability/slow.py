"""Slow operations: a WARNING and a count for every call slower than a threshold.

One :class:`SlowOperationLog` per store (``TIERED_STATE_SLOW_OPERATION_MS``, 100 ms by
default; None turns it off) watches two layers:

- ``tier``: every call of a tier's repository -- a read, a write, a batch, a key scan --
  timed by :class:`~flask_tiered_state.storage.instrumented.InstrumentedRepository`
  (and the WARM writes of a store transaction, by its unit of work);
- ``manager``: every change a :class:`~flask_tiered_state.StateManager` commits (a
  transition, each state of a batch, a restore), from its start to its commit, as
  :meth:`~flask_tiered_state.StateManager.log_state_operation` times it.

Each slow call is logged at WARNING on the ``flask_tiered_state.slow`` logger, with
``layer``, ``operation``, ``state_id`` (the key of a tier call on one key; None for a
batch), ``tier``, ``backend``, ``batch_size``, ``duration_ms``, ``threshold_ms`` and
``correlation_id`` as attributes of the ``LogRecord`` (structured formatters pick them
up), and counted in the metrics: ``state_slow_operations_total{layer, tier, operation}``
with Prometheus, ``slow_operations()`` of the in-memory collector.

.. versionadded:: 0.15
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

from ..domain.context import get_correlation_id
from ..errors import ConfigurationError
from .logging import get_logger

__all__ = ["DEFAULT_SLOW_OPERATION_MS", "SlowOperationLog", "slow_operation_setting"]

#: The default threshold, in milliseconds.
DEFAULT_SLOW_OPERATION_MS = 100.0

#: Where slow operations are logged.
logger = get_logger("flask_tiered_state.slow")


def check_threshold(name: str, value: object) -> float | None:
    """``value`` as a threshold in milliseconds (None: off), else ConfigurationError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(
            f"{name} must be a number of milliseconds greater than 0 (or None: off), not {value!r}."
        )
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ConfigurationError(
            f"{name} must be a number of milliseconds greater than 0 (or None: off), not {value!r}."
        )
    return number


def slow_operation_setting(key: str, value: object) -> float | None:
    """``TIERED_STATE_SLOW_OPERATION_MS``: milliseconds (a number, or its text from the
    environment), or None (also ``"none"`` / ``"off"``): off."""
    given = value
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("none", "null", "off"):
            return None
        with contextlib.suppress(ValueError):
            value = float(text)
    try:
        return check_threshold(key, value)
    except ConfigurationError:
        expected = "a number of milliseconds > 0, or None (off)"
        raise ConfigurationError(
            f"{key} is {given!r}; expected {expected}.",
            details={"key": key, "value": repr(given), "expected": expected},
        ) from None


class SlowOperationLog:
    """Logs and counts the operations slower than ``threshold_ms`` (see the module).

    :param threshold_ms: the threshold in milliseconds.
    :param collector: the store's metrics collector; its ``observe_slow(layer, tier,
        operation)``, where it has one, counts each slow operation.
    """

    def __init__(self, threshold_ms: float, *, collector: Any = None) -> None:
        threshold = check_threshold("threshold_ms", threshold_ms)
        if threshold is None:
            raise ConfigurationError("threshold_ms must be a number of milliseconds, not None.")
        self.threshold_ms = threshold
        #: The threshold in seconds, as the timers compare it.
        self.threshold_seconds = threshold / 1000.0
        self._count = getattr(collector, "observe_slow", None)

    def __repr__(self) -> str:
        return f"SlowOperationLog(threshold_ms={self.threshold_ms:g})"

    def report(
        self,
        layer: str,
        operation: str,
        seconds: float,
        *,
        tier: str | None = None,
        backend: str | None = None,
        state_id: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        """Log and count one operation that took ``seconds`` (callers compare with
        :attr:`threshold_seconds` first: the fast path costs one comparison)."""
        duration_ms = seconds * 1000.0
        logger.warning(
            "Slow %s operation: %s%s%s took %.1f ms (threshold %g ms)",
            layer,
            operation,
            "" if state_id is None else f" of {state_id!r}",
            "" if tier is None else f" on the {tier} tier",
            duration_ms,
            self.threshold_ms,
            extra={
                "layer": layer,
                "operation": operation,
                "state_id": state_id,
                "tier": tier,
                "backend": backend,
                "batch_size": batch_size,
                "duration_ms": duration_ms,
                "threshold_ms": self.threshold_ms,
                "correlation_id": get_correlation_id(),
            },
        )
        if self._count is not None:
            self._count(layer, tier or "none", operation)

"""Metrics and logging helpers."""

from __future__ import annotations

from .metrics import MetricsCollector, PrometheusMetricsCollector, SimpleMetricsCollector

__all__ = ["MetricsCollector", "PrometheusMetricsCollector", "SimpleMetricsCollector"]

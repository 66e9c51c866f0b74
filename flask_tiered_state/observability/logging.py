"""Correlation ids in log records.

:class:`CorrelationIdFilter` sets ``record.correlation_id`` (``"-"`` when there is
none), so a format such as ``"%(asctime)s [%(correlation_id)s] %(message)s"``
works for every record that passes it. ``init_app`` installs it on the app's
logger and its handlers and on the library's ``flask_tiered_state`` logger; add
it to your own handlers to see the id on records of other loggers.
"""

from __future__ import annotations

import logging

from ..domain import context as _domain

__all__ = ["CorrelationIdFilter", "install_correlation_filter"]


class CorrelationIdFilter(logging.Filter):
    """Adds ``correlation_id`` to every record; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = _domain.get_correlation_id() or "-"
        return True


def install_correlation_filter(*targets: logging.Logger | logging.Handler) -> None:
    """Add one :class:`CorrelationIdFilter` to each target that has none yet."""
    for target in targets:
        if not any(isinstance(f, CorrelationIdFilter) for f in target.filters):
            target.addFilter(CorrelationIdFilter())

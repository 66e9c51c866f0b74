"""Correlation ids in log records.

:class:`CorrelationIdFilter` sets ``record.correlation_id`` (``"-"`` when there is
none), so a format such as ``"%(asctime)s [%(correlation_id)s] %(message)s"``
works for every record that passes it.

**The library's records always carry it.** A logger's filters see only the records
logged on that logger, not those propagated from its children, so one filter on
``flask_tiered_state`` would miss ``flask_tiered_state.storage`` and the others.
Every library logger therefore has its own filter: modules get their logger from
:func:`get_logger`, and :func:`install_library_filters` (run by ``init_app`` and
after each manager is built, once the storage modules are imported) adds the
filter to every ``flask_tiered_state.*`` logger that exists without one.

A :func:`logging.setLogRecordFactory` wrapper was rejected: the factory is
process-wide, would have to be chained with any other library's factory, and
setting ``correlation_id`` at record creation makes ``logger.info(...,
extra={"correlation_id": ...})`` raise ``KeyError("Attempt to overwrite ...")``.
A filter only fills the attribute when the record has none, so an explicit
``extra`` wins, and records of other loggers are left alone.

``init_app`` leaves ``app.logger`` and every other logger of the app alone. To see
the id on the records of your app's loggers, add the filter to your handlers (it
sets the attribute on every record a handler emits), or call
:func:`install_correlation_filter` with them.
"""

from __future__ import annotations

import logging

from ..domain import context as _domain

__all__ = [
    "LIBRARY_LOGGER",
    "CorrelationIdFilter",
    "get_logger",
    "install_correlation_filter",
    "install_library_filters",
]

#: The name of the library's root logger; every library logger is below it.
LIBRARY_LOGGER = "flask_tiered_state"


class CorrelationIdFilter(logging.Filter):
    """Adds ``correlation_id`` to every record; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = _domain.get_correlation_id() or "-"
        return True


def install_correlation_filter(*targets: logging.Logger | logging.Handler) -> None:
    """Add one :class:`CorrelationIdFilter` to each target that has none yet.

    For your own handlers and loggers, e.g.
    ``install_correlation_filter(*app.logger.handlers)``; the library calls it for its
    loggers only. On a handler it sees every record the handler emits; on a logger only
    the records logged on that very logger, not those of its children.
    """
    for target in targets:
        if not any(isinstance(f, CorrelationIdFilter) for f in target.filters):
            target.addFilter(CorrelationIdFilter())


def _is_library_name(name: str) -> bool:
    return name == LIBRARY_LOGGER or name.startswith(LIBRARY_LOGGER + ".")


def get_logger(name: str) -> logging.Logger:
    """The library logger ``name``, with a :class:`CorrelationIdFilter`.

    :param name: ``flask_tiered_state`` or a name below it (a module's ``__name__``).
    :raises ValueError: for a name outside the library's namespace.
    """
    if not _is_library_name(name):
        raise ValueError(
            f"Logger name {name!r} is not a library logger; use {LIBRARY_LOGGER!r} or a "
            f"name starting with '{LIBRARY_LOGGER}.'."
        )
    logger = logging.getLogger(name)
    install_correlation_filter(logger)
    return logger


def install_library_filters() -> None:
    """Add a :class:`CorrelationIdFilter` to every existing library logger without one."""
    existing = list(logging.Logger.manager.loggerDict.items())
    install_correlation_filter(
        *(
            logger
            for name, logger in existing
            if _is_library_name(name) and isinstance(logger, logging.Logger)
        )
    )
    install_correlation_filter(logging.getLogger(LIBRARY_LOGGER))

"""The correlation id of the work in progress, recorded in history rows and logs.

The Flask extension sets it per request (from ``X-Correlation-ID`` /
``X-Request-ID`` or a generated one); business code and scripts may set their own
with :func:`correlation_scope`. It is a :class:`contextvars.ContextVar`, so threads
and asyncio tasks each see their own.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import InvalidRequestError

__all__ = [
    "correlation_scope",
    "get_correlation_id",
    "reset_correlation_id",
    "set_correlation_id",
]

MAX_CORRELATION_ID_LENGTH = 200
_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "flask_tiered_state_correlation_id", default=None
)


def get_correlation_id() -> str | None:
    """The current correlation id, or None."""
    return _correlation_id.get()


def set_correlation_id(correlation_id: str | None) -> contextvars.Token[str | None]:
    """Set the correlation id; keep the token for :func:`reset_correlation_id`."""
    if correlation_id is not None and (
        not isinstance(correlation_id, str)
        or not 0 < len(correlation_id) <= MAX_CORRELATION_ID_LENGTH
        or not correlation_id.isprintable()
    ):
        raise InvalidRequestError(
            f"Invalid correlation id {correlation_id!r}; correlation ids are 1 to "
            f"{MAX_CORRELATION_ID_LENGTH} printable characters.",
            details={"correlation_id": repr(correlation_id)},
        )
    return _correlation_id.set(correlation_id)


def reset_correlation_id(token: contextvars.Token[str | None]) -> None:
    """Restore the correlation id that was current before :func:`set_correlation_id`."""
    _correlation_id.reset(token)


@contextmanager
def correlation_scope(correlation_id: str) -> Iterator[str]:
    """Record mutations inside the block under ``correlation_id``.

    For example::

        with correlation_scope("nightly-import-42"):
            manager.update_state(...)
    """
    token = set_correlation_id(correlation_id)
    try:
        yield correlation_id
    finally:
        _correlation_id.reset(token)

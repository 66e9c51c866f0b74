"""The process-wide default manager and the hook to the current app's manager.

Kept apart from the manager so its rule reads in one place: inside a Flask app
context whose app has the extension, the resolver the extension installed returns
that app's manager; otherwise there is one default instance per process, built on
first use under a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["DefaultInstance"]


class _Closable(Protocol):
    closed: bool

    def close(self) -> None: ...


M = TypeVar("M", bound=_Closable)


class DefaultInstance(Generic[M]):
    """Holds the default instance and the context resolver."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._instance: M | None = None
        self.resolver: Callable[[], M | None] | None = None
        #: ``factory(components) -> instance``; the caller of :meth:`get` passes ``build``.
        self.factory: Callable[[dict[str, Any]], M] | None = None

    def get(self, build: Callable[[], M]) -> tuple[M, bool]:
        """The resolved or default instance, and whether it was just built."""
        resolver = self.resolver
        if resolver is not None:
            current = resolver()
            if current is not None:
                return current, False
        instance = self._instance
        if instance is not None and not instance.closed:
            return instance, False
        with self._lock:
            instance = self._instance
            if instance is not None and not instance.closed:
                return instance, False
            instance = self._instance = build()
            return instance, True

    def reset(self) -> None:
        """Close and forget the default instance; safe to call twice."""
        with self._lock:
            instance, self._instance = self._instance, None
        if instance is not None:
            instance.close()

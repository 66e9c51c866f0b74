"""Repository and unit-of-work wrappers that report every call to a metrics collector,
and the calls slower than a threshold to a slow-operation log.

The store wraps its repositories (and the units of work of its transactions) in them
only when it is given a collector or a slow-operation log
(:class:`~flask_tiered_state.observability.slow.SlowOperationLog`), so an
uninstrumented store pays nothing. Every other attribute (``unit_of_work``, ``engine``,
``document_expression``, ``connection``, ...) passes through to the wrapped object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import (
    ConcurrencyError,
    ConfigurationError,
    InvalidKeyError,
    InvalidPatternError,
    InvalidRequestError,
    StateTooLargeError,
)
from .base import (
    StaleCopy,
    StateMetadata,
    StateRepository,
    StoredValue,
    TierStats,
    WriteRequest,
)

if TYPE_CHECKING:
    from ..observability.metrics import MetricsCollector
    from ..observability.slow import SlowOperationLog

__all__ = ["InstrumentedRepository", "InstrumentedUnitOfWork"]

T = TypeVar("T")
# The caller's mistakes (an invalid key, pattern or value, a value too large) and
# compare-and-set conflicts are not failures of the tier.
_NOT_TIER_ERRORS = (
    ConcurrencyError,
    InvalidKeyError,
    InvalidPatternError,
    InvalidRequestError,
    StateTooLargeError,
    ConfigurationError,
)


class _Timed:
    _tier: str
    _backend: str | None
    collector: MetricsCollector | None
    slow: SlowOperationLog | None

    def _run(
        self,
        operation: str,
        call: Callable[[], T],
        batch_size: int | None = None,
        key: str | None = None,
    ) -> T:
        start = perf_counter()
        error = False
        try:
            return call()
        except Exception as exc:
            error = not isinstance(exc, _NOT_TIER_ERRORS)
            raise
        finally:
            self._report(operation, perf_counter() - start, error, batch_size, key)

    def _report(
        self,
        operation: str,
        seconds: float,
        error: bool,
        batch_size: int | None = None,
        key: str | None = None,
    ) -> None:
        if self.collector is not None:
            self.collector.observe(
                self._tier,
                operation,
                seconds,
                error=error,
                batch_size=batch_size,
                backend=self._backend,
            )
        slow = self.slow
        if slow is not None and seconds >= slow.threshold_seconds:
            slow.report(
                "tier",
                operation,
                seconds,
                tier=self._tier,
                backend=self._backend,
                state_id=key,
                batch_size=batch_size,
            )


class InstrumentedRepository(_Timed):
    """Times each call of ``inner`` and reports it to ``collector``.

    Calls outside :data:`~flask_tiered_state.observability.metrics.OPERATIONS` count as
    the operation they resemble: ``store_copies`` as ``store_many``; ``delete_unchanged``,
    ``delete_stale`` and ``delete_and_publish`` as ``delete_many`` (as ``publish`` when
    they only announce).

    :param inner: the repository to wrap.
    :param collector: receives ``observe(tier, operation, seconds, error=, batch_size=,
        backend=)``; its ``add_repository(tier, backend)``, if it has one, is called here.
        None: no metrics.
    :param slow: reports the calls slower than its threshold (the key of a call on one
        key as its ``state_id``); None: none.
    """

    def __init__(
        self,
        inner: StateRepository,
        collector: MetricsCollector | None,
        slow: SlowOperationLog | None = None,
    ) -> None:
        self.inner = inner
        self.collector = collector
        self.slow = slow
        self.backend = inner.backend
        self.category = inner.category
        self._tier = inner.category.value
        self._backend = inner.backend
        add_repository = getattr(collector, "add_repository", None)
        if add_repository is not None:
            add_repository(self._tier, self._backend)
        # Redis's extra call, counted like the calls it resembles; left absent (so that
        # hasattr() stays truthful) when the wrapped repository lacks it.
        extra: Any = inner
        if hasattr(inner, "delete_and_publish"):
            self.delete_and_publish = lambda keys, channel, messages: self._run(
                "delete_many" if keys else "publish",
                lambda: extra.delete_and_publish(keys, channel, messages),
                len(keys) if keys else None,
            )

        if hasattr(inner, "add_copies"):
            self.add_copies = lambda items: self._run(
                "store_many", lambda: extra.add_copies(items), len(items)
            )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"InstrumentedRepository({self.inner!r})"

    def fetch(self, key: str) -> StoredValue | None:
        return self._run("fetch", lambda: self.inner.fetch(key), key=key)

    def fetch_many(self, keys: Sequence[str]) -> dict[str, StoredValue]:
        return self._run("fetch_many", lambda: self.inner.fetch_many(keys), len(keys))

    def store(
        self,
        key: str,
        value: str,
        *,
        version: int | None = None,
        ttl_seconds: int | None = None,
        expected_version: int | None = None,
    ) -> StateMetadata:
        return self._run(
            "store",
            lambda: self.inner.store(
                key,
                value,
                version=version,
                ttl_seconds=ttl_seconds,
                expected_version=expected_version,
            ),
            key=key,
        )

    def store_many(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        return self._run("store_many", lambda: self.inner.store_many(items), len(items))

    def delete(self, key: str) -> bool:
        return self._run("delete", lambda: self.inner.delete(key), key=key)

    def delete_many(self, keys: Sequence[str]) -> int:
        return self._run("delete_many", lambda: self.inner.delete_many(keys), len(keys))

    def store_copies(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        return self._run("store_many", lambda: self.inner.store_copies(items), len(items))

    def delete_unchanged(self, copies: Sequence[StoredValue], **publish: Any) -> list[str]:
        inner: Any = self.inner  # Redis takes channel= and messages= too
        deleted: list[str] = self._run(
            "delete_many", lambda: inner.delete_unchanged(copies, **publish), len(copies)
        )
        return deleted

    def delete_stale(self, fences: Mapping[str, StaleCopy], **publish: Any) -> int:
        inner: Any = self.inner
        deleted: int = self._run(
            "delete_many" if fences else "publish",
            lambda: inner.delete_stale(fences, **publish),
            len(fences) if fences else None,
        )
        return deleted

    def keys(self, pattern: str = "*") -> Iterator[str]:
        return iter(self._run("keys", lambda: list(self.inner.keys(pattern))))

    def scan_keys(self, pattern: str = "*") -> Iterator[str]:
        """The wrapped repository's stream, reported as one ``keys`` call once it ends
        (run out, failed or closed); its time is the time spent producing keys, not the
        caller's between them."""
        start = perf_counter()
        try:
            keys = iter(self.inner.scan_keys(pattern))
        except Exception as exc:
            self._report("keys", perf_counter() - start, not isinstance(exc, _NOT_TIER_ERRORS))
            raise
        return self._timed_stream(keys, perf_counter() - start)

    def _timed_stream(self, keys: Iterator[str], seconds: float) -> Iterator[str]:
        error = False
        try:
            while True:
                start = perf_counter()
                try:
                    key = next(keys)
                except StopIteration:
                    return
                finally:
                    seconds += perf_counter() - start
                yield key
        except Exception as exc:
            error = not isinstance(exc, _NOT_TIER_ERRORS)
            raise
        finally:
            self._report("keys", seconds, error)

    def stats(self) -> TierStats:
        return self.inner.stats()

    def ping(self) -> bool:
        return self.inner.ping()

    def close(self) -> None:
        self.inner.close()


class InstrumentedUnitOfWork(_Timed):
    """Times the writes of a store transaction's unit of work (``SQLUnitOfWork``), which
    bypass the instrumented repository, and reports them like repository calls.

    :param inner: the unit of work.
    :param collector: the store's collector (None: no metrics).
    :param tier: the tier the unit of work writes to (``"warm"``).
    :param backend: the backend it writes to; by default its repository's.
    :param slow: the store's slow-operation log (None: none).
    """

    def __init__(
        self,
        inner: Any,
        collector: MetricsCollector | None,
        tier: str,
        backend: str | None = None,
        slow: SlowOperationLog | None = None,
    ) -> None:
        self.inner = inner
        self.collector = collector
        self.slow = slow
        self._tier = tier
        if backend is None:
            backend = getattr(getattr(inner, "repository", None), "backend", None)
        self._backend = backend
        self.connection = inner.connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def fetch(self, key: str) -> StoredValue | None:
        result: StoredValue | None = self._run("fetch", lambda: self.inner.fetch(key), key=key)
        return result

    def store(self, key: str, value: str, **options: Any) -> StateMetadata:
        result: StateMetadata = self._run(
            "store", lambda: self.inner.store(key, value, **options), key=key
        )
        return result

    def store_many(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        result: dict[str, StateMetadata] = self._run(
            "store_many", lambda: self.inner.store_many(items), len(items)
        )
        return result

    def compare_and_set_many(
        self, items: Sequence[tuple[WriteRequest, int]]
    ) -> dict[str, StateMetadata] | None:
        result: dict[str, StateMetadata] | None = self._run(
            "store_many", lambda: self.inner.compare_and_set_many(items), len(items)
        )
        return result

    def delete(self, key: str) -> bool:
        return bool(self._run("delete", lambda: self.inner.delete(key), key=key))

    def delete_stale(self, fences: Mapping[str, StaleCopy]) -> int:
        return int(self._run("delete", lambda: self.inner.delete_stale(fences)))

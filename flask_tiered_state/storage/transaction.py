"""Store transactions: values and the caller's own rows committed together.

WARM writes run in the SQL transaction of the WARM repository's unit of work, where
the caller also writes its own rows (history) on :attr:`StoreTransaction.connection`.
Writes to a HOT or COLD home are applied just before the commit, together with the
removal of their WARM copy inside the transaction; if one fails, or the commit does,
the SQL rolls back and the writes already applied are undone
(:mod:`~flask_tiered_state.storage.transaction_undo`).
After the commit, the cache is refreshed and the copies other tiers hold are dropped
(remembered and retried if a tier is down, never served meanwhile).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

from ..errors import ConcurrencyError, ConfigurationError, TieredStateError, TierUnavailableError
from .base import StateCategory, StateMetadata, StoredValue
from .coordinator import DROPS
from .instrumented import _NOT_TIER_ERRORS
from .keys import validate_key
from .transaction_undo import AppliedWrite, previous_value, undo_applied

if TYPE_CHECKING:
    import sqlalchemy as sa

    from .store import TieredStore

__all__ = ["StoreTransaction", "open_transaction", "write_with_row"]

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD


@dataclass(slots=True)
class _Deferred:
    value: str
    category: StateCategory
    ttl_seconds: int | None
    expected_version: int | None


class StoreTransaction:
    """The handle of :meth:`TieredStore.transaction`.

    :attr connection: the WARM database connection inside the transaction, for the
        caller's own rows.
    """

    def __init__(self, store: TieredStore, unit_of_work: Any) -> None:
        self._store = store
        self._uow = unit_of_work
        self.connection = unit_of_work.connection
        self._written: dict[str, tuple[StoredValue, StateCategory, tuple[StateCategory, ...]]] = {}
        self._deferred: dict[str, _Deferred] = {}
        self._deleted: dict[str, None] = {}
        self._applied: list[AppliedWrite] = []
        self._token = 0

    def set(
        self,
        key: str,
        value: Any,
        *,
        category: StateCategory | str = StateCategory.WARM,
        ttl_seconds: int | None = None,
        expected_version: int | None = None,
    ) -> StateMetadata | None:
        """Write like :meth:`TieredStore.set`. A WARM write runs now, in the transaction,
        and returns its metadata; a HOT or COLD write runs at commit and returns None."""
        from .store import as_category, check_expected_version, check_ttl

        validate_key(key)
        home = as_category(category)
        ttl, expected = check_ttl(ttl_seconds), check_expected_version(expected_version)
        text = self._store.encode(key, value)
        self._deleted.pop(key, None)
        if home is not WARM:
            self._written.pop(key, None)
            self._deferred[key] = _Deferred(text, home, ttl, expected)
            return None
        self._deferred.pop(key, None)
        moved_from: tuple[StateCategory, ...] = ()
        metadata: StateMetadata
        try:
            metadata = self._uow.store(key, text, ttl_seconds=ttl, expected_version=expected)
        except ConcurrencyError as exc:
            if not expected or exc.actual not in (0, None):
                raise
            metadata, moved_from = self._store_moved(key, text, WARM, ttl, expected)
        self._written[key] = (StoredValue(key, text, metadata), WARM, moved_from)
        return metadata

    def delete(self, key: str) -> bool:
        """Delete ``key``: from WARM in the transaction, from HOT and COLD after the commit.

        :returns: True if any tier has the key now.
        """
        validate_key(key)
        self._written.pop(key, None)
        self._deferred.pop(key, None)
        self._deleted[key] = None
        existed = bool(self._uow.delete(key))
        return existed or bool(self._store.coordinator.copies_elsewhere(key, WARM))

    def _store_moved(
        self, key: str, text: str, home: StateCategory, ttl: int | None, expected: int
    ) -> tuple[StateMetadata, tuple[StateCategory, ...]]:
        store = self._uow.store if home is WARM else self._repo(home).store
        return self._store.coordinator.store_moving(store, key, text, home, ttl, expected)

    def _repo(self, category: StateCategory) -> Any:
        return self._store.coordinator.repositories.by_category(category)

    def _before_commit(self) -> None:
        coordinator = self._store.coordinator
        self._token = coordinator.cache.fill_token()
        for key, write in self._deferred.items():
            if write.category is HOT and not coordinator.hot_usable():
                raise TierUnavailableError(
                    "hot", f"The HOT tier is unavailable, so {key!r} cannot be written to it."
                )
            moved_from: tuple[StateCategory, ...] = ()
            repository = self._repo(write.category)
            previous = previous_value(repository, key, write.expected_version)
            try:
                metadata = repository.store(
                    key, write.value, ttl_seconds=write.ttl_seconds,
                    expected_version=write.expected_version,
                )  # fmt: skip
            except ConcurrencyError as exc:
                if not write.expected_version or exc.actual not in (0, None):
                    raise
                metadata, moved_from = self._store_moved(
                    key, write.value, write.category, write.ttl_seconds, write.expected_version
                )
                previous = None  # the key was not in its new home
            except TierUnavailableError as exc:
                coordinator.tier_failed(write.category, exc)
                raise
            stored = StoredValue(key, write.value, metadata)
            self._applied.append(AppliedWrite(write.category, previous, stored))
            # The WARM copy goes in the same transaction as the caller's rows.
            self._uow.delete(key)
            self._written[key] = (stored, write.category, (*moved_from, WARM))

    def _after_commit(self) -> None:
        _publish(self._store, self._written, self._deleted, self._token)


def _publish(
    store: TieredStore,
    written: dict[str, tuple[StoredValue, StateCategory, tuple[StateCategory, ...]]],
    deleted: dict[str, None],
    token: int,
) -> None:
    """After a commit: refresh the cache, drop the stale copies, announce the keys."""
    coordinator, cache = store.coordinator, store.cache
    keys = [*written, *deleted]
    if not keys:
        return
    drops: dict[StateCategory, list[str]] = {COLD: [], HOT: []}
    for key, (_, home, moved_from) in written.items():
        for category in dict.fromkeys((*DROPS[home], *moved_from)):
            if category is not home and category is not WARM:  # WARM: done in the SQL
                drops[category].append(key)
    drops[COLD] += deleted
    drops[HOT] += deleted
    with coordinator.locked(keys):
        for stored, _, _ in written.values():
            cache.refresh(stored, token)
        cache.invalidate_many(deleted)
        coordinator.drop_copies(COLD, drops[COLD])  # bottom-up, like deletes
        # HOT last, announcing every changed key to other processes' caches.
        coordinator.drop_copies(HOT, drops[HOT], announce=keys)


def write_with_row(
    store: TieredStore,
    key: str,
    value: Any,
    *,
    expected_version: int,
    table: sa.Table,
    row: Mapping[str, Any],
) -> StateMetadata | None:
    """A compare-and-set write of a WARM-home ``key`` from ``expected_version`` and the
    insert of the caller's ``row`` into ``table``, as one statement where the WARM
    repository offers it (PostgreSQL): the cheap form of a store transaction doing one
    WARM ``set`` and one insert. After it, the cache and the other tiers are handled as
    after a transaction's commit.

    :returns: the metadata, or None when nothing was written: the repository has no
        such statement, or ``key`` is not in WARM at ``expected_version``. Run the
        store transaction then; it writes, moves the record home, or raises the
        :class:`~flask_tiered_state.errors.ConcurrencyError` with the actual version.
    """
    store_with_row = getattr(store.warm, "store_with_row", None)
    if store_with_row is None or not expected_version:
        return None
    validate_key(key)
    text = store.encode(key, value)
    coordinator = store.coordinator
    coordinator.retry_pending()
    token = coordinator.cache.fill_token()
    collector = store.metrics_collector
    started = perf_counter()
    failed = False
    try:
        metadata: StateMetadata | None = store_with_row(
            key, text, expected_version=expected_version, table=table, row=row
        )
    except TieredStateError as exc:
        failed = not isinstance(exc, _NOT_TIER_ERRORS)
        raise
    finally:
        if collector is not None:
            collector.observe(WARM.value, "store", perf_counter() - started, error=failed)
    if metadata is None:
        return None
    _publish(store, {key: (StoredValue(key, text, metadata), WARM, ())}, {}, token)
    return metadata


@contextmanager
def open_transaction(store: TieredStore) -> Iterator[StoreTransaction]:
    """Run the block in one WARM transaction; see :class:`StoreTransaction`."""
    unit_of_work = getattr(store.warm, "unit_of_work", None)
    if unit_of_work is None:
        raise ConfigurationError(
            f"transaction() needs a WARM repository with unit_of_work() (SQLStateRepository); "
            f"the WARM tier here is {store.warm.backend!r}."
        )
    store.coordinator.retry_pending()
    collector = store.metrics_collector
    transaction: StoreTransaction | None = None
    try:
        with unit_of_work() as work:
            if collector is not None:
                from .instrumented import InstrumentedUnitOfWork

                work = InstrumentedUnitOfWork(work, collector, WARM.value)
            transaction = StoreTransaction(store, work)
            yield transaction
            transaction._before_commit()
    except BaseException:
        if transaction is not None:  # not committed: undo what reached HOT or COLD
            undo_applied(store.coordinator, transaction._applied)
        raise
    transaction._after_commit()

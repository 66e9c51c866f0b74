"""Store transactions: values and the caller's own rows committed together.

WARM writes run in the SQL transaction of the WARM repository's unit of work, where
the caller also writes its own rows (history) on :attr:`StoreTransaction.connection`.
Writes to a HOT or COLD home are applied just before the commit, together with the
removal of their stale WARM copy inside the transaction; if one fails, or the commit
does, the SQL rolls back and the writes already applied are undone
(below).
After the commit, the cache is refreshed and the copies other tiers hold are dropped
(remembered and retried if a tier is down, never served meanwhile).

A commit whose reply is lost (the connection broke after COMMIT was sent, or the call's
deadline closed it) may have committed or not. It is *resolved*, not guessed: the
caller's ``resolve`` callable asks the database (for the domain: is the history row
with this write's event id there?). Committed: the transaction ends as if the reply had
come. Not committed: the HOT and COLD writes are undone and the failure raised. Still
unknown (the database does not answer the check either): nothing is undone, every cached
copy older than the write is dropped, and
:class:`~flask_tiered_state.errors.OutcomeUnknownError` is raised; whatever the database
holds then, no process reads an older value as current.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

from ..errors import (
    ConcurrencyError,
    ConfigurationError,
    DeadlineExceededError,
    IntegrityError,
    OutcomeUnknownError,
    TieredStateError,
    TierUnavailableError,
)
from .base import (
    ANY_COPY,
    StaleCopy,
    StateCategory,
    StateMetadata,
    StoredValue,
    WriteRequest,
)
from .checks import as_category, check_optional_expected_version, check_optional_ttl
from .coordinator import DROPS, stale_fence
from .deadlines import budget, fresh_budget
from .health import logger
from .instrumented import _NOT_TIER_ERRORS, InstrumentedUnitOfWork
from .keys import validate_key

if TYPE_CHECKING:
    import sqlalchemy as sa

    from .coordinator import StateRepositoryCoordinator
    from .store import TieredStore

__all__ = [
    "Resolve",
    "StoreTransaction",
    "TransactionWrite",
    "open_transaction",
    "write_with_row",
]

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD
#: Seconds the check of a commit whose reply was lost may take.
RESOLVE_SECONDS = 2.0

#: Asks the database whether a transaction whose commit reply was lost committed: True
#: or False; raises :class:`~flask_tiered_state.errors.TierUnavailableError` when it
#: cannot tell.
Resolve = Callable[[], bool]


@dataclass(frozen=True, slots=True)
class TransactionWrite:
    """One write of :meth:`StoreTransaction.set_many` (the arguments of ``set``)."""

    key: str
    value: Any
    category: StateCategory | str = StateCategory.WARM
    ttl_seconds: int | None = None
    expected_version: int | None = None


@dataclass(slots=True)
class _Deferred:
    value: str
    category: StateCategory
    ttl_seconds: int | None
    expected_version: int | None


@dataclass(frozen=True, slots=True)
class _Written:
    stored: StoredValue
    home: StateCategory
    moved_from: tuple[StateCategory, ...]
    #: Compare-and-set (the version goes on from every copy), else last-writer-wins.
    versioned: bool
    #: A HOT home the tier directory does not mark: no WARM or COLD copy to drop.
    unmarked: bool = False

    def fence(self) -> StaleCopy:
        """The copies this write makes stale."""
        return stale_fence(self.stored, versioned=self.versioned)


class StoreTransaction:
    """The handle of :meth:`TieredStore.transaction`.

    :attr connection: the WARM database connection inside the transaction, for the
        caller's own rows.
    """

    def __init__(self, store: TieredStore, unit_of_work: Any) -> None:
        self._store = store
        self._uow = unit_of_work
        self.connection = unit_of_work.connection
        self._written: dict[str, _Written] = {}
        self._deferred: dict[str, _Deferred] = {}
        self._deleted: dict[str, None] = {}
        self._applied: list[AppliedWrite] = []
        self._token = 0
        #: Keys written to WARM in this transaction, then to another home: their row
        #: is a lower copy that the tier directory must mark.
        self._left_warm: set[str] = set()

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
        validate_key(key)
        home = as_category(category)
        ttl = check_optional_ttl(ttl_seconds)
        expected = check_optional_expected_version(expected_version)
        text = self._store.encode(key, value)
        self._deleted.pop(key, None)
        if home is not WARM:
            if self._written.pop(key, None) is not None:
                self._left_warm.add(key)
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
        stored = StoredValue(key, text, metadata)
        self._written[key] = _Written(stored, WARM, moved_from, expected is not None)
        return metadata

    def set_many(self, writes: Sequence[TransactionWrite]) -> None:
        """:meth:`set` of each write, in order; the compare-and-set writes of WARM-home
        keys go to the database as one statement per kind where it offers that
        (PostgreSQL), and only the keys it did not write take :meth:`set`'s path (which
        raises their :class:`~flask_tiered_state.errors.ConcurrencyError` or follows a
        tier move)."""
        batch: dict[str, tuple[WriteRequest, int]] = {}
        distinct = len({w.key for w in writes}) == len(writes)
        if distinct and len(writes) > 1 and getattr(self._uow, "batches_compare_and_set", False):
            for w in writes:
                validate_key(w.key)
                expected = check_optional_expected_version(w.expected_version)
                if as_category(w.category) is not WARM or expected is None:
                    continue
                ttl = check_optional_ttl(w.ttl_seconds)
                request = WriteRequest(w.key, self._store.encode(w.key, w.value), None, ttl)
                batch[w.key] = (request, expected)
        written = self._uow.compare_and_set_many(list(batch.values())) if len(batch) > 1 else None
        for w in writes:
            metadata = written.get(w.key) if written else None
            if metadata is None:
                self.set(w.key, w.value, category=w.category, ttl_seconds=w.ttl_seconds,
                         expected_version=w.expected_version)  # fmt: skip
                continue
            self._deleted.pop(w.key, None)
            self._deferred.pop(w.key, None)
            stored = StoredValue(w.key, batch[w.key][0].value, metadata)
            self._written[w.key] = _Written(stored, WARM, (), True)

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

    def _lower_copies(self) -> list[str]:
        """The keys this transaction may give a new WARM or COLD copy (a compare-and-set
        update of a WARM row in place makes none: the row was marked when it was made)."""
        keys = [
            key
            for key, w in self._written.items()
            if not (w.versioned and not w.moved_from and w.stored.metadata.version > 1)
        ]
        keys += [key for key, d in self._deferred.items() if d.category is not HOT]
        return keys + [key for key in self._left_warm if key not in self._written]

    def _before_commit(self) -> None:
        coordinator = self._store.coordinator
        self._token = coordinator.cache.fill_token()
        # Before the commit shows the WARM rows and before the COLD writes: the tier
        # directory must mark a key before its lower copy can be read.
        coordinator.mark_lower_copies(self._lower_copies())
        for key, write in self._deferred.items():
            if write.category is HOT and not coordinator.hot_usable():
                raise TierUnavailableError(
                    "hot", f"The HOT tier is unavailable, so {key!r} cannot be written to it."
                )
            moved_from: tuple[StateCategory, ...] = ()
            repository = self._repo(write.category)
            previous = previous_value(repository, key, write.expected_version)
            try:
                with coordinator.consulting(write.category) as answer:
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
            marked = None if answer is None else answer.marked_keys()
            unmarked = marked is not None and key not in marked and not moved_from
            written = _Written(stored, write.category, () if unmarked else (*moved_from, WARM),
                               write.expected_version is not None, unmarked)  # fmt: skip
            # The stale WARM copy goes in the same transaction as the caller's rows.
            if not unmarked:
                self._uow.delete_stale({key: written.fence()})
            self._written[key] = written

    def _after_commit(self) -> None:
        _publish(self._store, self._written, self._deleted, self._token)

    def _after_unknown_outcome(self) -> None:
        """Neither outcome is known: leave nothing older than the write readable."""
        _forget_older(self._store, self._written, self._deleted)


# -- undoing the HOT and COLD writes of a transaction that did not commit ---------
#
# Undoing a store transaction's HOT and COLD writes when its SQL does not commit.
#
# Writes to a HOT or COLD home are applied just before the SQL commit (the tiers have no
# shared transaction). When a later write or the commit itself fails, the writes already
# applied are put back as they were, so a failed transaction leaves neither its values
# nor its rows behind (invariant 4): a replaced value is restored with its version
# (compare-and-set on the version just written), a new key is deleted if it is still the
# value written. A value another writer changed meanwhile is left alone, and a tier that
# fails during the undo is logged: those are the only ways a failed transaction's value
# can remain.


@dataclass(frozen=True, slots=True)
class AppliedWrite:
    """A write applied to a HOT or COLD home before the commit, and what it replaced."""

    category: StateCategory
    previous: StoredValue | None
    written: StoredValue


def previous_value(repository: Any, key: str, expected_version: int | None) -> StoredValue | None:
    """The value a write is about to replace (None for a new key, or an unreadable one)."""
    if expected_version == 0:
        return None
    try:
        found: StoredValue | None = repository.fetch(key)
    except IntegrityError:
        return None
    return found


def undo_applied(coordinator: StateRepositoryCoordinator, applied: Sequence[AppliedWrite]) -> None:
    """Put every applied write back as it was (last first), then make every process
    forget the values that never committed."""
    if not applied:
        return
    for write in reversed(applied):
        key = write.written.key
        repository = coordinator.repositories.by_category(write.category)
        try:
            if write.previous is None:
                _delete_if_unchanged(repository, write.written)
            else:
                meta = write.previous.metadata
                repository.store(
                    key,
                    write.previous.value,
                    version=meta.version,
                    ttl_seconds=meta.ttl_seconds,
                    expected_version=write.written.metadata.version,
                )
        except ConcurrencyError:
            logger.warning(
                "Not undoing the %s write of %r: another writer changed it since.",
                write.category.value,
                key,
            )
        except TierUnavailableError as exc:
            logger.error(
                "Could not undo the %s write of %r after the transaction failed: %s",
                write.category.value,
                key,
                exc,
            )
    keys = [write.written.key for write in applied]
    coordinator.cache.invalidate_many(keys)
    try:
        coordinator.announce(keys)
    except TierUnavailableError as exc:
        logger.warning("Could not announce %d undone writes: %s", len(keys), exc)


def _delete_if_unchanged(repository: Any, written: StoredValue) -> None:
    repository.delete_unchanged([written])


def _publish(
    store: TieredStore,
    written: Mapping[str, _Written],
    deleted: Mapping[str, None],
    token: int,
) -> None:
    """After a commit: refresh the cache, drop the stale copies, announce the keys."""
    coordinator, cache = store.coordinator, store.cache
    keys = [*written, *deleted]
    if not keys:
        return
    drops: dict[StateCategory, dict[str, StaleCopy]] = {COLD: {}, HOT: {}}
    for key, write in written.items():
        home_drops = () if write.unmarked else DROPS[write.home]
        for category in dict.fromkeys((*home_drops, *write.moved_from)):
            if category is not write.home and category is not WARM:  # WARM: in the SQL
                drops[category][key] = write.fence()
    for key in deleted:
        drops[COLD][key] = drops[HOT][key] = ANY_COPY
    with coordinator.locked(keys):
        for write in written.values():
            cache.refresh(write.stored, token)
        cache.invalidate_many(deleted)
        coordinator.drop_copies(COLD, drops[COLD])  # bottom-up, like deletes
        # HOT last, announcing every changed key to other processes' caches.
        coordinator.drop_copies(HOT, drops[HOT], announce=keys)


def _forget_older(
    store: TieredStore, written: Mapping[str, _Written], deleted: Mapping[str, None]
) -> None:
    """After a commit of unknown outcome: drop every cached copy older than the writes
    (they are stale if it committed, and mere copies if not), and forget the keys in
    every process's cache. A HOT home written before the commit stays as it is."""
    coordinator = store.coordinator
    keys = [*written, *deleted]
    hot_copies = {key: write.fence() for key, write in written.items() if write.home is not HOT}
    with coordinator.locked(keys):
        store.cache.invalidate_many(keys)
        coordinator.drop_copies(HOT, hot_copies, announce=keys)


def _resolved(
    store: TieredStore,
    exc: OutcomeUnknownError,
    resolve: Resolve | None,
) -> bool | None:
    """Whether a commit of unknown outcome committed (None: still unknown).

    A database that did not answer for the whole call budget is not asked again (the
    call would overrun it); one whose connection broke gets :data:`RESOLVE_SECONDS`.
    """
    if resolve is None or isinstance(exc.failure, DeadlineExceededError):
        return None
    try:
        with fresh_budget(RESOLVE_SECONDS):
            return resolve()
    except TieredStateError as failure:
        logger.error("Could not find out whether a commit with a lost reply committed: %s",
                     failure)  # fmt: skip
        return None


def write_with_row(
    store: TieredStore,
    key: str,
    value: Any,
    *,
    expected_version: int,
    rows: Sequence[tuple[sa.Table, Mapping[str, Any]]],
    resolve: Resolve | None = None,
) -> StateMetadata | None:
    """A compare-and-set write of a WARM-home ``key`` from ``expected_version`` and the
    insert of each of the caller's ``(table, row)`` of ``rows``, as one statement where
    the WARM repository offers it (PostgreSQL): the cheap form of a store transaction
    doing one WARM ``set`` and a few inserts. After it, the cache and the other tiers
    are handled as after a transaction's commit; a lost reply is resolved with
    ``resolve`` as a transaction's commit is (any one of the rows tells: the statement
    committed all of them or none).

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
            key, text, expected_version=expected_version, rows=rows
        )
    except OutcomeUnknownError as exc:
        # What it would have written: the next version, this text.
        guess = StoredValue(
            key, text, store.warm.prepared_metadata(key, text, expected_version + 1)
        )
        written = {key: _Written(guess, WARM, (), True)}
        outcome = _resolved(store, exc, resolve)
        failed = not outcome
        if outcome is None:
            _forget_older(store, written, {})
            raise
        if not outcome:
            raise exc.failure from exc
        _publish(store, written, {}, token)
        return guess.metadata
    except TieredStateError as exc:
        failed = not isinstance(exc, _NOT_TIER_ERRORS)
        raise
    finally:
        seconds = perf_counter() - started
        if collector is not None:
            collector.observe(
                WARM.value, "store", seconds, error=failed, backend=store.warm.backend,
            )  # fmt: skip
        slow = store.slow_operations
        if slow is not None and seconds >= slow.threshold_seconds:
            slow.report(
                "tier", "store", seconds, tier=WARM.value, backend=store.warm.backend,
                state_id=key,
            )  # fmt: skip
    if metadata is None:
        return None
    _publish(store, {key: _Written(StoredValue(key, text, metadata), WARM, (), True)}, {}, token)
    return metadata


@contextmanager
def open_transaction(
    store: TieredStore, *, resolve: Resolve | None = None
) -> Iterator[StoreTransaction]:
    """Run the block in one WARM transaction; see :class:`StoreTransaction`.

    :param resolve: asked whether the transaction committed when its commit reply is
        lost (see the module docstring); without it such a commit raises
        :class:`~flask_tiered_state.errors.OutcomeUnknownError`.
    """
    unit_of_work = getattr(store.warm, "unit_of_work", None)
    if unit_of_work is None:
        raise ConfigurationError(
            f"transaction() needs a WARM repository with unit_of_work() (SQLStateRepository); "
            f"the WARM tier here is {store.warm.backend!r}."
        )
    with budget(store.call_timeout):
        store.coordinator.retry_pending()
        with _run_transaction(store, unit_of_work, resolve) as transaction:
            yield transaction


@contextmanager
def _run_transaction(
    store: TieredStore, unit_of_work: Any, resolve: Resolve | None
) -> Iterator[StoreTransaction]:
    collector = store.metrics_collector
    transaction: StoreTransaction | None = None
    committing = False
    try:
        with unit_of_work() as work:
            if collector is not None or store.slow_operations is not None:
                work = InstrumentedUnitOfWork(
                    work, collector, WARM.value, slow=store.slow_operations
                )
            transaction = StoreTransaction(store, work)
            yield transaction
            transaction._before_commit()
            committing = True
    except OutcomeUnknownError as exc:
        if not committing or transaction is None:
            raise
        outcome = _resolved(store, exc, resolve)
        if outcome is None:
            transaction._after_unknown_outcome()
            raise
        if not outcome:
            undo_applied(store.coordinator, transaction._applied)
            raise exc.failure from exc
    except BaseException:
        if transaction is not None:  # not committed: undo what reached HOT or COLD
            undo_applied(store.coordinator, transaction._applied)
        raise
    assert transaction is not None
    transaction._after_commit()

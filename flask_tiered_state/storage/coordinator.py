"""The coordinator: one place that knows how the cache and the three tiers relate.

Reads go down the waterfall cache -> HOT -> WARM -> COLD; a hit below the cache
fills the cache, and a value the policy calls hot also gets a HOT copy with a TTL.
Writes go to the value's home tier, refresh the cache and then drop the copies other
tiers hold that could shadow the new value or resurface after it (a HOT home with a
TTL drops WARM and COLD; WARM drops the HOT copy; COLD drops WARM and HOT). Drops and
deletes run bottom-up (COLD, WARM, HOT) so that no reader ever sees an older copy
appear; a HOT home's WARM and COLD drops run side by side, since readers find the new
value in HOT before either; with a tier directory (:mod:`.tier_directory`), only the
keys it marks as possibly having such copies are dropped there. The HOT step comes last
and, when other processes' caches are invalidated through Redis (:mod:`.invalidation`),
also announces the changed keys in the same round trip, so a process that hears of a
change finds no stale copy left to read.

A HOT tier that fails is marked degraded: reads skip it and are served from WARM,
and it is re-checked with exponential backoff. A copy that could not be dropped is
remembered in :class:`~.health.PendingDrops`: readers ignore it and it is deleted
when the tier answers again, before the tier is used for reads. Writers of one key
are serialised inside the process by striped locks, so the cache always ends with
the newest write.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from ..errors import ConcurrencyError, IntegrityError, OutcomeUnknownError, TierUnavailableError
from .base import (
    ANY_COPY,
    StaleCopy,
    StateCategory,
    StateMetadata,
    StateRepositories,
    StateRepository,
    StoredValue,
    WriteRequest,
)
from .cache import StateCache
from .health import TierGuard, logger
from .keys import validate_pattern
from .tiering import TierPromotionPolicy

if TYPE_CHECKING:
    from .tier_directory import DirectoryAnswer, TierDirectory

__all__ = [
    "COLD",
    "DROPS",
    "HOT",
    "WARM",
    "StateRepositoryCoordinator",
    "stale_fence",
    "store_hot_copies",
]

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD
_STRIPES = 64

#: The tiers whose copies a write to the key's home tier must drop (bottom-up).
DROPS: dict[StateCategory, tuple[StateCategory, ...]] = {
    HOT: (COLD, WARM),
    WARM: (HOT,),
    COLD: (WARM, HOT),
}


def stale_fence(written: StoredValue, *, versioned: bool) -> StaleCopy:
    """The fence of the copies a value just written to its home makes stale.

    A compare-and-set write's version goes on from every copy, so the copies below it are
    the stale ones, and a newer copy (another writer's value, moved meanwhile) stays. A
    last-writer-wins write may be numbered afresh by its home, so it removes every copy
    stored before it but its own, and a copy stored after it stays.
    """
    metadata = written.metadata
    if versioned:
        return StaleCopy(metadata.version)
    return StaleCopy(metadata.version, metadata.checksum, metadata.stored_at)


def store_hot_copies(
    hot: StateRepository, requests: Sequence[WriteRequest], *, where_absent: bool
) -> set[str]:
    """Write HOT copies where HOT lacks the key or holds an older version (never over a
    value as new or newer); the keys written.

    :param where_absent: only where HOT lacks the key (``add_copies``, where the HOT
        repository has it), for keys found absent from HOT: a value there now was written
        meanwhile, and a HOT-home write numbers its value afresh, so its version may be
        below the copy's.
    """
    if not requests:
        return set()
    extra: Any = hot
    if where_absent and hasattr(extra, "add_copies"):
        return set(extra.add_copies(requests))
    return set(hot.store_copies(requests))


class StateRepositoryCoordinator:
    """Reads, writes and deletes across the cache and the tiers.

    :param repositories: the repositories it calls (possibly instrumented).
    :param cache: the in-process cache.
    :param policy: when lower-tier hits earn a HOT copy.
    :param raw_repositories: what :meth:`get_repositories` returns (default:
        ``repositories``).
    :param max_pending_hot: how many HOT copies waiting to be dropped are remembered;
        past it the whole HOT tier is reconciled on recovery.
    """

    # -- shared state: locks, counters, workers ------------------------------
    def __init__(
        self,
        repositories: StateRepositories,
        cache: StateCache,
        *,
        policy: TierPromotionPolicy | None = None,
        raw_repositories: StateRepositories | None = None,
        initial_backoff: float = 0.5,
        max_backoff: float = 5.0,
        max_pending_hot: int = 100_000,
        clock: Any = time.monotonic,
    ) -> None:
        self.repositories = repositories
        self._raw = raw_repositories or repositories
        self.hot, self.warm, self.cold = repositories.hot, repositories.warm, repositories.cold
        self.cache = cache
        self.policy = policy or TierPromotionPolicy()
        self.guard = TierGuard(
            repositories,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
            max_pending_hot=max_pending_hot,
            clock=clock,
        )
        self.guard.forget_cached = cache.invalidate_many
        self.pending = self.guard.pending
        self.hot_usable = self.guard.hot_usable
        self.tier_failed = self.guard.failed
        self.drop_copies = self.guard.drop
        self.retry_pending = self.guard.retry_pending
        self._stripes = [threading.RLock() for _ in range(_STRIPES)]
        self._counts_lock = threading.Lock()
        self.tier_hits = dict.fromkeys(StateCategory, 0)
        self.tier_misses = dict.fromkeys(StateCategory, 0)
        #: Keys moved: "promotions" (asked for), "auto_promotions" (HOT copies placed
        #: because of frequent reads) and "demotions".
        self.movements = dict.fromkeys(("promotions", "auto_promotions", "demotions"), 0)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        #: The keys that may have WARM or COLD copies (set by the store when HOT is
        #: Redis); None: a HOT-home write drops WARM and COLD copies of every key.
        self.directory: TierDirectory | None = None

    def get_repositories(self) -> StateRepositories:
        return self._raw

    def _drop_pool(self) -> ThreadPoolExecutor:
        """The workers that drop COLD copies alongside WARM's (started on first use)."""
        pool = self._pool
        if pool is None:
            with self._pool_lock:
                pool = self._pool
                if pool is None:
                    pool = self._pool = ThreadPoolExecutor(
                        max_workers=4, thread_name_prefix="tiered-state-drop"
                    )
        return pool

    def close(self) -> None:
        """Stop the drop workers (after the drops in flight finish)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    @contextmanager
    def locked(self, keys: Iterable[str]) -> Iterator[None]:
        """Hold the write locks of ``keys`` (taken in a fixed order: no deadlocks)."""
        stripes = [self._stripes[i] for i in sorted({hash(k) % _STRIPES for k in keys})]
        for lock in stripes:
            lock.acquire()
        try:
            yield
        finally:
            for lock in reversed(stripes):
                lock.release()

    def _count(self, category: StateCategory, hit: bool, n: int = 1) -> None:
        with self._counts_lock:
            (self.tier_hits if hit else self.tier_misses)[category] += n

    def count_movements(self, kind: str, n: int) -> None:
        with self._counts_lock:
            self.movements[kind] += n

    # -- reads: the waterfall ------------------------------------------------
    def read(self, key: str) -> StoredValue | None:
        """The value under ``key`` from the cache or the first tier that has it."""
        stored = self.cache.get_entry(key)
        return stored if stored is not None else self.read_through(key)

    def read_through(
        self, key: str, token: int | None = None, *, auto_promote: bool = True
    ) -> StoredValue | None:
        """Read below the cache (the caller already missed it), then fill the cache.

        :param token: the cache's :meth:`~.StateCache.fill_token`, taken at the miss.
        :param auto_promote: False: the read is not counted towards a promotion.
        """
        cache = self.cache
        if token is None:
            token = cache.fill_token()
        found = self.locate(key)
        if found is None:
            return None
        category, stored = found
        policy = self.policy
        if category is HOT or not (auto_promote and policy.auto_promote):
            cache.fill(stored, token)
        elif (
            policy.should_promote(cache.fill_and_history(stored, token), cache.clock())
            and self.hot_usable()
        ):
            self.place_hot_copies([stored], token)
        return stored

    def locate(self, key: str) -> tuple[StateCategory, StoredValue] | None:
        """The first copy of ``key`` down the tiers, skipping copies pending a drop.

        A corrupt HOT copy is passed over when a tier below has the value (the copy is
        then deleted); when none has, its :class:`IntegrityError` is raised.
        """
        corrupt: IntegrityError | None = None
        if self.hot_usable() and key not in self.pending[HOT]:
            try:
                stored = self.hot.fetch(key)
            except TierUnavailableError as exc:
                self.tier_failed(HOT, exc)
                stored = None
            except IntegrityError as exc:
                corrupt, stored = exc, None
            if stored is not None:
                self._count(HOT, True)
                return HOT, stored
            self._count(HOT, False)
        for category in (WARM, COLD):
            if key in self.pending[category]:
                continue
            stored = self.repositories.by_category(category).fetch(key)
            self._count(category, stored is not None)
            if stored is not None:
                if corrupt is not None:
                    logger.warning("Dropping the corrupt HOT copy of %r: %s", key, corrupt)
                    self.drop_copies(HOT, {key: ANY_COPY}, announce=())
                return category, stored
        if corrupt is not None:
            raise corrupt
        return None

    def locate_many(self, keys: Sequence[str]) -> dict[str, tuple[StateCategory, StoredValue]]:
        """:meth:`locate` for many keys: one ``fetch_many`` per tier."""
        found: dict[str, tuple[StateCategory, StoredValue]] = {}
        rest = list(keys)
        for category in (HOT, WARM, COLD):
            if not rest:
                break
            hits = self.fetch_tier(category, rest)
            for key, stored in hits.items():
                found[key] = (category, stored)
            rest = [k for k in rest if k not in hits]
        return found

    def fetch_tier(self, category: StateCategory, keys: Sequence[str]) -> dict[str, StoredValue]:
        """``fetch_many`` on one tier, without copies pending a drop; a dead HOT gives {}."""
        pending = self.pending[category]
        wanted = [k for k in keys if k not in pending] if pending else list(keys)
        if not wanted:
            return {}
        if category is HOT:
            if not self.hot_usable():
                return {}
            try:
                hits = self.hot.fetch_many(wanted)
            except TierUnavailableError as exc:
                self.tier_failed(HOT, exc)
                return {}
        else:
            hits = self.repositories.by_category(category).fetch_many(wanted)
        self._count(category, True, len(hits))
        self._count(category, False, len(wanted) - len(hits))
        return hits

    def keys(self, pattern: str = "*") -> list[str]:
        """Keys matching ``pattern`` in any tier, de-duplicated and sorted (while HOT is
        down, keys only HOT holds are left out)."""
        validate_pattern(pattern)
        found: set[str] = set()
        for category in (HOT, WARM, COLD):
            repository: StateRepository = self.repositories.by_category(category)
            if category is HOT and not self.hot_usable():
                continue
            try:
                names = list(repository.keys(pattern))
            except TierUnavailableError as exc:
                if category is not HOT:
                    raise
                self.tier_failed(HOT, exc)
                continue
            pending = self.pending[category]
            found.update(k for k in names if k not in pending)
        return sorted(found)

    # -- HOT copies of hot values --------------------------------------------
    def place_hot_copies(self, values: Sequence[StoredValue], token: int) -> int:
        """Give ``values`` HOT copies with the policy's TTL, unless written since ``token``."""
        ttl = self.policy.hot_ttl_seconds
        with self.locked(v.key for v in values):
            requests = [
                WriteRequest(v.key, v.value, version=v.metadata.version, ttl_seconds=ttl)
                for v in values
                if not self.cache.written_since(v.key, token) and v.key not in self.pending[HOT]
            ]
            if not requests:
                return 0
            try:
                stored = self.place_copies(requests, where_absent=True)  # HOT lacked them
            except TierUnavailableError as exc:
                self.tier_failed(HOT, exc)
                return 0
            sources = [v for v in values if v.key in stored]
            placed = len(sources) - self.settle_hot_copies(sources)
        self.count_movements("auto_promotions", placed)
        return placed

    def place_copies(
        self, requests: Sequence[WriteRequest], *, where_absent: bool = False
    ) -> set[str]:
        """:func:`store_hot_copies` on this HOT tier (``where_absent`` for keys found
        absent from HOT, as a promotion's)."""
        return store_hot_copies(self.hot, requests, where_absent=where_absent)

    def settle_hot_copies(self, sources: Sequence[StoredValue]) -> int:
        """After HOT copies of ``sources`` were placed: remove those whose source changed
        meanwhile. Call with the keys' locks held; returns how many were removed.

        Another process may have changed a key and dropped its HOT copy between our
        read of the source and our placing of the copy: the copy would then shadow the
        change in every process. Re-reading the sources after placing closes that gap:
        a change not seen now is committed later, and its own drop removes our copy.
        A changed key's copy is deleted only if it still is ours (compare-and-delete,
        so a newer HOT value stays) and the key is announced again, in one round trip.
        Only a shared (Redis) HOT tier needs this; an in-process one is guarded by the
        locks and the fill tokens.
        """
        hot: Any = self.hot
        if not sources or not self.guard.shared(HOT):
            return 0
        by_tier: dict[StateCategory, list[StoredValue]] = {}
        for source in sources:
            by_tier.setdefault(source.metadata.category, []).append(source)
        changed: list[StoredValue] = []
        for category, group in by_tier.items():
            try:
                now = self.repositories.by_category(category).fetch_many([s.key for s in group])
            except TierUnavailableError:
                now = {}  # unknown: treat as changed
            for source in group:
                was, current = source.metadata, now.get(source.key)
                if (
                    current is None
                    or current.metadata.version != was.version
                    or current.metadata.checksum != was.checksum
                ):
                    changed.append(source)
        if not changed:
            return 0
        keys = [s.key for s in changed]
        # Our copies are the sources' values with the sources' versions and checksums.
        publisher = self.guard.publisher
        try:
            if publisher is None:
                hot.delete_unchanged(changed)
            else:
                publisher.publish(
                    lambda ch, msgs: hot.delete_unchanged(changed, channel=ch, messages=msgs), keys
                )
        except TierUnavailableError as exc:
            logger.warning("Could not remove %d HOT copies of changed values: %s", len(keys), exc)
            self.tier_failed(HOT, exc)
        return len(changed)

    def announce(self, keys: Sequence[str]) -> None:
        """Tell other processes' caches that ``keys`` changed (nothing to drop in HOT);
        a no-op without cross-process invalidation."""
        self.guard.announce_keys(keys)

    # -- writes to home tiers, drops of stale copies, deletes ---------------
    def write(
        self,
        key: str,
        value: str,
        *,
        category: StateCategory,
        ttl_seconds: int | None = None,
        expected_version: int | None = None,
    ) -> StoredValue:
        """Write ``value`` to its home tier ``category``, refresh the cache, drop stale copies.

        ``expected_version`` is checked in the home tier; when the key is absent there
        but lives in another tier (its home is changing), it is checked against that copy.
        """
        self.retry_pending()
        repository = self.repositories.by_category(category)
        if category is HOT and not self.hot_usable():
            raise TierUnavailableError(
                "hot", f"The HOT tier is unavailable, so {key!r} cannot be written to it."
            )
        with self.locked((key,)):
            moved_from: tuple[StateCategory, ...] = ()
            if category is not HOT:
                self.mark_lower_copies([key])
            try:
                with self.consulting(category) as answer:
                    try:
                        metadata = repository.store(
                            key, value, ttl_seconds=ttl_seconds, expected_version=expected_version
                        )
                    except ConcurrencyError as exc:
                        if not expected_version or exc.actual not in (0, None):
                            raise
                        metadata, moved_from = self.store_moving(
                            repository.store, key, value, category, ttl_seconds, expected_version
                        )
            except OutcomeUnknownError:
                # Whichever way it went, no copy older than this write may be read.
                if category is not HOT:
                    fence = (
                        ANY_COPY if expected_version is None else StaleCopy(expected_version + 1)
                    )
                    self.cache.invalidate(key)
                    self.drop_copies(HOT, {key: fence}, announce=[key])
                raise
            except TierUnavailableError as exc:
                self.tier_failed(category, exc)
                raise
            stored = StoredValue(key, value, metadata)
            self.after_home_write(
                [stored],
                category,
                also=moved_from,
                versioned=expected_version is not None,
                marked=None if answer is None else answer.marked_keys(),
            )
        return stored

    # -- the tier directory ----------------------------------------------------
    def consulting(self, home: StateCategory) -> AbstractContextManager[DirectoryAnswer | None]:
        """Around a write to ``home``: for a HOT home with a directory, the write reads
        the marks of its keys in its own round trip (the answer yielded); else None."""
        directory = self.directory
        if home is not HOT or directory is None:
            return nullcontext()
        return directory.consulting()

    def mark_lower_copies(self, keys: Sequence[str], *, required: bool = False) -> None:
        """Mark ``keys`` in the tier directory before a WARM or COLD copy of them is made.

        A mark that Redis refuses is not fatal to a write (WARM and COLD homes work
        while HOT is down): the write's HOT drop, deferred to the journal with its
        fence, marks the key when it is done (the Redis repository's ``delete_stale``).
        A move (``required``) raises instead.
        """
        directory = self.directory
        if directory is None or not keys:
            return
        if not self.hot_usable():  # no round trip to a Redis known to be down
            if required:
                raise TierUnavailableError(
                    "hot", "The HOT tier (Redis) is degraded, so no key can be moved."
                )
            return
        try:
            directory.mark(keys)
        except TierUnavailableError as exc:
            if required:
                self.tier_failed(HOT, exc)
                raise
            # The write's HOT drop, through the (instrumented) repository, goes next: it
            # finds out, counts and reports whether Redis is down.
            logger.warning(
                "Could not mark %d keys in the tier directory (the HOT drop marks them later): %s",
                len(keys),
                exc,
            )

    def copies_elsewhere(self, key: str, home: StateCategory) -> dict[StateCategory, StoredValue]:
        """The copies of ``key`` in the tiers other than ``home``, topmost first."""
        copies = {}
        for category in (HOT, WARM, COLD):
            hit = None if category is home else self.fetch_tier(category, [key]).get(key)
            if hit is not None:
                copies[category] = hit
        return copies

    def read_home(self, key: str, home: StateCategory) -> StoredValue | None:
        """The authoritative value of ``key``, whose home tier is ``home``: read from the
        home itself, never from the cache or a HOT copy; while the home lacks the key (it
        is changing home), the newest copy in another tier. What a write's version check
        and a conflict's re-read rely on.

        The cache is refreshed with what was found, and HOT copies older than it are
        dropped (and the key announced), so a stale copy that caused a conflict is gone.
        """
        token = self.cache.fill_token()
        found = self.fetch_tier(home, [key]).get(key)
        if found is None:
            copies = self.copies_elsewhere(key, home).values()
            found = max(copies, key=lambda c: c.metadata.version, default=None)
        if found is None:
            self.cache.invalidate(key)
            return None
        self.cache.fill(found, token)
        if home is not HOT:
            self.drop_copies(HOT, {key: StaleCopy(found.metadata.version)}, announce=[key])
        return found

    def store_moving(
        self,
        store: Callable[..., StateMetadata],
        key: str,
        value: str,
        home: StateCategory,
        ttl_seconds: int | None,
        expected_version: int,
    ) -> tuple[StateMetadata, tuple[StateCategory, ...]]:
        """Compare-and-set while ``key`` changes home: check ``expected_version`` against
        the topmost copy in another tier, then write with the next version (the home
        must still lack the key). Returns the metadata and the tiers to drop copies from."""
        copies = self.copies_elsewhere(key, home)
        # The newest copy is the value: an older one (a HOT copy another process could not
        # drop yet) must not decide the check.
        actual = max((c.metadata.version for c in copies.values()), default=0)
        if actual != expected_version:
            raise ConcurrencyError(key, expected_version, actual)
        metadata = store(
            key, value, version=actual + 1, ttl_seconds=ttl_seconds, expected_version=0
        )
        return metadata, tuple(copies)

    def after_home_write(
        self,
        values: Sequence[StoredValue],
        home: StateCategory,
        *,
        also: Iterable[StateCategory] = (),
        versioned: bool,
        marked: Collection[str] | None = None,
    ) -> None:
        """Refresh the cache with ``values`` and drop the copies that are now stale.

        The drops are fenced (:func:`stale_fence`): a copy newer than the write, which
        another process moved into a tier meanwhile, stays. A batch larger than the
        cache's scan threshold invalidates its keys instead of caching them. Call with the
        keys' locks held.

        :param versioned: the writes were compare-and-set (their versions go on from every
            copy); else they were last-writer-wins.
        :param marked: for a HOT home, the keys the tier directory says may have WARM or
            COLD copies, read after the write (None: no answer, every key may). Only
            those are dropped there, but in the tiers ``also`` names.
        """
        keys = [v.key for v in values]
        fences = {v.key: stale_fence(v, versioned=versioned) for v in values}
        stale = {*DROPS[home], *also} - {home}
        if marked is not None and home is HOT:
            below = {k: f for k, f in fences.items() if k in marked}
            drop_in = {
                tier: fences if tier in also else below for tier in (WARM, COLD) if tier in stale
            }
            stale = {t for t in stale if t not in drop_in or drop_in[t]}
        else:
            drop_in = dict.fromkeys((WARM, COLD), fences)
        # With both WARM and COLD stale (a HOT home, which readers reach first), the two
        # drops do not depend on each other: COLD's runs on a worker while this thread
        # refreshes the cache and drops WARM's, so the write waits for the slower one only.
        cold_drop = None
        if COLD in stale and WARM in stale:
            context = contextvars.copy_context()
            cold_drop = self._drop_pool().submit(context.run, self.drop_copies, COLD, drop_in[COLD])
        try:
            if len(values) > self.cache.scan_threshold:
                self.cache.invalidate_many(keys)
            else:
                self.cache.set_many(values)
            if cold_drop is None and COLD in stale:
                self.drop_copies(COLD, drop_in[COLD])
            if WARM in stale:
                self.drop_copies(WARM, drop_in[WARM])
        finally:
            if cold_drop is not None:
                cold_drop.result()
        # Last: HOT's stale copies, with the announcement to other processes' caches.
        self.drop_copies(HOT, fences if HOT in stale else {}, announce=keys)

    def delete(self, key: str) -> bool:
        """Delete ``key`` from every tier, bottom-up; True if any tier had it."""
        return self.delete_many([key]) > 0

    def delete_many(self, keys: Sequence[str]) -> int:
        """Delete ``keys`` from every tier, bottom-up; how many existed in any tier.

        Counting costs one ``fetch_many`` on HOT and WARM; COLD is told apart by two
        ``delete_many`` calls (keys known above, and the rest).
        """
        self.retry_pending()
        keys = list(dict.fromkeys(keys))
        with self.locked(keys):
            above = set(self.fetch_tier(HOT, keys))
            above.update(self.fetch_tier(WARM, [k for k in keys if k not in above]))
            known, rest = [k for k in keys if k in above], [k for k in keys if k not in above]
            deleted = len(above) + (self.cold.delete_many(rest) if rest else 0)
            if known:
                self.cold.delete_many(known)
            self.pending[COLD].discard(keys)
            self.warm.delete_many(keys)
            self.pending[WARM].discard(keys)
            self.drop_copies(HOT, dict.fromkeys(keys, ANY_COPY))
            self.cache.invalidate_many(keys)
        return deleted

"""Tier health and pending drops: how the store lives through a dead tier.

Like flask-limiter with a dead storage, the coordinator logs the failure, serves
from the next tier and re-checks the failed one with exponential backoff. A
:class:`TierHealth` is that backoff clock. :class:`PendingDrops` remembers the copies
a write made stale but could not delete (their tier was down); the coordinator ignores
those copies when reading and deletes them when the tier answers again, with the
write's :class:`~.base.StaleCopy` fence, so a stale copy is never served (invariant 3)
and a newer value written meanwhile is never deleted. Drops of copies in shared tiers
(a Redis HOT tier, the COLD tier) also go to the WARM database's journal
(:class:`~.sql.journal.DropJournal`), so that they outlive the process, and a
:class:`JournalReplayer` thread does the drops other processes left there.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import TieredStateError, TierUnavailableError
from .base import StaleCopy, StateCategory, StateRepositories
from .pending_drops import PendingDrops

if TYPE_CHECKING:
    from .invalidation import InvalidationPublisher
    from .sql.journal import DropJournal

__all__ = ["JournalReplayer", "TierGuard", "TierHealth", "logger"]

#: The storage layer's logger.
logger = logging.getLogger("flask_tiered_state.storage")

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD
_RECONCILE_CHUNK = 1000


class TierHealth:
    """Healthy, or degraded with the time of the next check (exponential backoff).

    :param name: the tier's name, for logs.
    :param initial_backoff: seconds before the first re-check.
    :param max_backoff: the longest wait between two checks.
    """

    def __init__(
        self,
        name: str,
        *,
        initial_backoff: float = 0.5,
        max_backoff: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._clock = clock
        self._lock = threading.Lock()
        self._check_lock = threading.Lock()
        self.healthy = True
        self.failures = 0
        self.degraded_since: float | None = None
        self.next_check_at = 0.0
        self.last_error: str | None = None

    def mark_failed(self, error: BaseException | str) -> None:
        """Record a failure and schedule the next check."""
        with self._lock:
            now = self._clock()
            if self.healthy:
                logger.warning("Tier %s is unavailable: %s", self.name, error)
                self.degraded_since = now
            self.healthy = False
            self.failures += 1
            delay = min(self.max_backoff, self.initial_backoff * 2 ** (self.failures - 1))
            self.next_check_at = now + delay
            self.last_error = str(error)

    def mark_recovered(self) -> None:
        with self._lock:
            if not self.healthy:
                logger.warning(
                    "Tier %s answers again after %d failed checks.", self.name, self.failures
                )
            self.healthy = True
            self.failures = 0
            self.degraded_since = None
            self.last_error = None

    def check_due(self) -> bool:
        """True when degraded and the backoff delay has passed."""
        return not self.healthy and self._clock() >= self.next_check_at

    def begin_check(self, *, force: bool = False) -> bool:
        """Claim the right to run the due check (with ``force``, a check now, due or
        not); only one thread checks at a time."""
        if not (force or self.check_due()):
            return False
        return self._check_lock.acquire(blocking=False)

    def end_check(self) -> None:
        self._check_lock.release()

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            return {
                "healthy": self.healthy,
                "failures": self.failures,
                "degraded_for_seconds": (
                    None if self.degraded_since is None else round(now - self.degraded_since, 3)
                ),
                "next_check_in_seconds": (
                    None if self.healthy else round(max(0.0, self.next_check_at - now), 3)
                ),
                "last_error": self.last_error,
            }


class TierGuard:
    """The health and pending drops of each tier, and HOT's automatic recovery.

    :param repositories: the tiers it guards.
    :param max_pending_hot: how many HOT copies waiting to be dropped are remembered;
        past it, recovery reconciles the whole HOT tier.
    """

    def __init__(
        self,
        repositories: StateRepositories,
        *,
        initial_backoff: float = 0.5,
        max_backoff: float = 5.0,
        max_pending_hot: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repositories = repositories
        self.health = {
            c: TierHealth(c.value, initial_backoff=initial_backoff, max_backoff=max_backoff,
                          clock=clock)
            for c in StateCategory
        }  # fmt: skip
        self.pending = {
            HOT: PendingDrops(max_pending_hot),
            WARM: PendingDrops(),
            COLD: PendingDrops(),
        }
        #: Set when other processes' caches are invalidated through Redis: HOT drops
        #: then also announce the changed keys, in the same round trip.
        self.publisher: InvalidationPublisher | None = None
        #: Where drops that could not be done outlive the process (see
        #: :mod:`.sql.journal`); None: in this process only.
        self.journal: DropJournal | None = None
        #: Forgets keys in this process's cache (its own announcements do not reach it).
        self.forget_cached: Callable[[Sequence[str]], object] | None = None
        self._replay_lock = threading.Lock()

    def failed(self, category: StateCategory, exc: BaseException) -> None:
        self.health[category].mark_failed(exc)

    def hot_usable(self) -> bool:
        """True when HOT may be used; runs the due recovery check when degraded."""
        health = self.health[HOT]
        if health.healthy:
            return True
        if not health.begin_check():
            return False
        try:
            return self._recover_hot()
        finally:
            health.end_check()

    def recover_now(self) -> bool:
        """HOT answered (this process's subscriber reconnected): recover it at once,
        whatever the backoff says, so its pending drops run now. True when healthy."""
        health = self.health[HOT]
        if health.healthy:
            return True
        if not health.begin_check(force=True):
            return False  # another thread is recovering it right now
        try:
            return self._recover_hot()
        finally:
            health.end_check()

    def _recover_hot(self) -> bool:
        pending = self.pending[HOT]
        try:
            if not self.repositories.hot.ping():
                raise TierUnavailableError("hot", "The HOT tier did not answer PING.")
            self._drop_pending_hot()
            if pending.overflowed:
                self._reconcile_hot()
                pending.clear_overflow()
            self.health[HOT].mark_recovered()
            # Writers that still saw HOT degraded may have added keys meanwhile.
            self._drop_pending_hot()
        except TierUnavailableError as exc:
            self.failed(HOT, exc)
            return False
        self.replay_journal()
        return True

    def _drop_pending_hot(self) -> None:
        """Drop the stale HOT copies with their fences, announcing what could not be
        announced while HOT was down."""
        fences = self.pending[HOT].snapshot()
        self._delete_stale_hot(fences, ())
        self.pending[HOT].discard(fences)

    def _delete_stale_hot(self, fences: Mapping[str, StaleCopy], announce: Sequence[str]) -> int:
        """Delete the stale HOT copies and publish ``announce`` (with the keys deferred
        earlier) in one round trip; how many copies were deleted."""
        hot: Any = self.repositories.hot
        publisher = self.publisher
        if publisher is None:
            return int(hot.delete_stale(fences)) if fences else 0
        deleted: list[int] = []
        publisher.publish(
            lambda ch, messages: deleted.append(
                hot.delete_stale(fences, channel=ch, messages=messages)
            ),
            announce,
        )
        return sum(deleted)

    def _reconcile_hot(self) -> None:
        """Drop every HOT copy older than a copy below it (too many pending drops to
        track). A HOT home never has a copy as new below it."""
        chunk: list[str] = []
        for key in self.repositories.hot.keys("*"):
            chunk.append(key)
            if len(chunk) == _RECONCILE_CHUNK:
                self._reconcile_chunk(chunk)
                chunk = []
        if chunk:
            self._reconcile_chunk(chunk)

    def _reconcile_chunk(self, keys: list[str]) -> None:
        below: dict[str, int] = {}
        for category in (WARM, COLD):
            pending = self.pending[category]
            wanted = [k for k in keys if k not in pending]
            if wanted:
                found = self.repositories.by_category(category).fetch_many(wanted)
                for key, stored in found.items():
                    below[key] = max(below.get(key, 0), stored.metadata.version)
        if below:
            # A HOT copy at the version below is a copy of it; only older ones are stale.
            fences = {k: StaleCopy(v) for k, v in sorted(below.items())}
            deleted = self.repositories.hot.delete_stale(fences)
            if deleted:
                logger.warning("Dropped %d stale HOT copies after a long HOT outage.", deleted)

    def retry_pending(self) -> None:
        """Retry dropping stale WARM and COLD copies whose backoff has elapsed."""
        for category in (WARM, COLD):
            if self.pending[category] and self.health[category].begin_check():
                self._settle(category)

    def _settle(self, category: StateCategory) -> None:
        """Drop the pending stale copies of WARM or COLD and mark it recovered (the
        caller holds the tier's check)."""
        health = self.health[category]
        try:
            fences = self.pending[category].snapshot()
            if fences:
                self.repositories.by_category(category).delete_stale(fences)
                self.pending[category].discard(fences)
            health.mark_recovered()
        except TierUnavailableError as exc:
            health.mark_failed(exc)
        finally:
            health.end_check()

    def check(self, category: StateCategory) -> bool:
        """Ask the tier now whether it answers, and make its health say so: the one
        answer every health report gives (True: healthy and in use).

        A tier that does not answer is marked failed (so the store stops using HOT at
        once, and ``failures`` counts this check); a degraded tier that answers is
        recovered now, whatever the backoff says, its pending drops done first.
        """
        health = self.health[category]
        if category is HOT and not health.healthy:
            return self.recover_now()
        repository = self.repositories.by_category(category)
        error: BaseException | str = (
            f"The {category.value.upper()} tier ({repository.backend}) did not answer the "
            "health check."
        )
        try:
            answers = bool(repository.ping())
        except Exception as exc:  # whatever the driver raised: the tier did not answer
            answers, error = False, exc
        if not answers:
            health.mark_failed(error)
            return False
        if not health.healthy and health.begin_check(force=True):
            self._settle(category)
        return health.healthy

    def tier_report(self, category: StateCategory) -> dict[str, Any]:
        """One tier's health (:meth:`TierHealth.to_dict`) and its pending drops."""
        return {**self.health[category].to_dict(), "pending_drops": len(self.pending[category])}

    def drop(
        self,
        category: StateCategory,
        fences: Mapping[str, StaleCopy],
        *,
        announce: Sequence[str] | None = None,
    ) -> None:
        """Delete the copies ``fences`` call stale in one tier; if it is down, remember
        them (in the journal too, for shared tiers) and drop them later.

        Until then readers skip those copies, so a stale copy is never served.

        :param announce: for HOT, with a :attr:`publisher`: the keys whose change other
            processes must hear of (default: the fences' keys), published in the same
            round trip after the deletion; kept for later when HOT is down.
        """
        publisher = self.publisher if category is HOT else None
        announced: Sequence[str] = ()
        if publisher is not None:
            announced = list(fences) if announce is None else announce
        if not fences and not announced:
            return
        pending = self.pending[category]
        if category is HOT and not self.hot_usable():
            self._defer(category, fences)
            if publisher is not None:
                publisher.defer(announced)
            return
        pending.add(fences, transient=True)
        try:
            if category is HOT:
                self._delete_stale_hot(fences, announced)
            else:
                self.repositories.by_category(category).delete_stale(fences)
        except TierUnavailableError as exc:
            logger.warning(
                "Could not drop %d stale %s copies (announcing %d keys): %s",
                len(fences),
                category,
                len(announced),
                exc,
            )
            self.failed(category, exc)
            self._defer(category, fences)
            return
        pending.discard(fences)

    def _defer(self, category: StateCategory, fences: Mapping[str, StaleCopy]) -> None:
        """Keep drops that could not be done: in this process (readers skip the copies),
        and in the journal when the tier is shared with other processes."""
        if not fences:
            return
        if not self.pending[category].add(fences) and category is HOT:
            self.failed(HOT, TierUnavailableError("hot", "too many pending drops"))
        if self.journal is None or not self.shared(category):
            return
        try:
            self.journal.record(category, fences)
        except TieredStateError as exc:
            logger.error(
                "Could not record %d pending %s drops in the WARM database: %s; they are "
                "kept in this process only.",
                len(fences),
                category,
                exc,
            )

    def shared(self, category: StateCategory) -> bool:
        """True for tiers other processes read too (Redis HOT, every COLD tier)."""
        return category is COLD or (category is HOT and self.repositories.hot.backend == "redis")

    def replay_journal(self, limit: int = 1000) -> int:
        """Do the drops other processes (or this one) recorded in the journal; how many
        copies were deleted. Needs the tiers they are in to answer; a tier that fails
        leaves its rows for the next replay."""
        journal = self.journal
        if journal is None or not self._replay_lock.acquire(blocking=False):
            return 0
        deleted = 0
        try:
            recorded = journal.pending(limit)
            for category, fences in recorded.items():
                if category is HOT and not self.health[HOT].healthy:
                    continue
                try:
                    if category is HOT:
                        deleted += self._delete_stale_hot(fences, list(fences))
                    else:
                        deleted += self.repositories.by_category(category).delete_stale(fences)
                        self.announce_keys(list(fences))
                except TierUnavailableError as exc:
                    self.failed(category, exc)
                    continue
                if self.forget_cached is not None:
                    self.forget_cached(list(fences))
                journal.forget(category, fences)
        except TieredStateError as exc:
            logger.warning("Could not replay the pending drops journal: %s", exc)
        finally:
            self._replay_lock.release()
        return deleted

    def announce_keys(self, keys: Sequence[str]) -> None:
        """Tell other processes' caches that ``keys`` changed (nothing to drop in HOT)."""
        if self.publisher is not None and keys:
            self.drop(HOT, {}, announce=keys)

    def report(self) -> dict[str, Any]:
        """:meth:`tier_report` of every tier, keyed by tier name (nothing is checked)."""
        return {c.value: self.tier_report(c) for c in StateCategory}


class JournalReplayer:
    """A daemon thread that replays the journal every ``interval`` seconds (through
    ``replay``, the store's :meth:`~.health.TierGuard.replay_journal`), so that the
    drops a dead process left behind are done within about ``interval`` seconds.

    :param replay: does the recorded drops; its errors are logged, never raised.
    :param interval: seconds between two replays.
    """

    def __init__(self, replay: Callable[[], object], interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        target = weakref.WeakMethod(replay) if hasattr(replay, "__self__") else replay
        self._thread = threading.Thread(
            target=_replay_loop,
            args=(target, self._stop, interval),
            name="tiered-state-drops",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


def _replay_loop(replay: Any, stop: threading.Event, interval: float) -> None:
    # A weak reference to the guard's method: a store dropped without close() ends the
    # thread at the next tick.
    while not stop.wait(interval):
        call = replay() if isinstance(replay, weakref.WeakMethod) else replay
        if call is None:
            return
        try:
            call()
        except Exception:  # the thread must survive anything
            logger.exception("Replaying the pending drops journal failed.")
        del call

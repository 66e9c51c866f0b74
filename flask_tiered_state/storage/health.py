"""Tier health and pending invalidations: how the store lives through a dead tier.

Like flask-limiter with a dead storage, the coordinator logs the failure, serves
from the next tier and re-checks the failed one with exponential backoff. A
:class:`TierHealth` is that backoff clock. :class:`PendingDrops` remembers the keys
whose copy in a tier could not be dropped after a newer write; the coordinator
ignores those copies when reading and deletes them when the tier answers again,
so a stale copy is never served (invariant 3).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import TierUnavailableError
from .base import StateCategory, StateRepositories
from .pending_drops import PendingDrops
from .tier_health import TierHealth

# Re-exported: the storage modules log through this logger, imported from here.
from .tier_health import logger as logger

if TYPE_CHECKING:
    from .invalidation import InvalidationPublisher

__all__ = ["PendingDrops", "TierGuard", "TierHealth"]

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD
_RECONCILE_CHUNK = 1000


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
        max_backoff: float = 30.0,
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

    def _recover_hot(self) -> bool:
        pending = self.pending[HOT]
        try:
            if not self.repositories.hot.ping():
                raise TierUnavailableError("hot", "The HOT tier did not answer PING.")
            self._drop_pending(HOT)
            if pending.overflowed:
                self._reconcile_hot()
                pending.clear_overflow()
            self.health[HOT].mark_recovered()
            # Writers that still saw HOT degraded may have added keys meanwhile.
            self._drop_pending(HOT)
        except TierUnavailableError as exc:
            self.failed(HOT, exc)
            return False
        return True

    def _drop_pending(self, category: StateCategory) -> None:
        if category is HOT:
            self._drop_pending_hot()
            return
        keys = self.pending[category].snapshot()
        if keys:
            self.repositories.by_category(category).delete_many(keys)
            self.pending[category].discard(keys)

    def _drop_pending_hot(self) -> None:
        """Drop the stale HOT copies, but only those stored before they became stale: a
        shared HOT tier may meanwhile hold a newer value another process wrote there."""
        pending = self.pending[HOT]
        since = pending.stale_since()
        hot: Any = self.repositories.hot
        delete_stale = getattr(hot, "delete_stale_and_publish", None)
        publisher = self.publisher
        if publisher is not None and delete_stale is not None:
            # Announce what could not be announced while HOT was down, with the drop.
            publisher.publish(lambda ch, messages: delete_stale(since, ch, messages), ())
        elif since and delete_stale is not None:
            delete_stale(since, "", [])
        elif since:  # an in-process HOT tier: nobody else writes to it
            hot.delete_many(list(since))
        pending.discard(since)

    def _reconcile_hot(self) -> None:
        """Drop every HOT copy that has a copy below it (too many pending drops to track).

        A HOT home never has copies below it, except stale ones still pending a drop.
        """
        chunk: list[str] = []
        for key in self.repositories.hot.keys("*"):
            chunk.append(key)
            if len(chunk) == _RECONCILE_CHUNK:
                self._reconcile_chunk(chunk)
                chunk = []
        if chunk:
            self._reconcile_chunk(chunk)

    def _reconcile_chunk(self, keys: list[str]) -> None:
        below: set[str] = set()
        for category in (WARM, COLD):
            pending = self.pending[category]
            wanted = [k for k in keys if k not in below and k not in pending]
            if wanted:
                below.update(self.repositories.by_category(category).fetch_many(wanted))
        if below:
            logger.warning("Dropping %d HOT copies after a long HOT outage.", len(below))
            hot: Any = self.repositories.hot
            if hasattr(hot, "delete_stale_and_publish"):  # shared: keep later writes
                stale_at = self.pending[HOT].overflow_stale_at
                hot.delete_stale_and_publish(dict.fromkeys(sorted(below), stale_at), "", [])
            else:
                hot.delete_many(sorted(below))

    def retry_pending(self) -> None:
        """Retry dropping stale WARM and COLD copies whose backoff has elapsed."""
        for category in (WARM, COLD):
            health = self.health[category]
            if not self.pending[category] or not health.begin_check():
                continue
            try:
                self._drop_pending(category)
                health.mark_recovered()
            except TierUnavailableError as exc:
                health.mark_failed(exc)
            finally:
                health.end_check()

    def drop(
        self,
        category: StateCategory,
        keys: Sequence[str],
        *,
        announce: Sequence[str] | None = None,
    ) -> None:
        """Delete the copies of ``keys`` in one tier; if it is down, remember to later.

        Until then readers skip those copies, so a stale copy is never served.

        :param announce: for HOT, with a :attr:`publisher`: the keys whose change other
            processes must hear of (default: ``keys``), published in the same round trip
            after the deletion; kept for later when HOT is down.
        """
        publisher = self.publisher if category is HOT else None
        if publisher is not None:
            announced = keys if announce is None else announce
            if announced:
                self._drop_and_announce(keys, announced, publisher)
                return
        if not keys:
            return
        pending = self.pending[category]
        if category is HOT and not self.hot_usable():
            if not pending.add(keys):
                self.failed(HOT, TierUnavailableError("hot", "too many pending drops"))
            return
        pending.add(keys, transient=True)
        try:
            self.repositories.by_category(category).delete_many(keys)
        except TierUnavailableError as exc:
            logger.warning("Could not drop %d stale %s copies: %s", len(keys), category, exc)
            self.failed(category, exc)
            return
        pending.discard(keys)

    def _drop_and_announce(
        self, keys: Sequence[str], announce: Sequence[str], publisher: InvalidationPublisher
    ) -> None:
        pending = self.pending[HOT]
        if not self.hot_usable():
            if keys and not pending.add(keys):
                self.failed(HOT, TierUnavailableError("hot", "too many pending drops"))
            publisher.defer(announce)
            return
        if keys:
            pending.add(keys, transient=True)
        try:
            hot: Any = self.repositories.hot
            publisher.publish(
                lambda ch, messages: hot.delete_and_publish(keys, ch, messages), announce
            )
        except TierUnavailableError as exc:
            logger.warning(
                "Could not drop %d stale HOT copies and announce %d changed keys: %s",
                len(keys),
                len(announce),
                exc,
            )
            self.failed(HOT, exc)
            return
        if keys:
            pending.discard(keys)

    def report(self) -> dict[str, Any]:
        return {
            c.value: {**self.health[c].to_dict(), "pending_drops": len(self.pending[c])}
            for c in StateCategory
        }

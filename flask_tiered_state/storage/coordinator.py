"""The coordinator: one place that knows how the cache and the three tiers relate.

Reads go down the waterfall cache -> HOT -> WARM -> COLD; a hit below the cache
fills the cache, and a value the policy calls hot also gets a HOT copy with a TTL.
Writes go to the value's home tier, refresh the cache and then drop the copies other
tiers hold that could shadow the new value or resurface after it (a HOT home with a
TTL drops WARM and COLD; WARM drops the HOT copy; COLD drops WARM and HOT). Drops and
deletes run bottom-up (COLD, WARM, HOT) so that no reader ever sees an older copy
appear; a HOT home's WARM and COLD drops run side by side, since readers find the new
value in HOT before either. The HOT step comes last and, when other processes' caches
are invalidated through Redis (:mod:`.invalidation`), also announces the changed keys in
the same round trip, so a process that hears of a change finds no stale copy left to read.

A HOT tier that fails is marked degraded: reads skip it and are served from WARM,
and it is re-checked with exponential backoff. A copy that could not be dropped is
remembered in :class:`~.health.PendingDrops`: readers ignore it and it is deleted
when the tier answers again, before the tier is used for reads. Writers of one key
are serialised inside the process by striped locks, so the cache always ends with
the newest write.
"""

from __future__ import annotations

# The module-level names below are re-exported: other modules import them from here.
from .coordinator_core import _STRIPES as _STRIPES
from .coordinator_core import COLD as COLD
from .coordinator_core import HOT as HOT
from .coordinator_core import WARM as WARM
from .home_writes import DROPS as DROPS
from .home_writes import HomeWrites

__all__ = ["StateRepositoryCoordinator"]


class StateRepositoryCoordinator(HomeWrites):
    """Reads, writes and deletes across the cache and the tiers.

    :param repositories: the repositories it calls (possibly instrumented).
    :param cache: the in-process cache.
    :param policy: when lower-tier hits earn a HOT copy.
    :param raw_repositories: what :meth:`get_repositories` returns (default:
        ``repositories``).
    :param max_pending_hot: how many HOT copies waiting to be dropped are remembered;
        past it the whole HOT tier is reconciled on recovery.
    """

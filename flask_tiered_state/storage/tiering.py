"""Moving values between tiers: the promotion policy and the tier manager.

Every move is copy (carrying the version; never over a value as new or newer) -> read
back and verify checksum and version -> delete the source *at the version copied*. A
failure at any step leaves at least one complete, verified copy, and readers find the
value throughout (invariant 2); a writer that changes the key during the move wins, and
the key is reported as not moved. Moving a key to the tier its current copy is already in
changes nothing and deletes nothing.

Promotion to HOT places a *cached copy* with a TTL and keeps the home copy: deleting
the home copy would leave an expiring copy as the only one, and an acknowledged
write must never be lost (invariant 1). Demotion to COLD is a real move: the COLD
copy becomes the home and the WARM and HOT copies are deleted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import IntegrityError, TierUnavailableError
from .base import StaleCopy, StateCategory, StoredValue, WriteRequest
from .checks import int_option, seconds_option
from .keys import validate_keys

if TYPE_CHECKING:
    from .coordinator import StateRepositoryCoordinator

__all__ = ["StateTierManager", "TierPromotionPolicy"]

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD
_SCAN_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class TierPromotionPolicy:
    """When values move between tiers.

    :param promote_after_accesses: a value read this many times within
        ``promotion_window_seconds`` gets a HOT copy when it is next read from below.
    :param promotion_window_seconds: the window for counting accesses.
    :param demote_after_idle_seconds: a WARM value neither read by this process nor
        written for this long is idle and may be demoted to COLD.
    :param hot_ttl_seconds: the TTL of HOT copies.
    :param auto_promote: False turns promotion on reads off.
    """

    promote_after_accesses: int = 5
    promotion_window_seconds: float = 60.0
    demote_after_idle_seconds: float = 30 * 24 * 3600.0
    hot_ttl_seconds: int = 3600
    auto_promote: bool = True

    def __post_init__(self) -> None:
        int_option("promote_after_accesses", self.promote_after_accesses)
        int_option("hot_ttl_seconds", self.hot_ttl_seconds)
        for name in ("promotion_window_seconds", "demote_after_idle_seconds"):
            seconds_option(name, getattr(self, name), optional=False)

    def should_promote(self, access_times: Sequence[float], now: float) -> bool:
        """True when ``access_times`` (monotonic, oldest first) holds enough recent accesses."""
        if not self.auto_promote or len(access_times) < self.promote_after_accesses:
            return False
        cutoff = now - self.promotion_window_seconds
        return access_times[-self.promote_after_accesses] > cutoff

    def is_idle(self, last_access: float | None, stored_at: float, now: float, wall: float) -> bool:
        """True when neither the last access (monotonic) nor the write (epoch) is recent."""
        if last_access is not None and now - last_access < self.demote_after_idle_seconds:
            return False
        return wall - stored_at >= self.demote_after_idle_seconds


class StateTierManager:
    """Promotion and demotion of values, one key or many at a time.

    :param coordinator: the coordinator whose tiers, cache, locks and health it uses.
    """

    def __init__(self, coordinator: StateRepositoryCoordinator) -> None:
        self.coordinator = coordinator
        self.policy = coordinator.policy

    def should_promote(self, key: str) -> bool:
        """True when ``key`` was read often enough recently to earn a HOT copy."""
        cache = self.coordinator.cache
        return self.policy.should_promote(cache.access_history(key), cache.clock())

    def auto_promote_if_needed(self, key: str) -> bool:
        """Promote ``key`` to HOT when the policy says so; True if a copy was placed."""
        return self.should_promote(key) and self.promote_to_hot(key)

    def promote_to_hot(self, key: str, *, ttl_seconds: int | None = None) -> bool:
        """Place a verified HOT copy of ``key``; False if absent or already in HOT."""
        return self.promote_many([key], ttl_seconds=ttl_seconds) == 1

    def demote_to_cold(self, key: str) -> bool:
        """Move ``key`` to COLD; False if absent or already in COLD."""
        return bool(self._demote(validate_keys([key])))

    def promote_many(self, keys: Sequence[str], *, ttl_seconds: int | None = None) -> int:
        """Place verified HOT copies of ``keys`` (one round trip per tier per chunk).

        A copy never replaces a value HOT got after the key was located (a HOT-home
        write numbers its value afresh, so even one with a lower version), and a copy
        whose source changed while it was placed is taken back (see :ref:`invalidation`).

        :returns: how many keys got a HOT copy.
        :raises TierUnavailableError: when the HOT tier is down.
        """
        keys = list(dict.fromkeys(validate_keys(keys)))
        coordinator = self.coordinator
        if not coordinator.hot_usable():
            raise TierUnavailableError(
                "hot", "The HOT tier is unavailable, so nothing can be promoted to it; retry later."
            )
        ttl = self.policy.hot_ttl_seconds if ttl_seconds is None else ttl_seconds
        with coordinator.locked(keys):
            located = coordinator.locate_many(keys)
            sources = [stored for category, stored in located.values() if category is not HOT]
            if not sources:
                return 0
            requests = [
                WriteRequest(s.key, s.value, version=s.metadata.version, ttl_seconds=ttl)
                for s in sources
            ]
            try:
                # located outside HOT: HOT lacked them, so whatever is there now is newer
                written = coordinator.place_copies(requests, where_absent=True)
                sources = [s for s in sources if s.key in written]
                verified = self._verified(HOT, sources, written) if sources else {}
                placed = [s for s in sources if s.key in verified]
            except TierUnavailableError as exc:
                coordinator.tier_failed(HOT, exc)
                raise
            count = len(placed) - coordinator.settle_hot_copies(placed)
            coordinator.count_movements("promotions", count)
            coordinator.announce([s.key for s in sources])
        return count

    def demote_many(self, keys: Sequence[str]) -> int:
        """Move ``keys`` to COLD: copy, verify, then delete the source at the version
        copied, and the copies above it.

        :returns: how many keys moved (keys already in COLD, absent, or changed by a writer
            during the move do not count).
        """
        return len(self._demote(validate_keys(keys)))

    def _demote(self, keys: Sequence[str]) -> list[str]:
        """Copy -> verify -> delete the source *at the version copied*.

        Another process may change a key between our read and our delete; a plain delete
        would then remove its acknowledged value. So the source goes only if it still is
        the copy moved (compare-and-delete), and a key whose source changed stays where
        it is, reported "not moved"; the COLD copy placed for it is taken back.
        """
        keys = list(dict.fromkeys(keys))
        coordinator = self.coordinator
        with coordinator.locked(keys):
            # Another process's change announced while we move must win in the cache too.
            token = coordinator.cache.fill_token()
            # Marked before the sources are read: a HOT-home write the marks miss wrote
            # its value before that read, so it is the value moved (see .tier_directory).
            coordinator.mark_lower_copies(keys, required=True)
            sources = self._move_sources(keys)
            if not sources:
                return []
            moving = [source for _, source in sources.values()]
            written = set(
                coordinator.cold.store_copies(
                    [WriteRequest(s.key, s.value, version=s.metadata.version) for s in moving]
                )
            )
            copies = self._verified(COLD, moving, written)
            moved: list[str] = []
            for tier in (WARM, HOT):
                group = [s for k, (t, s) in sources.items() if t is tier and k in copies]
                if group:
                    moved += coordinator.repositories.by_category(tier).delete_unchanged(group)
            done = set(moved)
            # A writer won: its value stays home; the copy we placed is older, take it back.
            lost = [s for s in moving if s.key in copies and s.key not in done]
            placed = [s for s in lost if s.key in written]
            if placed:
                coordinator.cold.delete_unchanged(placed)
            # Same version in the COLD copy from here on: a failure below leaves duplicates,
            # never a loss, and readers keep finding the value.
            above = {k: StaleCopy(copies[k].metadata.version + 1) for k in moved}
            under_hot = {k: f for k, f in above.items() if sources[k][0] is HOT}
            if under_hot:
                coordinator.drop_copies(WARM, under_hot)
            coordinator.cache.fill_many([copies[k] for k in moved], token)
            coordinator.cache.invalidate_many([s.key for s in lost])
            coordinator.drop_copies(
                HOT,
                {k: f for k, f in above.items() if sources[k][0] is WARM},
                announce=[*moved, *(s.key for s in lost)],
            )
            coordinator.count_movements("demotions", len(moved))
        return moved

    def _move_sources(self, keys: Sequence[str]) -> dict[str, tuple[StateCategory, StoredValue]]:
        """Each key's newest copy above COLD and its tier: the WARM record (a HOT copy of
        it is no source), or a HOT home; keys in neither are left out."""
        coordinator = self.coordinator
        hot = coordinator.fetch_tier(HOT, keys)
        warm = coordinator.fetch_tier(WARM, keys)
        sources: dict[str, tuple[StateCategory, StoredValue]] = {}
        for key in keys:
            in_hot, in_warm = hot.get(key), warm.get(key)
            if in_warm is not None and (
                in_hot is None or in_warm.metadata.version >= in_hot.metadata.version
            ):
                sources[key] = (WARM, in_warm)
            elif in_hot is not None:
                sources[key] = (HOT, in_hot)
        return sources

    def idle_keys(self, values: Sequence[StoredValue]) -> list[str]:
        """The keys among ``values`` that the policy considers idle."""
        cache = self.coordinator.cache
        now, wall = cache.clock(), time.time()
        idle = []
        for stored in values:
            history = cache.access_history(stored.key)
            last = history[-1] if history else None
            if self.policy.is_idle(last, stored.metadata.stored_at, now, wall):
                idle.append(stored.key)
        return idle

    def demote_idle(self, pattern: str = "*", *, limit: int | None = None) -> list[str]:
        """Demote idle WARM values matching ``pattern``, a chunk at a time.

        :returns: the keys moved to COLD.
        """
        demoted: list[str] = []
        chunk: list[str] = []
        for key in self.coordinator.warm.keys(pattern):
            chunk.append(key)
            if len(chunk) == _SCAN_CHUNK:
                demoted += self._demote_idle_chunk(chunk, limit, len(demoted))
                chunk = []
            if limit is not None and len(demoted) >= limit:
                return demoted
        if chunk:
            demoted += self._demote_idle_chunk(chunk, limit, len(demoted))
        return demoted

    def _demote_idle_chunk(self, keys: list[str], limit: int | None, done: int) -> list[str]:
        found = self.coordinator.warm.fetch_many(keys)
        idle = self.idle_keys(list(found.values()))
        if limit is not None:
            idle = idle[: max(0, limit - done)]
        return self._demote(idle) if idle else []

    def _verified(
        self, category: StateCategory, sources: Sequence[StoredValue], written: set[str]
    ) -> dict[str, StoredValue]:
        """The copies in ``category`` that read back exactly as their sources (checksum
        and version), by key.

        A copy that reads back otherwise is someone else's value (a writer or another
        move won the key meanwhile: not moved, nothing deleted), unless the tier still
        holds exactly the copy we wrote: then the read-back itself was wrong, the copy is
        deleted and :class:`IntegrityError` raised, leaving the sources.
        """
        repository = self.coordinator.repositories.by_category(category)
        copies = repository.fetch_many([s.key for s in sources])
        good: dict[str, StoredValue] = {}
        wrong: list[StoredValue] = []
        for source in sources:
            copy = copies.get(source.key)
            if copy is not None and (copy.metadata.version, copy.metadata.checksum) == (
                source.metadata.version,
                source.metadata.checksum,
            ):
                good[source.key] = copy
            elif source.key in written:
                wrong.append(source)
        damaged = repository.delete_unchanged(wrong) if wrong else []
        if damaged:
            raise IntegrityError(
                damaged[0],
                f"The {category} copy of {len(damaged)} key(s) did not read back with the "
                f"source's checksum and version (first: {damaged[0]!r}); the copies were "
                "deleted and the sources kept.",
                details={"keys": damaged[:100]},
            )
        return good

"""The read side of the coordinator: the waterfall cache -> HOT -> WARM -> COLD (one key
or many, skipping copies pending a drop) and the listing of keys across the tiers."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import IntegrityError, TierUnavailableError
from .base import ANY_COPY, StateCategory, StateRepository, StoredValue
from .coordinator_core import COLD, HOT, WARM
from .health import logger
from .hot_copies import HotCopyPlacement
from .keys import validate_pattern

__all__ = ["TierReads"]


class TierReads(HotCopyPlacement):
    """Reads down the tiers, filling the cache and placing HOT copies of hot values."""

    def read(self, key: str) -> StoredValue | None:
        """The value under ``key`` from the cache or the first tier that has it."""
        stored = self.cache.get_entry(key)
        return stored if stored is not None else self.read_through(key)

    def read_through(self, key: str, token: int | None = None) -> StoredValue | None:
        """Read below the cache (the caller already missed it), then fill the cache.

        :param token: the cache's :meth:`~.StateCache.fill_token`, taken at the miss.
        """
        cache = self.cache
        if token is None:
            token = cache.fill_token()
        found = self.locate(key)
        if found is None:
            return None
        category, stored = found
        policy = self.policy
        if category is HOT or not policy.auto_promote:
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

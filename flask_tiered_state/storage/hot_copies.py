"""HOT copies of values read from lower tiers: placing them (where absent), removing
those whose source changed meanwhile, and announcing changed keys to other processes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import TierUnavailableError
from .base import StateCategory, StoredValue, WriteRequest
from .coordinator_core import HOT, CoordinatorCore
from .health import logger

__all__ = ["HotCopyPlacement"]


class HotCopyPlacement(CoordinatorCore):
    """Places and settles the HOT copies the promotion policy asks for."""

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
                stored = self.place_copies(requests)
            except TierUnavailableError as exc:
                self.tier_failed(HOT, exc)
                return 0
            sources = [v for v in values if v.key in stored]
            placed = len(sources) - self.settle_hot_copies(sources)
        self.count_movements("auto_promotions", placed)
        return placed

    def place_copies(self, requests: Sequence[WriteRequest]) -> set[str]:
        """Write HOT copies where HOT lacks the key or holds an older version (never over
        a value as new or newer: a HOT home another process wrote meanwhile stays); the
        keys written."""
        return set(self.hot.store_copies(requests))

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

"""The write side of the coordinator: a write to the value's home tier (with the
compare-and-set of a key changing home), the drop of the copies it makes stale, and
deletes from every tier, bottom-up."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Sequence

from ..errors import ConcurrencyError, OutcomeUnknownError, TierUnavailableError
from .base import ANY_COPY, StaleCopy, StateCategory, StateMetadata, StoredValue
from .coordinator_core import COLD, HOT, WARM
from .tier_reads import TierReads

__all__ = ["DROPS", "HomeWrites", "stale_fence"]

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


class HomeWrites(TierReads):
    """Writes to home tiers, drops of stale copies and deletes."""

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
            try:
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
                [stored], category, also=moved_from, versioned=expected_version is not None
            )
        return stored

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
    ) -> None:
        """Refresh the cache with ``values`` and drop the copies that are now stale.

        The drops are fenced (:func:`stale_fence`): a copy newer than the write, which
        another process moved into a tier meanwhile, stays. A batch larger than the
        cache's scan threshold invalidates its keys instead of caching them. Call with the
        keys' locks held.

        :param versioned: the writes were compare-and-set (their versions go on from every
            copy); else they were last-writer-wins.
        """
        keys = [v.key for v in values]
        fences = {v.key: stale_fence(v, versioned=versioned) for v in values}
        stale = {*DROPS[home], *also} - {home}
        # With both WARM and COLD stale (a HOT home, which readers reach first), the two
        # drops do not depend on each other: COLD's runs on a worker while this thread
        # refreshes the cache and drops WARM's, so the write waits for the slower one only.
        cold_drop = None
        if COLD in stale and WARM in stale:
            context = contextvars.copy_context()
            cold_drop = self._drop_pool().submit(context.run, self.drop_copies, COLD, fences)
        try:
            if len(values) > self.cache.scan_threshold:
                self.cache.invalidate_many(keys)
            else:
                self.cache.set_many(values)
            if cold_drop is None and COLD in stale:
                self.drop_copies(COLD, fences)
            if WARM in stale:
                self.drop_copies(WARM, fences)
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

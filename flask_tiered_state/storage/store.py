"""The :class:`TieredStore` facade: JSON values under keys, across a cache and three tiers.

Values are JSON-serialisable Python values; the store serialises them canonically
(sorted keys, no spaces, UTF-8 text) so equal values have equal checksums in every
tier. :meth:`TieredStore.get` on a cache hit hands out a fresh copy of the value
without touching any tier.

When the HOT tier is Redis, the store keeps the caches of other processes (and other
stores) on the same Redis and key prefix in step with its changes through pub/sub
(:mod:`.invalidation`); otherwise only the cache's maximum age bounds how long a
change made elsewhere stays unseen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, InvalidRequestError, StateTooLargeError
from ..json_codec import dumps, loads
from .base import StateCategory, StateMetadata, StateRepositories, StoredValue
from .batch import StateBatchOperations
from .cache import MISSING, StateCache
from .checks import (
    as_category,
    check_optional_expected_version,
    check_optional_ttl,
    int_option,
    seconds_option,
)
from .coordinator import StateRepositoryCoordinator
from .deadlines import within_budget
from .health import JournalReplayer
from .instrumented import InstrumentedRepository
from .keys import validate_key, validate_pattern
from .tiering import StateTierManager, TierPromotionPolicy
from .transaction import Resolve, StoreTransaction, open_transaction

if TYPE_CHECKING:
    from ..observability.metrics import MetricsCollector
    from ..observability.slow import SlowOperationLog
    from .invalidation import CacheInvalidation  # imports redis-py, an extra
    from .tier_directory import TierDirectory  # imports redis-py too

__all__ = ["TieredStore"]


class TieredStore:
    """Get, set, delete and move JSON values across the cache and the HOT, WARM and COLD
    tiers.

    :param repositories: the repositories behind the tiers.
    :param cache: the in-process cache (default: 10,000 entries, 64 MiB).
    :param policy: promotion and demotion thresholds.
    :param metrics: a collector of repository call metrics; without one the
        repositories are called directly, at no cost.
    :param max_value_bytes: the largest serialised value accepted (None: no limit).
    :param invalidation: when the HOT tier is Redis, announce this store's changes to
        the caches of other stores on the same Redis and key prefix, and listen for
        theirs (a daemon thread, stopped by :meth:`close`). False: no messages and no
        thread; other processes' changes are then seen when cached values reach the
        cache's maximum age.
    :param call_timeout: the time budget of each call, every round trip included (see
        :mod:`.deadlines`); None: each round trip is bounded by its tier's own timeouts
        only.
    :param drop_replay_interval: with a Redis HOT tier, how often (seconds) the journal
        of drops that other processes could not do is replayed (see
        :mod:`.sql.journal`); None: only at start and when HOT recovers.
    :param slow_operations: logs and counts the repository calls slower than its
        threshold (see :mod:`~flask_tiered_state.observability.slow`); the manager
        reports its slow changes to it too. None: none.
    :param tier_directory: when the HOT tier is Redis, keep the tier directory
        (:mod:`.tier_directory`) so that a HOT-home write drops WARM and COLD copies
        only of keys that may have them; built at start by listing WARM and COLD when
        Redis lacks it. False: every HOT-home write drops in WARM and COLD.
    """

    def __init__(
        self,
        repositories: StateRepositories,
        *,
        cache: StateCache | None = None,
        policy: TierPromotionPolicy | None = None,
        metrics: MetricsCollector | None = None,
        max_value_bytes: int | None = None,
        initial_backoff: float = 0.5,
        max_backoff: float = 5.0,
        invalidation: bool = True,
        call_timeout: float | None = 10.0,
        drop_replay_interval: float | None = 1.0,
        slow_operations: SlowOperationLog | None = None,
        tier_directory: bool = True,
    ) -> None:
        if not isinstance(repositories, StateRepositories):
            raise ConfigurationError(
                "TieredStore needs a StateRepositories(hot=..., warm=..., cold=...), not "
                f"{type(repositories).__name__}."
            )
        for category in StateCategory:
            served = repositories.by_category(category).category
            if served is not category:
                raise ConfigurationError(
                    f"The repository given as the {category} tier serves the {served} tier; "
                    f"build it with category=StateCategory.{category.name}."
                )
        int_option("max_value_bytes", max_value_bytes, optional=True)
        self.cache = StateCache() if cache is None else cache
        self.policy = TierPromotionPolicy() if policy is None else policy
        if self.policy.promote_after_accesses > self.cache.history_length:
            raise ConfigurationError(
                f"promote_after_accesses ({self.policy.promote_after_accesses}) exceeds the "
                f"cache's history_length ({self.cache.history_length}); promotion could never "
                "trigger. Raise history_length or lower the threshold."
            )
        self.max_value_bytes = max_value_bytes
        #: Seconds each call (and each transaction) may take in all, its round trips
        #: included; past it :class:`~flask_tiered_state.errors.DeadlineExceededError`.
        self.call_timeout = seconds_option("call_timeout", call_timeout)
        seconds_option("drop_replay_interval", drop_replay_interval)
        self.metrics_collector = metrics
        #: Logs and counts the slow repository calls and changes (None: none).
        self.slow_operations = slow_operations
        used = repositories
        if metrics is not None or slow_operations is not None:
            used = StateRepositories(
                *(InstrumentedRepository(r, metrics, slow_operations) for r in repositories)
            )
        self.coordinator = StateRepositoryCoordinator(
            used,
            self.cache,
            policy=self.policy,
            raw_repositories=repositories,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
        )
        #: Which keys may have WARM or COLD copies, when HOT is Redis (else None).
        self.tier_directory: TierDirectory | None = None
        if tier_directory:
            self._attach_tier_directory(repositories)
        self.tier_manager = StateTierManager(self.coordinator)
        self.batch = StateBatchOperations(self.coordinator, self.tier_manager)
        #: The WARM repository itself (a SQLStateRepository in every built store).
        self.warm: Any = repositories.warm
        self._closed = False
        #: Cross-process cache invalidation, when the HOT tier is Redis (else None).
        self.invalidation: CacheInvalidation | None = None
        guard = self.coordinator.guard
        hot = repositories.hot
        if invalidation and hot.backend == "redis" and hasattr(hot, "delete_and_publish"):
            from .invalidation import CacheInvalidation  # imports redis-py, an extra

            self.invalidation = CacheInvalidation(hot, self.cache, on_subscribed=guard.recover_now)
            guard.publisher = self.invalidation.publisher
            self.invalidation.start()
        # Drops other processes could not do (and may never do: they died) are done from
        # the journal: now, and every drop_replay_interval while HOT is shared.
        guard.journal = getattr(repositories.warm, "journal", None)
        self._replayer: JournalReplayer | None = None
        if guard.journal is not None:
            guard.replay_journal()
            if drop_replay_interval is not None and guard.shared(StateCategory.HOT):
                self._replayer = JournalReplayer(guard.replay_journal, drop_replay_interval)
                self._replayer.start()

    def _attach_tier_directory(self, repositories: StateRepositories) -> None:
        hot = repositories.hot
        if hot.backend != "redis":
            return
        from .redis.repository import RedisStateRepository
        from .tier_directory import TierDirectory

        if not isinstance(hot, RedisStateRepository):
            return  # a wrapped or foreign Redis tier: the drop-everywhere path
        directory = TierDirectory(
            hot.client, hot.key_prefix, sources=(repositories.warm, repositories.cold)
        )
        hot.tier_directory = self.coordinator.directory = self.tier_directory = directory
        directory.ensure_ready()

    # -- values ----------------------------------------------------------------

    def encode(self, key: str, value: Any) -> str:
        """The canonical JSON text of ``value``, within ``max_value_bytes``."""
        try:
            text = dumps(value)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(
                f"The value for {key!r} is not JSON-serialisable ({exc}); values are dicts "
                "with string keys, lists, strings of valid Unicode, finite numbers, booleans "
                "and None.",
                details={"key": key},
            ) from exc
        limit = self.max_value_bytes
        if limit is not None and len(text) * 4 > limit:
            size = len(text.encode("utf-8"))
            if size > limit:
                raise StateTooLargeError(key, size, limit)
        return text

    # -- single keys -------------------------------------------------------------

    @within_budget
    def get(self, key: str, *, auto_promote: bool = True) -> Any:
        """The value under ``key`` (a fresh copy), or None.

        :param auto_promote: False: this read neither counts towards nor triggers the
            automatic promotion to HOT (see :class:`TierPromotionPolicy`).
        """
        validate_key(key)
        if type(auto_promote) is not bool:
            raise InvalidRequestError(
                f"auto_promote must be True or False, not {auto_promote!r}.",
                details={"auto_promote": repr(auto_promote)},
            )
        value, token = self.cache.lookup(key)
        if value is not MISSING:
            return value
        stored = self.coordinator.read_through(key, token, auto_promote=auto_promote)
        return None if stored is None else loads(stored.value)

    @within_budget
    def get_entry(self, key: str) -> StoredValue | None:
        """The stored JSON text and metadata under ``key``, or None."""
        return self.coordinator.read(validate_key(key))

    @within_budget
    def set(
        self,
        key: str,
        value: Any,
        *,
        category: StateCategory | str = StateCategory.WARM,
        ttl_seconds: int | None = None,
        expected_version: int | None = None,
    ) -> StateMetadata:
        """Write ``value`` to its home tier ``category`` before returning.

        :param ttl_seconds: expiry, for tiers that keep one (HOT homes).
        :param expected_version: compare-and-set: the key's current version (0: must
            not exist), checked in the home tier, or in the tier that holds the key while
            it is absent from its new home.
        :raises ConcurrencyError: the key is at another version.
        """
        validate_key(key)
        home = as_category(category)
        ttl = check_optional_ttl(ttl_seconds)
        expected = check_optional_expected_version(expected_version)
        text = self.encode(key, value)
        return self.coordinator.write(
            key, text, category=home, ttl_seconds=ttl, expected_version=expected
        ).metadata

    @within_budget
    def delete(self, key: str) -> bool:
        """Delete ``key`` from every tier; True if any tier had it."""
        return self.coordinator.delete(validate_key(key))

    @within_budget
    def keys(self, pattern: str = "*") -> list[str]:
        """Keys matching the glob ``pattern`` in any tier, de-duplicated and sorted."""
        return self.coordinator.keys(validate_pattern(pattern))

    @within_budget
    def promote_to_hot(self, key: str, *, ttl_seconds: int | None = None) -> bool:
        """Place a verified HOT copy of ``key`` (TTL: ``ttl_seconds`` or the policy's).

        :returns: False when the key is absent or already in HOT.
        """
        validate_key(key)
        return self.tier_manager.promote_to_hot(key, ttl_seconds=check_optional_ttl(ttl_seconds))

    @within_budget
    def demote_to_cold(self, key: str) -> bool:
        """Move ``key`` to COLD (copy, verify, delete above). False if absent or in COLD."""
        return self.tier_manager.demote_to_cold(validate_key(key))

    @within_budget
    def demote_idle(self, pattern: str = "*", *, limit: int | None = None) -> list[str]:
        """Demote the WARM values the policy calls idle; the keys moved."""
        return self.tier_manager.demote_idle(validate_pattern(pattern), limit=limit)

    # -- many keys ---------------------------------------------------------------

    @within_budget
    def batch_get(self, keys: Sequence[str]) -> dict[str, Any]:
        """The values present among ``keys`` (absent keys are left out)."""
        found = self.batch.batch_get(keys)
        return {key: loads(stored.value) for key, stored in found.items()}

    @within_budget
    def batch_set(
        self,
        items: Mapping[str, Any],
        *,
        category: StateCategory | str = StateCategory.WARM,
        ttl_seconds: int | None = None,
    ) -> dict[str, StateMetadata]:
        """Write every value to its home tier ``category`` (all or nothing where the tier
        has transactions)."""
        if not isinstance(items, Mapping):
            raise InvalidRequestError(
                f"batch_set takes a mapping of keys to values, not {type(items).__name__}."
            )
        home, ttl = as_category(category), check_optional_ttl(ttl_seconds)
        encode = self.encode
        texts = {key: encode(key, value) for key, value in items.items()}
        return self.batch.batch_set(texts, category=home, ttl_seconds=ttl)

    @within_budget
    def batch_delete(self, keys: Sequence[str]) -> int:
        """Delete ``keys`` from every tier; how many existed."""
        return self.batch.batch_delete(keys)

    @within_budget
    def batch_promote(self, keys: Sequence[str], *, ttl_seconds: int | None = None) -> int:
        """Place verified HOT copies of ``keys``; how many got one."""
        return self.batch.batch_promote(keys, ttl_seconds=check_optional_ttl(ttl_seconds))

    @within_budget
    def batch_demote(self, keys: Sequence[str]) -> int:
        """Move ``keys`` to COLD; how many moved."""
        return self.batch.batch_demote(keys)

    def transaction(
        self, *, resolve: Resolve | None = None
    ) -> AbstractContextManager[StoreTransaction]:
        """A unit of work on the WARM database; see :class:`StoreTransaction`.

        :param resolve: asked whether the transaction committed when its commit reply
            is lost (see :mod:`.transaction`).
        """
        return open_transaction(self, resolve=resolve)

    def close(self) -> None:
        """Stop listening for invalidations and close every repository (once)."""
        if self._closed:
            return
        self._closed = True
        if self.invalidation is not None:
            self.invalidation.stop()
        if self._replayer is not None:
            self._replayer.stop()
        self.coordinator.close()
        for repository in self.get_repositories():
            repository.close()

    # -- what the store reports ------------------------------------------------

    def get_repositories(self) -> StateRepositories:
        """The repositories behind the tiers, for direct access (backups, recovery)."""
        return self.coordinator.get_repositories()

    def _tier_rates(self, category: StateCategory) -> dict[str, Any]:
        hits = self.coordinator.tier_hits[category]
        misses = self.coordinator.tier_misses[category]
        return {"hits": hits, "misses": misses, "hit_rate": hits / (hits + misses or 1)}

    def check_tiers(self) -> dict[str, dict[str, Any]]:
        """Ask every tier now whether it answers (:meth:`~.health.TierGuard.check`) and
        report its health, keyed by tier name: ``backend``, ``available`` (it answers
        and the store uses it), ``failures`` (the failed checks and calls since it went
        down; 0 when available), ``degraded_for_seconds``, ``next_check_in_seconds``,
        ``last_error`` and ``pending_drops``.
        """
        guard = self.coordinator.guard
        report: dict[str, dict[str, Any]] = {}
        for repository in self.get_repositories():
            category = repository.category
            guard.check(category)
            health = guard.tier_report(category)
            available = health.pop("healthy")
            report[category.value] = {
                "backend": repository.backend, "available": available, **health
            }  # fmt: skip
        return report

    def stats(self) -> dict[str, Any]:
        """Per tier: backend, key count, bytes where cheap, hit rate and health; the cache.

        Each tier is checked first (:meth:`check_tiers`): ``available`` and
        ``health["healthy"]`` are the same answer, and a tier that does not answer has
        no figures but an ``error``.
        """
        tiers: dict[str, Any] = {}
        guard = self.coordinator.guard
        for repository in self.get_repositories():
            category = repository.category
            entry: dict[str, Any] = {"backend": repository.backend, "available": False}
            if guard.check(category):
                try:
                    entry.update(repository.stats().to_dict())
                except Exception as exc:  # a dead tier must not hide the others' figures
                    guard.failed(category, exc)
            health = guard.tier_report(category)
            entry["available"] = health["healthy"]
            if not health["healthy"]:
                entry["error"] = health["last_error"]
            entry.update(self._tier_rates(category), health=health)
            tiers[category.value] = entry
        return {
            "cache": self.cache.stats().to_dict(),
            "tiers": tiers,
            "movements": self.movements(),
            "invalidation": self.invalidation_stats(),
        }

    def movements(self) -> dict[str, int]:
        """Keys moved by this store since it was built: ``promotions`` (asked for),
        ``auto_promotions`` (HOT copies placed on frequent reads) and ``demotions``."""
        coordinator = self.coordinator
        with coordinator._counts_lock:
            return dict(coordinator.movements)

    def invalidation_stats(self) -> dict[str, Any]:
        """The state of cross-process invalidation (``enabled`` False without it)."""
        invalidation = self.invalidation
        if invalidation is None:
            return {"enabled": False}
        return {"enabled": True, **invalidation.stats()}

    def metrics(self) -> dict[str, Any]:
        """Cache counters, per-tier hit rates, movements, invalidation and the
        collector's figures (if any)."""
        collector = self.metrics_collector
        return {
            "cache": self.cache.stats().to_dict(),
            "tiers": {c.value: self._tier_rates(c) for c in StateCategory},
            "movements": self.movements(),
            "invalidation": self.invalidation_stats(),
            "repositories": {} if collector is None else collector.snapshot(),
        }

    def __enter__(self) -> TieredStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        backends = "/".join(r.backend for r in self.get_repositories())
        return f"<TieredStore {backends}>"

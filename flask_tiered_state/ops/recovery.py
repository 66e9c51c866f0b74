"""Recovery of critical keys into HOT, by hand or when Redis restarts empty.

A Redis restart without persistence leaves the HOT tier empty: reads of WARM-home
records go on (from WARM, slower), but what an application wants served from memory at
once -- positions, risk limits, the states its hot paths read -- is cold until each key
is read often enough to be promoted again. :class:`RecoveryHandler` puts them back in one
pass, through direct tier access:

1. the *critical* keys are found in every tier: globs of ``*`` and ``?`` over store keys
   (``"position:*"``, ``"risk_limits"``; a state is ``"state:<id>"``), with the
   tiers' ``keys``;
2. their copies are read in chunks, WARM first, then COLD for what WARM lacks
   (``fetch_many``, which verifies each value against its checksum; a chunk holding a
   corrupt copy is read again key by key, and the corrupt copy is reported and skipped
   for the next tier's);
3. the newest verified copy of each key HOT lacks (or holds at an older version) is
   placed in HOT -- with the version carried over and the HOT TTL, one round trip per
   chunk: only where HOT still lacks the key for a key it lacked (``add_copies``: a
   HOT-home write made meanwhile is numbered afresh, maybe below the copy), never over a
   value as new or newer for a key it held older (``store_copies``) -- and read back: a copy
   counts as recovered when HOT holds it with the source's version and checksum. Given
   the manager, the copies are placed as the store places its promotions (under the
   keys' locks, re-checked against their sources afterwards, other processes' caches
   told), so a write racing with the recovery always wins.

The :class:`RecoveryReport` says what was recovered and from which tier, what was in HOT
already, and what could not be: names found in no tier (``missing``), patterns that
matched nothing, corrupt copies. A HOT-home record (a session) lost with Redis is in no
other tier: it is reported missing when named, and comes back only from a checkpoint
(:meth:`~.capture.StateCapture.restore_checkpoint` with ``tiers=["hot"]``).

**Automatically.** :meth:`RecoveryHandler.watch` starts a daemon thread that reads the
Redis server's ``run_id`` (``INFO server``) every ``interval`` seconds: a new run id is
a restarted server, and the recovery runs at once (a server that was unreachable and
answers again with the same run id kept its data: nothing to do). With the Flask
extension: ``TIERED_STATE_RECOVER_ON_HOT_RESTART = True`` and
``TIERED_STATE_CRITICAL_KEYS = [...]``. Every process watching the same Redis recovers;
placing copies is idempotent, so they only repeat each other's reads.

.. versionadded:: 0.15
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, InvalidRequestError, TieredStateError
from ..storage.base import (
    StateCategory,
    StateRepositories,
    StateRepository,
    StoredValue,
    WriteRequest,
    fetch_readable,
)
from ..storage.coordinator import store_hot_copies
from ..storage.keys import validate_pattern

if TYPE_CHECKING:
    from ..domain.manager import StateManager

__all__ = [
    "HotRestartWatcher",
    "RecoveryHandler",
    "RecoveryReport",
    "check_recovery_settings",
    "critical_keys_setting",
]

logger = logging.getLogger("flask_tiered_state.ops.recovery")

HOT, WARM, COLD = StateCategory.HOT, StateCategory.WARM, StateCategory.COLD
#: Keys listed per kind in a report, at most (the counts are always whole).
_LISTED = 1000


def _is_glob(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


@dataclass
class RecoveryReport:
    """What :meth:`RecoveryHandler.recover_critical_state` did (or, in a dry run, would do).

    ``recovered``: key -> the tier its HOT copy came from (``would_recover`` in a dry
    run); ``already_hot``: keys HOT held at the newest version; ``missing``: names found
    in no tier; ``unmatched``: patterns with wildcards that matched nothing; ``corrupt``:
    copies that failed their checksum (``{"key", "tier"}``); ``superseded``: keys written
    while the recovery ran (their newer value stays, no copy was placed).
    """

    patterns: list[str]
    dry_run: bool
    recovered: dict[str, str] = field(default_factory=dict)
    already_hot: int = 0
    missing: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    corrupt: list[dict[str, str]] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    by_tier: dict[str, int] = field(default_factory=lambda: {"warm": 0, "cold": 0})
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every critical key is in HOT (or would be): none missing or corrupt
        without a good copy elsewhere."""
        return not self.missing and not self.failed_keys

    @property
    def failed_keys(self) -> list[str]:
        """Keys with a corrupt copy and no good one recovered or already in HOT."""
        done = set(self.recovered)
        return sorted({c["key"] for c in self.corrupt} - done - self._hot_keys)

    _hot_keys: set[str] = field(default_factory=set, repr=False, init=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "patterns": list(self.patterns),
            "dry_run": self.dry_run,
            "ok": self.ok,
            "counts": {
                "recovered": len(self.recovered),
                "already_hot": self.already_hot,
                "missing": len(self.missing),
                "unmatched": len(self.unmatched),
                "corrupt": len(self.corrupt),
                "superseded": len(self.superseded),
            },
            "by_tier": dict(self.by_tier),
            "recovered": dict(list(self.recovered.items())[:_LISTED]),
            "missing": self.missing[:_LISTED],
            "unmatched": list(self.unmatched),
            "corrupt": self.corrupt[:_LISTED],
            "failed": self.failed_keys[:_LISTED],
            "superseded": self.superseded[:_LISTED],
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        verb = "would place" if self.dry_run else "placed"
        copies = "HOT copy" if len(self.recovered) == 1 else "HOT copies"
        parts = [
            f"{verb} {len(self.recovered)} {copies} ({self.by_tier['warm']} from warm, "
            f"{self.by_tier['cold']} from cold)",
            f"{self.already_hot} already in HOT",
        ]
        if self.missing:
            parts.append(f"{len(self.missing)} missing everywhere")
        if self.unmatched:
            parts.append(f"{len(self.unmatched)} patterns matched nothing")
        if self.corrupt:
            parts.append(f"{len(self.corrupt)} corrupt copies")
        if self.superseded:
            parts.append(f"{len(self.superseded)} written meanwhile")
        return "; ".join(parts) + f" in {self.seconds:.3f} s"


class RecoveryHandler:
    """Places verified HOT copies of the critical keys (see the module).

    :param repositories: the tiers, read directly (a manager's ``get_repositories()``).
    :param critical: globs over store keys: what :meth:`recover_critical_state` recovers
        when given no patterns.
    :param manager: the manager of those tiers: copies are then placed through its store
        (locks, re-check, cross-process invalidation) and the TTL is its HOT TTL.
    :param hot_ttl_seconds: the TTL of the copies placed (default: the store's promotion
        TTL with a manager, else 3600).
    :param chunk_size: keys per round trip.
    """

    def __init__(
        self,
        repositories: StateRepositories,
        critical: Iterable[str] = (),
        *,
        manager: StateManager | None = None,
        hot_ttl_seconds: int | None = None,
        chunk_size: int = 1000,
    ) -> None:
        if not isinstance(repositories, StateRepositories):
            raise ConfigurationError(
                "RecoveryHandler needs the StateRepositories of the tiers (a manager's "
                f"get_repositories()), not {type(repositories).__name__}."
            )
        self.critical = check_patterns(critical, what="critical")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigurationError(
                f"chunk_size must be a whole number of at least 1, not {chunk_size!r}."
            )
        if hot_ttl_seconds is not None and (
            isinstance(hot_ttl_seconds, bool)
            or not isinstance(hot_ttl_seconds, int)
            or hot_ttl_seconds < 1
        ):
            raise ConfigurationError(
                f"hot_ttl_seconds must be whole seconds of at least 1, not {hot_ttl_seconds!r}."
            )
        if manager is not None and not hasattr(manager, "store"):
            raise ConfigurationError(
                f"manager must be a StateManager (or None), not {type(manager).__name__}."
            )
        if hot_ttl_seconds is None:
            policy = getattr(getattr(manager, "store", None), "policy", None)
            hot_ttl_seconds = int(getattr(policy, "hot_ttl_seconds", 3600))
        self.repositories = repositories
        self.manager = manager
        self.hot_ttl_seconds = hot_ttl_seconds
        self.chunk_size = chunk_size

    @classmethod
    def for_manager(
        cls, manager: StateManager, critical: Iterable[str] = (), **options: Any
    ) -> RecoveryHandler:
        """The handler of ``manager``'s tiers."""
        return cls(manager.get_repositories(), critical, manager=manager, **options)

    # -- the recovery ----------------------------------------------------------------

    def recover_critical_state(
        self, patterns: Iterable[str] | None = None, *, dry_run: bool = False
    ) -> RecoveryReport:
        """Place verified HOT copies of every key matching ``patterns`` (default: the
        ``critical`` ones) that HOT lacks or holds at an older version.

        :param dry_run: find and verify, but place nothing.
        :raises InvalidRequestError: no patterns, or a bad one.
        :raises TierUnavailableError: HOT (or the tier a chunk is read from) is down.
        """
        if self.manager is not None:
            self.manager.authorize("recovery.run")
        chosen = self.critical if patterns is None else check_patterns(patterns, what="patterns")
        if not chosen:
            raise InvalidRequestError(
                "No critical keys to recover: give patterns (globs over store keys, e.g. "
                "'position:*', 'state:account-*') or set TIERED_STATE_CRITICAL_KEYS."
            )
        if type(dry_run) is not bool:
            raise InvalidRequestError(f"dry_run must be True or False, not {dry_run!r}.")
        started = time.perf_counter()
        report = RecoveryReport(list(chosen), dry_run)
        present = {c: self._keys(c, chosen) for c in (WARM, COLD, HOT)}
        for pattern in chosen:
            if not any(_matches_any(pattern, present[c]) for c in present):
                (report.unmatched if _is_glob(pattern) else report.missing).append(pattern)
        below = sorted(present[WARM] | present[COLD])
        report.already_hot += len(present[HOT] - set(below))
        for start in range(0, len(below), self.chunk_size):
            self._recover_chunk(below[start : start + self.chunk_size], present, report)
        report.seconds = time.perf_counter() - started
        return report

    def _keys(self, category: StateCategory, patterns: Sequence[str]) -> set[str]:
        repository = self.repositories.by_category(category)
        found: set[str] = set()
        for pattern in patterns:
            found.update(repository.keys(pattern))
        return found

    def _fetch(
        self, repository: StateRepository, keys: Sequence[str], report: RecoveryReport
    ) -> dict[str, StoredValue]:
        if not keys:
            return {}
        return fetch_readable(
            repository,
            keys,
            lambda key: report.corrupt.append({"key": key, "tier": repository.category.value}),
        )

    def _recover_chunk(
        self, keys: list[str], present: dict[StateCategory, set[str]], report: RecoveryReport
    ) -> None:
        hot = self.repositories.hot
        corrupt_before = {c["key"] for c in report.corrupt}
        in_hot = self._fetch(hot, [k for k in keys if k in present[HOT]], report)
        broken_hot = [
            c["key"] for c in report.corrupt
            if c["tier"] == HOT.value and c["key"] not in corrupt_before
        ]  # fmt: skip
        sources = self._fetch(
            self.repositories.warm, [k for k in keys if k in present[WARM]], report
        )
        for key, stored in self._fetch(
            self.repositories.cold, [k for k in keys if k in present[COLD]], report
        ).items():
            if key not in sources or stored.metadata.version > sources[key].metadata.version:
                sources[key] = stored
        wanted: list[StoredValue] = []
        for key in keys:
            source = sources.get(key)
            if source is None:
                continue  # every copy below was corrupt: reported
            copy = in_hot.get(key)
            if copy is not None and copy.metadata.version >= source.metadata.version:
                report.already_hot += 1
                report._hot_keys.add(key)
                continue
            wanted.append(source)
        if report.dry_run:
            for source in wanted:
                self._count(report, source)
            return
        if broken_hot:
            # A corrupt HOT copy would block the placing of a good one at its version.
            hot.delete_many(broken_hot)
        if not wanted:
            return
        self._place(wanted, absent={s.key for s in wanted if s.key not in in_hot})
        placed = hot.fetch_many([s.key for s in wanted])
        for source in wanted:
            copy = placed.get(source.key)
            if copy is not None and (copy.metadata.version, copy.metadata.checksum) == (
                source.metadata.version,
                source.metadata.checksum,
            ):
                self._count(report, source)
            else:
                report.superseded.append(source.key)

    @staticmethod
    def _count(report: RecoveryReport, source: StoredValue) -> None:
        tier = source.metadata.category.value
        report.recovered[source.key] = tier
        report.by_tier[tier] = report.by_tier.get(tier, 0) + 1

    def _place(self, sources: Sequence[StoredValue], *, absent: set[str]) -> None:
        """Place HOT copies of ``sources``: over an older version where HOT held one, and
        only where HOT still lacks the key for the keys in ``absent`` (HOT lacked them
        when looked at: a value there now was written meanwhile, and a HOT-home write
        numbers its value afresh, so its version may be below the copy's)."""
        ttl = self.hot_ttl_seconds
        requests = [
            WriteRequest(s.key, s.value, version=s.metadata.version, ttl_seconds=ttl)
            for s in sources
        ]
        fresh = [r for r in requests if r.key in absent]
        older = [r for r in requests if r.key not in absent]
        store = None if self.manager is None else getattr(self.manager, "store", None)
        coordinator = getattr(store, "coordinator", None)
        if coordinator is None:
            store_hot_copies(self.repositories.hot, fresh, where_absent=True)
            store_hot_copies(self.repositories.hot, older, where_absent=False)
            return
        keys = [s.key for s in sources]
        with coordinator.locked(keys):
            written = coordinator.place_copies(fresh, where_absent=True)
            written |= coordinator.place_copies(older)
            coordinator.settle_hot_copies([s for s in sources if s.key in written])
            coordinator.announce(keys)

    # -- watching for a restarted Redis ------------------------------------------------

    def watch(self, interval: float = 1.0) -> HotRestartWatcher:
        """Start a :class:`HotRestartWatcher` that runs :meth:`recover_critical_state`
        when the HOT Redis restarts; it stops with :meth:`HotRestartWatcher.stop`, or by
        itself once the manager is closed.

        :raises ConfigurationError: the HOT tier is not Redis, or no critical keys.
        """
        watcher = HotRestartWatcher(self, interval=interval)
        watcher.start()
        return watcher


def check_patterns(patterns: Iterable[str], *, what: str) -> list[str]:
    """``patterns`` as a list of valid globs, each once, in order."""
    if isinstance(patterns, str) or not isinstance(patterns, Iterable):
        raise InvalidRequestError(
            f"{what} must be a list of globs over store keys (e.g. ['position:*', "
            f"'risk_limits']), not {patterns!r}."[:300]
        )
    return list(dict.fromkeys(validate_pattern(p) for p in patterns))


def _matches_any(pattern: str, keys: set[str]) -> bool:
    if not _is_glob(pattern):
        return pattern in keys
    from ..storage.keys import glob_to_regex

    regex = glob_to_regex(pattern)
    return any(regex.fullmatch(k) for k in keys)


class HotRestartWatcher:
    """A daemon thread that notices a restarted Redis (a new ``run_id`` in ``INFO
    server``) and runs the handler's recovery (see the module).

    :param handler: the recovery to run.
    :param interval: seconds between two looks at the server.
    """

    def __init__(self, handler: RecoveryHandler, *, interval: float = 1.0) -> None:
        client = getattr(handler.repositories.hot, "client", None)
        if handler.repositories.hot.backend != "redis" or client is None:
            raise ConfigurationError(
                "Recovering on a HOT restart needs a Redis HOT tier (TIERED_STATE_HOT_URL = "
                f"'redis://...'); this HOT tier is {handler.repositories.hot.backend}."
            )
        if not handler.critical:
            raise ConfigurationError(
                "Recovering on a HOT restart needs critical keys to recover: set "
                "TIERED_STATE_CRITICAL_KEYS (or RecoveryHandler(critical=[...]))."
            )
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise ConfigurationError(f"interval must be positive seconds, not {interval!r}.")
        self.interval = float(interval)
        self._client = client
        self._handler = handler
        self._stop = threading.Event()
        #: The run id of the Redis server last seen (None: not reachable yet).
        self.run_id: str | None = self._read_run_id()
        #: How many recoveries ran, and the last one's report.
        self.recoveries = 0
        self.last_report: RecoveryReport | None = None
        self.last_error: str | None = None
        self._thread = threading.Thread(
            target=_watch_loop,
            args=(self, self._stop, self.interval),
            name="tiered-state-hot-restart",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _read_run_id(self) -> str | None:
        try:
            info = self._client.info("server")
        except Exception:  # any redis-py error: the server is not reachable now
            return None
        run_id = info.get("run_id")
        if isinstance(run_id, bytes):
            run_id = run_id.decode("ascii", "replace")
        return None if run_id is None else str(run_id)

    def check(self) -> RecoveryReport | None:
        """Look at the server once; run the recovery when it restarted since the last
        look (or first answered now). Its report, or None."""
        manager = self._handler.manager
        if manager is not None and getattr(manager, "closed", False):
            self._stop.set()
            return None
        current = self._read_run_id()
        if current is None or current == self.run_id:
            return None
        previous, self.run_id = self.run_id, current
        logger.warning(
            "The HOT Redis restarted (run id %s, was %s): recovering the critical keys %s.",
            current,
            previous,
            ", ".join(self._handler.critical),
        )
        try:
            report = self._handler.recover_critical_state()
        except TieredStateError as exc:
            self.last_error = exc.message
            self.run_id = previous  # try again at the next look
            logger.error("Recovering the critical keys after a HOT restart failed: %s", exc)
            return None
        self.recoveries += 1
        self.last_report, self.last_error = report, None
        level = logging.WARNING if not report.ok else logging.INFO
        logger.log(level, "Recovery after the HOT restart: %s.", report.summary())
        return report


def _watch_loop(watcher: HotRestartWatcher, stop: threading.Event, interval: float) -> None:
    # The thread keeps its watcher: it runs until stop() or its manager's close().
    while not stop.wait(interval):
        try:
            watcher.check()
        except Exception:  # the thread must survive anything
            logger.exception("Watching the HOT Redis for restarts failed.")


def critical_keys_setting(key: str, value: object) -> list[str]:
    """``TIERED_STATE_CRITICAL_KEYS``: a list of globs over store keys (from the
    environment: a JSON list, or the globs separated by commas)."""
    given = value
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    expected = (
        "a list of globs over store keys of 1 to 255 characters (e.g. ['position:*', "
        "'risk_limits', 'state:account-*'])"
    )
    failure = ConfigurationError(
        f"{key} is {given!r}; expected {expected}.",
        details={"key": key, "value": repr(given), "expected": expected},
    )
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise failure
    try:
        return check_patterns(value, what=key)
    except TieredStateError:
        raise failure from None


def check_recovery_settings(key: str, enabled: bool, critical: Sequence[str], hot_url: str) -> None:
    """``TIERED_STATE_RECOVER_ON_HOT_RESTART`` needs critical keys and a Redis HOT tier."""
    if not enabled:
        return
    if not critical:
        raise ConfigurationError(
            f"{key} = True needs the keys to recover: set TIERED_STATE_CRITICAL_KEYS (globs "
            "over store keys, e.g. ['position:*', 'risk_limits'])."
        )
    if not hot_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            f"{key} = True watches a Redis HOT tier for restarts; TIERED_STATE_HOT_URL is "
            f"{hot_url!r}. Set a redis:// URL, or leave {key} False."
        )

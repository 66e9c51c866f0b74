"""The health of one tier: healthy, or degraded with an exponential backoff clock that
says when to check it again (only one thread runs a due check)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["TierHealth", "logger"]

logger = logging.getLogger("flask_tiered_state.storage")


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

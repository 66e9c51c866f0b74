"""Per-type quotas: the most live (not deleted) states a type may hold.

A type's quota is its ``max_states`` (:meth:`StateManager.register_state_type
<flask_tiered_state.domain.manager.StateManager.register_state_type>`; the default is
``TIERED_STATE_MAX_STATES_PER_TYPE``, None: no quota). A registration that would take a
type past it raises :class:`~flask_tiered_state.errors.QuotaExceededError` (409
``quota_exceeded``) and writes nothing; updates, transitions and rollbacks of existing
states are never refused.

How states are counted -- cheaply, hence approximately:

- **WARM-home types**: a count of the type's records in the WARM database (one
  containment query, served by the GIN index on PostgreSQL), kept by each process for
  up to :data:`REFRESH_SECONDS` and adjusted by its own registrations and deletions;
  it is counted again at once when the kept count says the quota is reached. Under
  concurrent registrations the quota is a check-then-insert: it may be passed by
  what other processes register within that second, and by registrations racing
  each other.
- **HOT-home types** (sessions) and COLD-home types: counted per process, the states
  this process registered or changed and that have not expired (their hot TTL) or been
  deleted. That is exact for the embedded HOT tier (process memory, which is the
  resource the quota protects there); with a HOT tier shared by several processes
  (Redis) each process holds the quota on its own.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable

from ..errors import QuotaExceededError
from ..storage.base import StateCategory
from .model import StateStatus, StateTransition
from .registry import StateTypeSpec

__all__ = ["REFRESH_SECONDS", "StateQuotas"]

#: How long a process keeps a WARM-home type's count before it counts again.
REFRESH_SECONDS = 1.0


class _Tracked:
    """The live states of one type this process knows: id -> expiry, and a heap of
    expiries to drop the expired ones in O(log n)."""

    __slots__ = ("expiries", "heap")

    def __init__(self) -> None:
        self.expiries: dict[str, float] = {}
        self.heap: list[tuple[float, str]] = []

    def live(self, now: float) -> int:
        heap, expiries = self.heap, self.expiries
        while heap and heap[0][0] <= now:
            expires, state_id = heapq.heappop(heap)
            if expiries.get(state_id) == expires:
                del expiries[state_id]
        if len(heap) > 2 * len(expiries) + 64:  # superseded expiries: rebuild
            self.heap = [(e, i) for i, e in expiries.items()]
            heapq.heapify(self.heap)
        return len(expiries)

    def set(self, state_id: str, expires: float) -> None:
        self.expiries[state_id] = expires
        heapq.heappush(self.heap, (expires, state_id))

    def drop(self, state_id: str) -> None:
        self.expiries.pop(state_id, None)


class StateQuotas:
    """The quota checks of one manager (see the module doc).

    :param count_warm: ``count_warm(type_name)``: the live states of a WARM-home type.
    :param clock: monotonic seconds, injectable for tests.
    """

    def __init__(
        self,
        count_warm: Callable[[str], int],
        *,
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._count_warm = count_warm
        self._refresh = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._warm: dict[str, tuple[int, float]] = {}
        self._tracked: dict[str, _Tracked] = {}

    def check(self, spec: StateTypeSpec, adding: int = 1) -> None:
        """Refuse ``adding`` new states of ``spec``'s type past its quota.

        :raises QuotaExceededError: naming the type, its quota and its count.
        """
        limit = spec.max_states
        if limit is None or adding <= 0:
            return
        now = self._clock()
        if spec.home_tier is StateCategory.WARM:
            with self._lock:
                kept = self._warm.get(spec.name)
            if kept is not None and now - kept[1] < self._refresh and kept[0] + adding <= limit:
                return
            count = self._count_warm(spec.name)
            with self._lock:
                self._warm[spec.name] = (count, now)
        else:
            with self._lock:
                tracked = self._tracked.get(spec.name)
                count = 0 if tracked is None else tracked.live(now)
        if count + adding > limit:
            raise QuotaExceededError(spec.name, limit, count)

    def committed(
        self,
        spec: StateTypeSpec,
        transition: StateTransition,
        record: dict[str, object],
        ttl_seconds: int | None,
    ) -> None:
        """Account for a committed change of a state of ``spec``'s type."""
        if spec.max_states is None:
            return
        deleted = record.get("status") == StateStatus.DELETED.value
        with self._lock:
            if spec.home_tier is StateCategory.WARM:
                kept = self._warm.get(spec.name)
                if kept is not None and transition in (
                    StateTransition.CREATE,
                    StateTransition.DELETE,
                ):
                    step = 1 if transition is StateTransition.CREATE else -1
                    self._warm[spec.name] = (max(0, kept[0] + step), kept[1])
                return
            tracked = self._tracked.setdefault(spec.name, _Tracked())
            state_id = str(record["state_id"])
            if deleted:
                tracked.drop(state_id)
            else:
                ttl = ttl_seconds if spec.home_tier is StateCategory.HOT else None
                tracked.set(state_id, math.inf if ttl is None else self._clock() + ttl)

"""The keys whose copy in one tier is stale (a newer write could not drop it): readers
skip those copies until they are deleted, so a stale copy is never served.

Each key keeps the :class:`~.base.StaleCopy` fence of the write that made its copy
stale: the delayed drop deletes only a copy the fence calls stale, so a value another
process wrote or moved into the tier once it came back (a HOT home, a newer copy)
survives it."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from .base import StaleCopy

__all__ = ["PendingDrops"]


class PendingDrops:
    """Keys whose copy in one tier is stale and must not be read, until deleted.

    :param limit: the most keys remembered (None: no limit). Past it the set is
        cleared and :attr:`overflowed` is set; the owner must then reconcile the
        whole tier before trusting it again.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._fences: dict[str, StaleCopy] = {}
        self.overflowed = False

    def __contains__(self, key: object) -> bool:
        # Dict membership is atomic under the GIL and internally locked without it.
        return key in self._fences

    def __len__(self) -> int:
        return len(self._fences)

    def __bool__(self) -> bool:
        return bool(self._fences) or self.overflowed

    def add(self, fences: Mapping[str, StaleCopy], *, transient: bool = False) -> bool:
        """Remember ``fences`` (a later write's fence replaces an earlier one); False
        when that overflowed the limit.

        ``transient`` marks keys whose drop is about to be attempted (they are removed
        again right after); those never count against the limit.
        """
        with self._lock:
            # Writes of one key are serialised: the fence added last is the latest write's.
            known = self._fences
            known.update(fences)
            if transient or self.limit is None or len(known) <= self.limit:
                return True
            known.clear()
            self.overflowed = True
            return False

    def clear_overflow(self) -> None:
        with self._lock:
            self.overflowed = False

    def discard(self, fences: Mapping[str, StaleCopy] | Iterable[str]) -> None:
        """Forget keys once dropped; given fences, only where no later fence came since."""
        with self._lock:
            known = self._fences
            if isinstance(fences, Mapping):
                for key, fence in fences.items():
                    if known.get(key) == fence:
                        del known[key]
                return
            for key in fences:
                known.pop(key, None)

    def snapshot(self) -> dict[str, StaleCopy]:
        """Each key with the fence its drop must apply."""
        with self._lock:
            return dict(self._fences)

"""The tier directory: which keys have (or may have) a copy in WARM or COLD.

A write whose home is HOT must not let an older WARM or COLD copy of its key resurface
once the HOT value expires, so it drops those copies; but most HOT-home keys (sessions)
never had one, and looking costs a conditional ``DELETE`` in SQL and an S3 listing. The
directory, kept in Redis next to the HOT values, answers "may this key have a lower
copy?" in the round trip of the HOT write itself; the drops run only for the keys it
marks.

It is a bitmap (one Redis string of ``2**bits`` bits, 2 MiB by default): a key marks the
bit its CRC-32 selects. Two keys may share a bit, so a mark means "may have a copy" and
costs a never-moved key only today's drops; the memory stays the same however many keys
are marked, and marks are never removed. Bit 0 says the directory is *ready*: a missing
bitmap (never built, evicted, flushed) reads as not ready, and every HOT-home write then
drops everywhere, as without a directory.

The rule that keeps it right: every operation that makes a lower copy marks its key
*before* the copy can be read (WARM and COLD home writes, store transactions, tier moves,
demotions), and a HOT-home write reads the marks *after* its value is in Redis (the same
pipeline). So a key unmarked at that read had no lower copy when the HOT value was
written, and a copy made later comes from an operation that began after the write.
A directory that is not ready is rebuilt (:meth:`TierDirectory.rebuild`) by listing WARM
and COLD; the marks made meanwhile by writers cover what the listing misses.
"""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from redis.exceptions import RedisError

from ..errors import ConfigurationError, TierUnavailableError
from .health import logger

__all__ = ["DirectoryAnswer", "TierDirectory", "consulted"]

#: Bit 0: the directory is ready; bit 1: a rebuild is under way. Keys use bits 8 and up.
_READY, _REBUILDING, _FIRST = 0, 1, 8
_CHUNK = 1000
#: Seconds between two rebuilds started because a write found the directory not ready.
REBUILD_INTERVAL = 60.0

#: KEYS[1]: the bitmap; ARGV: one bit offset per key. Returns 0 when the directory is not
#: ready, else the bit of each key (1: may have a lower copy).
CHECK_LUA = r"""
local dir = KEYS[1]
if redis.call('GETBIT', dir, 0) == 0 then return 0 end
local out = {}
for i = 1, #ARGV do out[i] = redis.call('GETBIT', dir, ARGV[i]) end
return out
"""

#: KEYS[1]: the bitmap, KEYS[2]: the rebuild lock; ARGV[1]: the lock's nonce. Sets the
#: ready bit when the rebuild still holds the lock and the bitmap was not lost meanwhile.
_FINISH_LUA = r"""
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('GETBIT', KEYS[1], 1) == 0 then return 0 end
redis.call('SETBIT', KEYS[1], 0, 1)
redis.call('SETBIT', KEYS[1], 1, 0)
redis.call('DEL', KEYS[2])
return 1
"""

_RELEASE_LUA = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class DirectoryAnswer:
    """What the directory said during one HOT write: the keys that may have a lower
    copy, or no answer (a check not made, or the directory not ready: drop everywhere)."""

    __slots__ = ("directory", "marked", "ready")

    def __init__(self, directory: TierDirectory) -> None:
        self.directory = directory
        #: None: nothing checked yet; False: some write went unchecked or unanswered.
        self.ready: bool | None = None
        self.marked: set[str] = set()

    def record(self, keys: Sequence[str], reply: Any) -> None:
        """Take one check reply (:data:`CHECK_LUA`) for ``keys``."""
        if not reply:
            self.ready = False
            self.directory.not_ready()
            return
        if self.ready is None:
            self.ready = True
        self.marked.update(k for k, bit in zip(keys, reply, strict=True) if int(bit))

    def unchecked(self) -> None:
        """A write went without a check: no answer for this write."""
        self.ready = False

    def marked_keys(self) -> set[str] | None:
        """The keys to drop lower copies of; None: every key (no answer)."""
        return self.marked if self.ready else None


_CONSULTING: contextvars.ContextVar[DirectoryAnswer | None] = contextvars.ContextVar(
    "tiered_state_directory", default=None
)


def consulted() -> DirectoryAnswer | None:
    """The answer a HOT write in progress on this thread must fill (None: none)."""
    return _CONSULTING.get()


class TierDirectory:
    """The marks of keys that may have WARM or COLD copies, in a Redis bitmap.

    :param client: the HOT tier's Redis client.
    :param key_prefix: the HOT tier's key prefix (the bitmap is named after it, with a
        ``#`` no key may hold, so key listings never see it).
    :param bits: the bitmap holds ``2**bits`` key bits (default 24: 2 MiB).
    :param sources: the repositories listed by a rebuild (WARM and COLD).
    """

    def __init__(
        self,
        client: Any,
        key_prefix: str,
        *,
        bits: int = 24,
        sources: Sequence[Any] = (),
    ) -> None:
        if type(bits) is not int or not 10 <= bits <= 31:
            raise ConfigurationError(
                f"The tier directory's bits must be an integer from 10 to 31, not {bits!r}."
            )
        self.client = client
        self.name = f"{key_prefix}#tier-directory:{bits}"
        self.lock_name = f"{self.name}:rebuild"
        self._mask = (1 << bits) - 1
        self.sources = tuple(sources)
        self._rebuild_lock = threading.Lock()
        self._last_rebuild = -REBUILD_INTERVAL

    def __repr__(self) -> str:
        return f"<TierDirectory {self.name!r}>"

    def _unavailable(self, action: str, exc: Exception) -> TierUnavailableError:
        return TierUnavailableError(
            "hot", f"The tier directory in Redis could not {action}: {type(exc).__name__}: {exc}"
        )

    def offsets(self, keys: Iterable[str]) -> list[int]:
        """The bit of each key."""
        mask, crc = self._mask, zlib.crc32
        return [_FIRST + (crc(k.encode()) & mask) for k in keys]

    # -- marking -----------------------------------------------------------------

    def queue_mark(self, pipe: Any, keys: Sequence[str]) -> int:
        """Queue the marks of ``keys`` on ``pipe``; how many commands were queued."""
        queued = 0
        for start in range(0, len(keys), _CHUNK):
            pipe.execute_command("BITFIELD", self.name, *self._sets(keys[start : start + _CHUNK]))
            queued += 1
        return queued

    def _sets(self, keys: Sequence[str]) -> list[Any]:
        """The ``BITFIELD`` operations that set the bits of ``keys``."""
        args: list[Any] = []
        for offset in self.offsets(keys):
            args += ("SET", "u1", offset, 1)
        return args

    def mark(self, keys: Sequence[str]) -> None:
        """Mark ``keys`` (one round trip); call before a lower copy of them can be read.

        :raises TierUnavailableError: Redis did not answer.
        """
        if not keys:
            return
        try:
            if len(keys) <= _CHUNK:  # one command: no pipeline to build
                self.client.execute_command("BITFIELD", self.name, *self._sets(keys))
                return
            pipe = self.client.pipeline(transaction=False)
            self.queue_mark(pipe, list(keys))
            pipe.execute()
        except RedisError as exc:
            raise self._unavailable(f"mark {len(keys)} keys", exc) from exc

    # -- consulting --------------------------------------------------------------

    @contextmanager
    def consulting(self) -> Iterator[DirectoryAnswer]:
        """Within the block, HOT writes on this thread read the marks of their keys in
        their own round trip, into the answer yielded."""
        answer = DirectoryAnswer(self)
        token = _CONSULTING.set(answer)
        try:
            yield answer
        finally:
            _CONSULTING.reset(token)

    def queue_check(self, pipe: Any, keys: Sequence[str]) -> None:
        """Queue the check of ``keys`` (after their writes); its reply goes to
        :meth:`DirectoryAnswer.record`."""
        pipe.eval(CHECK_LUA, 1, self.name, *self.offsets(keys))

    def check(self, keys: Sequence[str]) -> set[str] | None:
        """The keys among ``keys`` the directory marks; None when it is not ready."""
        try:
            reply = self.client.eval(CHECK_LUA, 1, self.name, *self.offsets(keys))
        except RedisError as exc:
            raise self._unavailable(f"check {len(keys)} keys", exc) from exc
        if not reply:
            return None
        return {k for k, bit in zip(keys, reply, strict=True) if int(bit)}

    def ready(self) -> bool:
        """True when the directory can be trusted."""
        try:
            return bool(self.client.getbit(self.name, _READY))
        except RedisError as exc:
            raise self._unavailable("be read", exc) from exc

    # -- building ----------------------------------------------------------------

    def rebuild(self, *, lock_seconds: float = 600.0) -> bool:
        """Mark every key WARM and COLD list, then declare the directory ready; False
        when another process is rebuilding it, or the bitmap was lost meanwhile.

        Writers mark the copies they make while the listing runs, so a key the listing
        passed before its copy existed is marked all the same.
        """
        nonce = uuid.uuid4().hex
        client = self.client
        try:
            if not client.set(self.lock_name, nonce, nx=True, px=int(lock_seconds * 1000)):
                return False
        except RedisError as exc:
            raise self._unavailable("be rebuilt", exc) from exc
        finished = False
        try:
            client.setbit(self.name, _REBUILDING, 1)
            for source in self.sources:
                listing = getattr(source, "scan_keys", None) or source.keys
                chunk: list[str] = []
                for key in listing("*"):
                    chunk.append(key)
                    if len(chunk) == _CHUNK:
                        self.mark(chunk)
                        chunk = []
                self.mark(chunk)
            finished = bool(client.eval(_FINISH_LUA, 2, self.name, self.lock_name, nonce))
            return finished
        except RedisError as exc:
            raise self._unavailable("be rebuilt", exc) from exc
        finally:
            if not finished:  # let the next attempt run at once (the lock, if still ours)
                with suppress(RedisError):
                    client.eval(_RELEASE_LUA, 1, self.lock_name, nonce)

    def ensure_ready(self) -> bool:
        """Rebuild the directory unless it is ready; True when it is. Never raises: a
        directory that cannot be built leaves writes on the drop-everywhere path."""
        try:
            return self.ready() or self.rebuild()
        except Exception as exc:  # any tier failing to list must not stop the store
            logger.warning("The tier directory %s could not be built: %s", self.name, exc)
            return False

    def not_ready(self) -> None:
        """A write found the directory not ready: rebuild it in the background (at most
        once every :data:`REBUILD_INTERVAL` seconds in this process)."""
        now = time.monotonic()
        if now - self._last_rebuild < REBUILD_INTERVAL or not self.sources:
            return
        if not self._rebuild_lock.acquire(blocking=False):
            return
        self._last_rebuild = now

        def run() -> None:
            try:
                if self.ensure_ready():  # built: the next loss may rebuild at once
                    self._last_rebuild = -REBUILD_INTERVAL
            finally:
                self._rebuild_lock.release()

        threading.Thread(target=run, name="tiered-state-directory", daemon=True).start()

"""Deletes from Redis announced to other processes: the keys (or the copies still
unchanged) are deleted and the invalidation messages published in one pipeline, so a
subscriber hears of a change only after the stale copies are gone."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis.exceptions import RedisError

from .base import StoredValue
from .keys import validate_keys
from .redis_codec import DELETE_IF_STORED_BEFORE_LUA, DELETE_IF_UNCHANGED_LUA
from .redis_connection import CHUNK, RedisTierBase

__all__ = ["RedisAnnouncedDeletes"]


class RedisAnnouncedDeletes(RedisTierBase):
    """The announcing deletes of :class:`~.redis_repository.RedisStateRepository`."""

    def delete_and_publish(
        self, keys: Sequence[str], channel: str, messages: Sequence[bytes]
    ) -> int:
        """``delete_many(keys)``, then ``PUBLISH`` each message on ``channel``, in one
        pipeline (one round trip): subscribers get a message only after the keys are gone.

        :returns: how many of ``keys`` existed.
        """
        names = [self.key_prefix + k for k in dict.fromkeys(validate_keys(keys))]

        def unlink(pipe: Any) -> None:
            for start in range(0, len(names), CHUNK):
                pipe.unlink(*names[start : start + CHUNK])

        return self._then_publish(
            unlink, len(names), channel, messages, f"delete {len(names)} keys and publish"
        )

    def delete_if_unchanged(
        self, copies: Sequence[StoredValue], channel: str, messages: Sequence[bytes]
    ) -> int:
        """Delete each of ``copies`` that Redis still holds with the same checksum and
        version (atomically per key: a newer value written meanwhile stays), then
        ``PUBLISH`` each message on ``channel``; one round trip.

        :returns: how many were deleted.
        """
        return self._delete_where(
            DELETE_IF_UNCHANGED_LUA,
            [self.key_prefix + c.key for c in copies],
            [(c.metadata.checksum, c.metadata.version) for c in copies],
            channel,
            messages,
            "changed copies",
        )

    def delete_stale_and_publish(
        self, stale_since: Mapping[str, float], channel: str, messages: Sequence[bytes]
    ) -> int:
        """Delete each key whose value was stored before its time in ``stale_since``
        (atomically per key: a value stored later, by another process once Redis came
        back, stays), then ``PUBLISH`` each message on ``channel``; one round trip.

        :returns: how many were deleted.
        """
        return self._delete_where(
            DELETE_IF_STORED_BEFORE_LUA,
            [self.key_prefix + k for k in stale_since],
            [(repr(t),) for t in stale_since.values()],
            channel,
            messages,
            "stale copies",
        )

    def _delete_where(
        self,
        script: str,
        names: Sequence[str],
        args: Sequence[tuple[Any, ...]],
        channel: str,
        messages: Sequence[bytes],
        what: str,
    ) -> int:
        """Run a compare-and-delete ``script`` per chunk (``args``: its values per key),
        then publish ``messages``, in one pipeline; how many keys were deleted."""

        def compare_and_delete(pipe: Any) -> None:
            for start in range(0, len(names), CHUNK):
                chunk = names[start : start + CHUNK]
                values = [v for key_args in args[start : start + CHUNK] for v in key_args]
                pipe.eval(script, len(chunk), *chunk, *values)

        return self._then_publish(
            compare_and_delete, len(names), channel, messages, f"delete {len(names)} {what}"
        )

    def _then_publish(
        self,
        queue_deletes: Callable[[Any], None],
        keys: int,
        channel: str,
        messages: Sequence[bytes],
        action: str,
    ) -> int:
        """One pipeline: the deletes ``queue_deletes`` adds (about ``keys`` keys), then a
        ``PUBLISH`` of each message, so subscribers hear of a change only after the stale
        values are gone. Returns the sum of the deletes' replies (keys deleted)."""
        if not keys and not messages:
            return 0
        try:
            pipe = self.client.pipeline(transaction=False)
            queue_deletes(pipe)
            for message in messages:
                pipe.publish(channel, message)
            replies = pipe.execute()
        except RedisError as exc:
            raise self._unavailable(action, exc) from exc
        return sum(int(n) for n in replies[: len(replies) - len(messages)])

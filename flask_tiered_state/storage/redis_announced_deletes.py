"""Deletes from Redis announced to other processes: the keys (or the copies still
unchanged, or the copies a fence calls stale) are deleted and the invalidation messages
published in one pipeline, so a subscriber hears of a change only after the stale copies
are gone."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis.exceptions import RedisError

from .base import StaleCopy, StoredValue
from .keys import validate_keys
from .redis_codec import DELETE_STALE_LUA, DELETE_UNCHANGED_LUA
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

        replies = self._then_publish(
            unlink, len(names), channel, messages, f"delete {len(names)} keys and publish"
        )
        return sum(int(n) for n in replies)

    def delete_unchanged(
        self,
        copies: Sequence[StoredValue],
        *,
        channel: str = "",
        messages: Sequence[bytes] = (),
    ) -> list[str]:
        """Delete each of ``copies`` that Redis still holds with the same checksum and
        version (atomically per key: a newer value written meanwhile stays), then
        ``PUBLISH`` each message on ``channel``; one round trip. Returns the keys deleted.
        """
        names = [self.key_prefix + c.key for c in copies]
        validate_keys([c.key for c in copies])
        replies = self._then_publish(
            lambda pipe: self._queue_chunks(
                pipe,
                DELETE_UNCHANGED_LUA,
                names,
                [(c.metadata.checksum, c.metadata.version) for c in copies],
            ),
            len(names),
            channel,
            messages,
            f"delete {len(names)} unchanged copies",
        )
        flags = [int(flag) for reply in replies for flag in reply]
        return [c.key for c, flag in zip(copies, flags, strict=True) if flag]

    def delete_stale(
        self,
        fences: Mapping[str, StaleCopy],
        *,
        channel: str = "",
        messages: Sequence[bytes] = (),
    ) -> int:
        """Delete each key whose copy its fence calls stale (atomically per key: a value
        written meanwhile as new or newer stays), then ``PUBLISH`` each message on
        ``channel``; one round trip. Returns how many were deleted."""
        validate_keys(list(fences))
        names = [self.key_prefix + k for k in fences]
        args = [(f.version, f.checksum or "", repr(f.written_at)) for f in fences.values()]
        replies = self._then_publish(
            lambda pipe: self._queue_chunks(pipe, DELETE_STALE_LUA, names, args),
            len(names),
            channel,
            messages,
            f"delete {len(names)} stale copies",
        )
        return sum(int(n) for n in replies)

    @staticmethod
    def _queue_chunks(
        pipe: Any, script: str, names: Sequence[str], args: Sequence[tuple[Any, ...]]
    ) -> None:
        """Queue ``script`` once per chunk of keys (``args``: its values per key)."""
        for start in range(0, len(names), CHUNK):
            chunk = names[start : start + CHUNK]
            values = [v for key_args in args[start : start + CHUNK] for v in key_args]
            pipe.eval(script, len(chunk), *chunk, *values)

    def _then_publish(
        self,
        queue_deletes: Callable[[Any], None],
        keys: int,
        channel: str,
        messages: Sequence[bytes],
        action: str,
    ) -> list[Any]:
        """One pipeline: the deletes ``queue_deletes`` adds (about ``keys`` keys), then a
        ``PUBLISH`` of each message, so subscribers hear of a change only after the stale
        values are gone. Returns the deletes' replies."""
        if not keys and not messages:
            return []
        try:
            pipe = self.client.pipeline(transaction=False)
            if keys:
                queue_deletes(pipe)
            for message in messages:
                pipe.publish(channel, message)
            replies: list[Any] = pipe.execute()
        except RedisError as exc:
            raise self._unavailable(action, exc) from exc
        return replies[: len(replies) - len(messages)]

"""Batch writes to Redis: ``store_many`` (pipelined chunks, one round trip per ~CHUNK
items) and ``store_copies`` (copies that never overwrite a value as new or newer)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from ..errors import InvalidRequestError
from ._write_checks import check_version
from .base import StateMetadata, WriteRequest
from .redis_codec import MSET_EX_LUA, MSET_NEXT_LUA, STORE_COPIES_LUA, EncodedWrite, plan_writes
from .redis_connection import CHUNK, RedisTierBase

__all__ = ["RedisBatchWrites"]


class RedisBatchWrites(RedisTierBase):
    """The batch writes of :class:`~.redis_repository.RedisStateRepository`."""

    def store_many(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        prepared = []
        now = time.time()  # one stored_at for the batch
        for item in items:
            if item.version is not None:
                check_version(item.version)
            prepared.append(
                self._prepare(item.key, item.value, item.version, item.ttl_seconds, now)
            )
        results: dict[str, StateMetadata] = {}
        try:
            pipe = self.client.pipeline(transaction=False)
            queued: list[tuple[bool, list[EncodedWrite]]] = []
            size = 0
            for ttl, auto, chunk in plan_writes(prepared, CHUNK):
                self._queue_chunk(pipe, chunk, ttl, auto)
                queued.append((auto, chunk))
                size += len(chunk)
                if size >= CHUNK:  # one round trip per ~CHUNK items
                    self._collect(pipe.execute(), queued, results)
                    queued, size = [], 0
            if queued:
                self._collect(pipe.execute(), queued, results)
        except RedisError as exc:
            raise self._unavailable(f"write {len(prepared)} keys", exc) from exc
        return results

    def _queue_chunk(
        self, pipe: Any, chunk: list[EncodedWrite], ttl: int | None, auto: bool
    ) -> None:
        # EVAL, not a registered Script: redis-py sends SCRIPT EXISTS before every pipeline
        # holding Scripts (a round trip); the text is small next to a chunk's payloads.
        names = [p.name for p in chunk]
        if auto:
            args: list[Any] = [ttl or 0]
            for p in chunk:
                args += (p.head, p.tail)
            pipe.eval(MSET_NEXT_LUA, len(names), *names, *args)
            return
        payloads = [p.payload(p.version or 0) for p in chunk]
        if ttl is None:
            pipe.mset(dict(zip(names, payloads, strict=True)))
        else:
            pipe.eval(MSET_EX_LUA, len(names), *names, ttl, *payloads)

    def _collect(
        self,
        replies: list[Any],
        queued: list[tuple[bool, list[EncodedWrite]]],
        results: dict[str, StateMetadata],
    ) -> None:
        for reply, (auto, chunk) in zip(replies, queued, strict=True):
            if auto:
                for p, number in zip(chunk, reply, strict=True):
                    results[p.key] = p.metadata(self.category, int(number))
            else:
                for p in chunk:
                    results[p.key] = p.metadata(self.category, p.version or 0)

    def store_copies(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        """Store each item (with its version) where the key is absent or holds an older
        version, atomically per key (one Lua call per chunk): how copies are placed, so
        that a value another process wrote meanwhile is never overwritten by an older
        copy. Returns the metadata of the items stored."""
        groups: dict[int | None, list[EncodedWrite]] = {}
        for item in items:
            if item.version is None:
                raise InvalidRequestError(
                    f"store_copies needs the version of every copy; {item.key!r} has none.",
                    details={"key": item.key},
                )
            check_version(item.version)
            prepared = self._prepare(item.key, item.value, item.version, item.ttl_seconds)
            groups.setdefault(prepared.ttl, []).append(prepared)
        results: dict[str, StateMetadata] = {}
        try:
            pipe = self.client.pipeline(transaction=False)
            queued: list[list[EncodedWrite]] = []
            for ttl, group in groups.items():
                for start in range(0, len(group), CHUNK):
                    chunk = group[start : start + CHUNK]
                    args: list[Any] = [ttl or 0]
                    for p in chunk:
                        args += (p.version, p.payload(p.version or 0))
                    pipe.eval(STORE_COPIES_LUA, len(chunk), *(p.name for p in chunk), *args)
                    queued.append(chunk)
            replies = pipe.execute() if queued else []
        except RedisError as exc:
            raise self._unavailable(f"write {len(items)} copies", exc) from exc
        for reply, chunk in zip(replies, queued, strict=True):
            for p, done in zip(chunk, reply, strict=True):
                if int(done):
                    results[p.key] = p.metadata(self.category, p.version or 0)
        return results

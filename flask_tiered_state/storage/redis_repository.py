"""The HOT tier on Redis (redis-py; hiredis parses replies when installed)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

# Imported here too, so that importing this module without the redis package fails on
# "redis" itself, the name the factory looks for to name the extra to install (its
# submodules may already be imported through the ones below).
import redis  # noqa: F401
from redis.exceptions import RedisError

from ..errors import ConcurrencyError, IntegrityError
from ._write_checks import check_expected_version, check_version
from .base import StateMetadata, StoredValue, TierStats
from .keys import glob_to_redis_match, glob_to_regex, validate_key, validate_keys, validate_pattern
from .redis_announced_deletes import RedisAnnouncedDeletes
from .redis_batch_writes import RedisBatchWrites
from .redis_codec import decode_entry, redis_literal

# Re-exported: these names were importable from here before the split.
from .redis_connection import CHUNK as CHUNK
from .redis_connection import _describe as _describe

__all__ = ["RedisStateRepository"]


class RedisStateRepository(RedisBatchWrites, RedisAnnouncedDeletes):
    """Values with metadata in one Redis string per key, under a key prefix.

    :param client_or_url: a ``redis.Redis`` client (not closed by :meth:`close`) or a
        ``redis://``, ``rediss://`` or ``unix://`` URL (a client is built and owned).
    :param key_prefix: prepended to every key; :meth:`keys` strips it again.
    :param default_ttl_seconds: TTL for writes that give none; None keeps values forever.
    :param category: the tier it serves (HOT by default).
    :param socket_timeout: read timeout in seconds for a client built from a URL.
    :param connect_timeout: connect timeout in seconds for a client built from a URL.
    """

    backend = "redis"

    # -- reads ---------------------------------------------------------------

    def fetch(self, key: str) -> StoredValue | None:
        validate_key(key)
        try:
            raw = self._get(self.key_prefix + key)
        except RedisError as exc:
            raise self._unavailable(f"read {key!r}", exc) from exc
        except UnicodeDecodeError as exc:  # decode_responses=True and non-UTF-8 bytes
            raise IntegrityError(key, f"The value stored for {key!r} is not UTF-8.") from exc
        return None if raw is None else decode_entry(key, raw, self._where)

    def fetch_many(self, keys: Sequence[str]) -> dict[str, StoredValue]:
        keys = list(dict.fromkeys(validate_keys(keys)))
        prefix, found = self.key_prefix, {}
        try:
            for start in range(0, len(keys), CHUNK):
                chunk = keys[start : start + CHUNK]
                values = self.client.mget([prefix + k for k in chunk])
                for key, raw in zip(chunk, values, strict=True):
                    if raw is not None:
                        found[key] = decode_entry(key, raw, self._where)
        except RedisError as exc:
            raise self._unavailable(f"read {len(keys)} keys", exc) from exc
        except UnicodeDecodeError as exc:
            raise IntegrityError(keys[0], "A value among the keys read is not UTF-8.") from exc
        return found

    # -- writes --------------------------------------------------------------
    def store(
        self,
        key: str,
        value: str,
        *,
        version: int | None = None,
        ttl_seconds: int | None = None,
        expected_version: int | None = None,
    ) -> StateMetadata:
        if version is not None:
            check_version(version)
        if expected_version is not None:
            check_expected_version(expected_version)
        item = self._prepare(key, value, version, ttl_seconds)
        ttl = item.ttl
        try:
            if version is not None and expected_version is None:
                self.client.set(item.name, item.payload(version), ex=ttl)
                return item.metadata(self.category, version)
            ok, number = self._set_versioned(
                keys=[item.name],
                args=[
                    item.head,
                    item.tail,
                    ttl or 0,
                    "" if expected_version is None else expected_version,
                    "" if version is None else version,
                ],
            )
        except RedisError as exc:
            raise self._unavailable(f"write {key!r}", exc) from exc
        if not ok:
            if number < 0:
                raise IntegrityError(
                    key,
                    f"The value stored for {key!r} in {self._where} has a damaged header, so "
                    "its version is unknown; compare-and-set refused. Write it without "
                    "expected_version to replace it.",
                )
            raise ConcurrencyError(key, expected_version, number)
        return item.metadata(self.category, int(number))

    def delete(self, key: str) -> bool:
        validate_key(key)
        try:
            return bool(self.client.unlink(self.key_prefix + key))
        except RedisError as exc:
            raise self._unavailable(f"delete {key!r}", exc) from exc

    def delete_many(self, keys: Sequence[str]) -> int:
        names = [self.key_prefix + k for k in dict.fromkeys(validate_keys(keys))]
        if not names:
            return 0
        try:
            pipe = self.client.pipeline(transaction=False)
            for start in range(0, len(names), CHUNK):
                pipe.unlink(*names[start : start + CHUNK])
            return sum(int(n) for n in pipe.execute())
        except RedisError as exc:
            raise self._unavailable(f"delete {len(names)} keys", exc) from exc

    # -- scans ---------------------------------------------------------------

    def _scan(self, match: str) -> list[bytes | str]:
        try:
            return list(self.client.scan_iter(match=match, count=CHUNK))
        except RedisError as exc:
            raise self._unavailable(f"scan keys matching {match!r}", exc) from exc

    def keys(self, pattern: str = "*") -> Iterator[str]:
        """Keys matching the glob, through ``SCAN MATCH`` (never ``KEYS``), without prefix."""
        regex = glob_to_regex(validate_pattern(pattern))
        match = redis_literal(self.key_prefix) + glob_to_redis_match(pattern)
        cut = len(self.key_prefix)
        found: dict[str, None] = {}
        for name in self._scan(match):
            try:
                key = (name.decode("utf-8") if isinstance(name, bytes) else name)[cut:]
            except UnicodeDecodeError:
                continue  # not ours: every key we write is ASCII
            if regex.fullmatch(key):
                found[key] = None
        return iter(found)

    def stats(self) -> TierStats:
        """``key_count`` counts the keys under this repository's prefix (a SCAN);
        ``server_used_memory`` is the whole server's ``used_memory`` from INFO."""
        try:
            if self.key_prefix:
                count = len(self._scan(redis_literal(self.key_prefix) + "*"))
            else:
                count = int(self.client.dbsize())
            memory = self.client.info("memory")
        except RedisError as exc:
            raise self._unavailable("report stats", exc) from exc
        return TierStats(
            backend=self.backend,
            category=self.category,
            key_count=count,
            bytes=None,
            extra={
                "location": self.location,
                "key_prefix": self.key_prefix,
                "key_count_scope": "prefix",
                "server_used_memory": memory.get("used_memory"),
            },
        )

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except RedisError:
            return False

    def close(self) -> None:
        """Close the client if this repository built it from a URL; a client passed in
        belongs to the caller."""
        if self._owns_client:
            self.client.close()

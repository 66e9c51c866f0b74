"""The HOT tier on Redis (redis-py; hiredis parses replies when installed).

One Redis string per key holds the metadata and the value (:mod:`.codec`), so a read is
one ``GET``. Versions are assigned and compare-and-set checked by Lua scripts on the
server; batches are pipelines of at most :data:`~.connection.CHUNK` keys per command.
Deletes that other processes must hear of publish the invalidation messages in the same
pipeline, after the deletes, so a subscriber hears of a change only once the stale
copies are gone.

Redis before 6.0.18, 6.2.11 and 7.0.9 matches ``SCAN MATCH`` patterns in exponential time
(CVE-2022-36021): a pattern of many stars can hang the server. On such a server (its
version is read once, with ``INFO server``) :meth:`RedisStateRepository.keys` sends only
the pattern's literal prefix and a ``*``, which any version matches in linear time, and
the glob is applied in Python, as it always is (:func:`match_is_exponential`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

# Imported here too, so that importing this module without the redis package fails on
# "redis" itself, the name the registry looks for to name the extra to install.
import redis
from redis.exceptions import RedisError

from ...errors import (
    ConcurrencyError,
    ConfigurationError,
    IntegrityError,
    InvalidRequestError,
    TierUnavailableError,
)
from ..base import (
    ANY_COPY,
    BackendContext,
    StaleCopy,
    StateCategory,
    StateMetadata,
    StateRepository,
    StoredValue,
    TierStats,
    WriteRequest,
    check_options,
)
from ..checks import check_expected_version, check_ttl, check_value, check_version
from ..keys import (
    glob_literal_prefix,
    glob_to_redis_match,
    glob_to_regex,
    validate_key,
    validate_keys,
    validate_pattern,
)
from ..tier_directory import DirectoryAnswer, TierDirectory, consulted
from .codec import (
    DELETE_STALE_LUA,
    DELETE_UNCHANGED_LUA,
    DROP_STALE_AND_PUBLISH_LUA,
    MSET_EX_LUA,
    MSET_NEXT_LUA,
    SET_VERSIONED_LUA,
    STORE_COPIES_LUA,
    EncodedWrite,
    decode_entry,
    encode_write,
    plan_writes,
    redis_literal,
)
from .connection import CHUNK, SCHEMES, describe, redis_client

__all__ = ["RedisStateRepository", "match_is_exponential"]

_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_ANY = re.compile(r".*", re.DOTALL)
#: The first release of each line with CVE-2022-36021 fixed; 6.1 and 7.1 are unstable
#: (development) lines, left unfixed here; lines from 7.2 on have the fix.
_MATCH_FIXED_IN = {(6, 0): 18, (6, 2): 11, (7, 0): 9}


def match_is_exponential(version: object) -> bool:
    """Whether a Redis server reporting ``redis_version`` ``version`` may match a glob in
    exponential time (CVE-2022-36021: before 6.0.18, 6.2.11, 7.0.9). A version that
    cannot be read (None, another server's spelling) counts as such: a coarse ``MATCH``
    costs speed only."""
    found = _VERSION.match(version) if isinstance(version, str) else None
    if found is None:
        return True
    major, minor, patch = (int(part) for part in found.groups())
    fixed_in = _MATCH_FIXED_IN.get((major, minor))
    if fixed_in is not None:
        return patch < fixed_in
    return (major, minor) < (7, 2)


class RedisStateRepository:
    """Values with metadata in one Redis string per key, under a key prefix.

    :param client_or_url: an application's ``redis.Redis`` client or
        ``redis.ConnectionPool`` (used as it is, decoding responses or not, and not closed
        by :meth:`close`), or a
        ``redis://``, ``rediss://`` or ``unix://`` URL (a client is built and owned).
    :param key_prefix: prepended to every key; :meth:`keys` strips it again.
    :param default_ttl_seconds: TTL for writes that give none; None keeps values forever.
    :param category: the tier it serves (HOT by default).
    :param socket_timeout: read timeout in seconds for a client built from a URL.
    :param connect_timeout: connect timeout in seconds for a client built from a URL.
    """

    backend = "redis"

    def __init__(
        self,
        client_or_url: redis.Redis | redis.ConnectionPool | str,
        *,
        key_prefix: str = "tiered_state:",
        default_ttl_seconds: int | None = None,
        category: StateCategory = StateCategory.HOT,
        socket_timeout: float = 1.0,
        connect_timeout: float = 2.0,
    ) -> None:
        if not isinstance(key_prefix, str):
            raise ConfigurationError(f"key_prefix must be a string, not {key_prefix!r}.")
        if default_ttl_seconds is not None:
            check_ttl(default_ttl_seconds, "default_ttl_seconds", setting=True)
        client, self._owns_client = redis_client(
            client_or_url, socket_timeout=socket_timeout, connect_timeout=connect_timeout
        )
        self.category = category
        self.key_prefix = key_prefix
        self.default_ttl_seconds = default_ttl_seconds
        self.client = client
        self.location = describe(client)
        self._where = f"Redis at {self.location}"
        self._category_bytes = category.value.encode("ascii")
        self._get = client.get
        self._set_versioned = client.register_script(SET_VERSIONED_LUA)
        self._drop_stale_and_publish = client.register_script(DROP_STALE_AND_PUBLISH_LUA)
        #: Whether the server matches globs in exponential time; read at the first
        #: :meth:`keys`.
        self._coarse_match: bool | None = None
        #: The store's tier directory (:mod:`..tier_directory`), when one is attached:
        #: HOT drops of lower-home writes mark their keys in it (in the same round trip).
        self.tier_directory: TierDirectory | None = None

    def __repr__(self) -> str:
        return f"<RedisStateRepository {self.location} prefix={self.key_prefix!r}>"

    def _unavailable(self, action: str, exc: Exception) -> TierUnavailableError:
        return TierUnavailableError(
            self.category.value,
            f"The {self.category.value.upper()} tier (Redis at {self.location}) could not "
            f"{action}: {type(exc).__name__}: {exc}",
            details={"backend": "redis", "location": self.location, "operation": action},
        )

    def _prepare(
        self,
        key: str,
        value: str,
        version: int | None,
        ttl: int | None,
        stored_at: float | None = None,
    ) -> EncodedWrite:
        validate_key(key)
        check_value(key, value)
        ttl = self.default_ttl_seconds if ttl is None else check_ttl(ttl)
        name = self.key_prefix + key
        return encode_write(key, name, value, self._category_bytes, ttl, version, stored_at)

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
        answer = consulted()
        try:
            if version is not None and expected_version is None:
                if answer is not None:
                    answer.unchecked()
                self.client.set(item.name, item.payload(version), ex=ttl)
                return item.metadata(self.category, version)
            args: list[Any] = [
                item.head,
                item.tail,
                ttl or 0,
                "" if expected_version is None else expected_version,
                "" if version is None else version,
            ]
            if answer is None:
                ok, number = self._set_versioned(keys=[item.name], args=args)
            else:  # the directory's marks of the key, read after the write, same round trip
                pipe = self.client.pipeline(transaction=False)
                pipe.eval(SET_VERSIONED_LUA, 1, item.name, *args)
                answer.directory.queue_check(pipe, [key])
                (ok, number), marks = pipe.execute()
                answer.record([key], marks)
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

    def _scan_batches(self, match: str) -> Iterator[list[bytes | str]]:
        """The names of each ``SCAN MATCH`` reply, one reply (about :data:`CHUNK` names)
        at a time."""
        cursor = 0
        while True:
            try:
                cursor, batch = self.client.scan(cursor=cursor, match=match, count=CHUNK)
            except RedisError as exc:
                raise self._unavailable(f"scan keys matching {match!r}", exc) from exc
            yield batch
            if not cursor:
                return

    def _matching(self, names: Iterable[bytes | str], regex: re.Pattern[str]) -> Iterator[str]:
        """The keys, without prefix, of ``names`` that the glob's ``regex`` matches."""
        cut = len(self.key_prefix)
        for name in names:
            try:
                key = (name.decode("utf-8") if isinstance(name, bytes) else name)[cut:]
            except UnicodeDecodeError:
                continue  # not ours: every key we write is ASCII
            if "#" in key:  # the tier directory's names (no key holds a "#")
                continue
            if regex.fullmatch(key):
                yield key

    def _match_for(self, pattern: str) -> str:
        """The ``SCAN MATCH`` pattern of a glob: the glob itself, or only its literal
        prefix and a ``*`` on a server that would match it in exponential time."""
        if self._coarse_match is None:
            try:
                version = self.client.info("server").get("redis_version")
            except redis.ResponseError:  # INFO refused (ACL, renamed): version unknown
                version = None
            except RedisError as exc:
                raise self._unavailable("read the server's version", exc) from exc
            if isinstance(version, bytes):
                version = version.decode("ascii", "replace")
            self._coarse_match = match_is_exponential(version)
        if self._coarse_match:
            return redis_literal(self.key_prefix + glob_literal_prefix(pattern)) + "*"
        return redis_literal(self.key_prefix) + glob_to_redis_match(pattern)

    def keys(self, pattern: str = "*") -> Iterator[str]:
        """Keys matching the glob, through ``SCAN MATCH`` (never ``KEYS``), without prefix.

        On a server before 6.0.18, 6.2.11 or 7.0.9 (CVE-2022-36021) only the glob's
        literal prefix is sent, and the glob is applied to what the scan returns.
        """
        regex = glob_to_regex(validate_pattern(pattern))
        batches = self._scan_batches(self._match_for(pattern))
        found = dict.fromkeys(key for batch in batches for key in self._matching(batch, regex))
        return iter(found)

    def scan_keys(self, pattern: str = "*") -> Iterator[str]:
        """The keys :meth:`keys` finds, one ``SCAN`` reply at a time: memory stays that of
        one reply however many keys match. Duplicates are removed within a reply only;
        ``SCAN`` may return a key again in a later one."""
        regex = glob_to_regex(validate_pattern(pattern))
        batches = self._scan_batches(self._match_for(pattern))
        return (key for batch in batches for key in dict.fromkeys(self._matching(batch, regex)))

    def stats(self) -> TierStats:
        """``key_count`` counts the keys under this repository's prefix (a SCAN);
        ``server_used_memory`` is the whole server's ``used_memory`` from INFO."""
        try:
            if self.key_prefix:
                match = redis_literal(self.key_prefix) + "*"
                batches = self._scan_batches(match)
                count = sum(1 for batch in batches for _ in self._matching(batch, _ANY))
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

    # -- batch writes and copies --------------------------------------------

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
        # Consulted: each chunk's write is followed by the directory's marks of its keys.
        answer = consulted()
        try:
            pipe = self.client.pipeline(transaction=False)
            queued: list[tuple[bool, list[EncodedWrite]]] = []
            size = 0
            for ttl, auto, chunk in plan_writes(prepared, CHUNK):
                self._queue_chunk(pipe, chunk, ttl, auto)
                if answer is not None:
                    answer.directory.queue_check(pipe, [p.key for p in chunk])
                queued.append((auto, chunk))
                size += len(chunk)
                if size >= CHUNK:  # one round trip per ~CHUNK items
                    self._collect(pipe.execute(), queued, results, answer)
                    queued, size = [], 0
            if queued:
                self._collect(pipe.execute(), queued, results, answer)
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
        answer: DirectoryAnswer | None = None,
    ) -> None:
        if answer is not None:
            for marks, (_, chunk) in zip(replies[1::2], queued, strict=True):
                answer.record([p.key for p in chunk], marks)
            replies = replies[::2]
        for reply, (auto, chunk) in zip(replies, queued, strict=True):
            if auto:
                for p, number in zip(chunk, reply, strict=True):
                    results[p.key] = p.metadata(self.category, int(number))
            else:
                for p in chunk:
                    results[p.key] = p.metadata(self.category, p.version or 0)

    def _prepare_copies(self, items: Sequence[WriteRequest], what: str) -> list[EncodedWrite]:
        """The copies encoded, each with its version (required: a copy keeps its
        source's)."""
        prepared = []
        for item in items:
            if item.version is None:
                raise InvalidRequestError(
                    f"{what} needs the version of every copy; {item.key!r} has none.",
                    details={"key": item.key},
                )
            check_version(item.version)
            prepared.append(self._prepare(item.key, item.value, item.version, item.ttl_seconds))
        return prepared

    def store_copies(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        """Store each item (with its version) where the key is absent or holds an older
        version, atomically per key (one Lua call per chunk): how copies are placed, so
        that a value another process wrote meanwhile is never overwritten by an older
        copy. Returns the metadata of the items stored."""
        groups: dict[int | None, list[EncodedWrite]] = {}
        for prepared in self._prepare_copies(items, "store_copies"):
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

    def add_copies(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        """Store each item (with its version) only where the key is absent (``SET NX``,
        one pipeline): the copies of a promotion, whose keys were found absent from HOT.
        Whatever is there now was written meanwhile and stays, whatever its version: a
        HOT-home write numbers its value afresh when the key had none in HOT, so an older
        copy may carry a higher version (:meth:`store_copies` would overwrite it).
        Returns the metadata of the items stored."""
        prepared = self._prepare_copies(items, "add_copies")
        if not prepared:
            return {}
        try:
            pipe = self.client.pipeline(transaction=False)
            for p in prepared:
                pipe.set(p.name, p.payload(p.version or 0), nx=True, ex=p.ttl)
            replies = pipe.execute()
        except RedisError as exc:
            raise self._unavailable(f"write {len(items)} copies", exc) from exc
        return {
            p.key: p.metadata(self.category, p.version or 0)
            for p, done in zip(prepared, replies, strict=True)
            if done
        }

    # -- conditional deletes, announced ----------------------------------------

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
        ``channel``; one round trip. Returns how many were deleted.

        With a :attr:`tier_directory`, the keys are marked in it in the same round trip
        (but for deletes, ``ANY_COPY``): a HOT copy made stale is a lower
        home's write, and its drop deferred by an outage is how a key whose copy could
        not be marked then gets marked later, from this process or from the journal.
        """
        validate_keys(list(fences))
        names = [self.key_prefix + k for k in fences]
        args = [(f.version, f.checksum or "", repr(f.written_at)) for f in fences.values()]
        directory = self.tier_directory
        marked = [k for k, f in fences.items() if f != ANY_COPY] if directory else []
        if len(names) <= CHUNK:  # the usual case (a write's own drop): one command
            return self._drop_stale_in_one(names, args, marked, channel, messages)
        marks = 0

        def queue(pipe: Any) -> None:
            nonlocal marks
            if directory is not None and marked:
                marks = directory.queue_mark(pipe, marked)
            self._queue_chunks(pipe, DELETE_STALE_LUA, names, args)

        replies = self._then_publish(
            queue, len(names), channel, messages, f"delete {len(names)} stale copies"
        )
        return sum(int(n) for n in replies[marks:])

    def _drop_stale_in_one(
        self,
        names: Sequence[str],
        args: Sequence[tuple[Any, ...]],
        marked: Sequence[str],
        channel: str,
        messages: Sequence[bytes],
    ) -> int:
        """:meth:`delete_stale` of at most :data:`CHUNK` keys as one script call."""
        if not names and not messages:
            return 0
        directory = self.tier_directory
        offsets = directory.offsets(marked) if directory is not None else []
        keys = [directory.name, *names] if directory is not None else list(names)
        values = [v for key_args in args for v in key_args]
        header = ("1" if directory is not None else "0", len(offsets), channel, len(messages))
        try:
            deleted = self._drop_stale_and_publish(
                keys=keys, args=[*header, *offsets, *messages, *values]
            )
        except RedisError as exc:
            raise self._unavailable(f"delete {len(names)} stale copies", exc) from exc
        return int(deleted)

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


def parse_url(url: str, options: Mapping[str, Any], context: BackendContext) -> dict[str, Any]:
    """The arguments of :class:`RedisStateRepository` for ``url`` and ``options``."""
    if urlsplit(url).scheme not in SCHEMES or not urlsplit(url).netloc + urlsplit(url).path:
        raise ConfigurationError(
            f"The Redis URL {url!r} is not valid; use redis://host:6379/0, rediss://... or "
            "unix:///path/to/redis.sock."
        )
    chosen = check_options(options, RedisStateRepository.__init__, fixed=("category",))
    chosen.setdefault("key_prefix", context.key_prefix)
    return {"client_or_url": url, "category": context.category, **chosen}


def from_url(url: str, options: Mapping[str, Any], context: BackendContext) -> StateRepository:
    """The ``redis://``, ``rediss://`` and ``unix://`` backend (see
    :mod:`~flask_tiered_state.storage.registry`): options are the keyword arguments of
    :class:`RedisStateRepository`; ``key_prefix`` defaults to the store's."""
    return RedisStateRepository(**parse_url(url, options, context))

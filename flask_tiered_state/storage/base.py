"""The contract every tier implements, and the value types it speaks.

A repository stores JSON documents (as ``str``) under string keys. It knows
nothing of domain states. Every stored value carries :class:`StateMetadata`.

Versions: when a write passes ``version=None`` the repository assigns the
previous version of that key in this tier plus one (1 for a new key). A write
that passes a version stores it as given; tier moves use this to carry a
value's version from the source tier to the target. ``expected_version`` makes a
write compare-and-set: it raises :class:`~flask_tiered_state.errors.ConcurrencyError`
unless the key's current version in this tier equals it (``0`` means "must not exist").
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..errors import ConfigurationError

__all__ = [
    "ANY_COPY",
    "BackendContext",
    "BackendFactory",
    "DocumentQuery",
    "DocumentSearch",
    "StaleCopy",
    "StateCategory",
    "StateMetadata",
    "StateRepositories",
    "StateRepository",
    "StoredValue",
    "TierStats",
    "WriteRequest",
    "check_options",
    "checksum_of",
    "fetch_readable",
    "make_metadata",
]


class StateCategory(str, enum.Enum):
    """The three tiers, hottest first."""

    HOT = "hot"
    WARM = "warm"
    COLD = "cold"

    def __str__(self) -> str:
        return self.value


def checksum_of(value: str) -> str:
    """The sha256 hex digest of a value's UTF-8 bytes."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class StateMetadata(NamedTuple):
    """What a tier knows about one stored value.

    A named tuple rather than a frozen dataclass: batch reads build one per key, and a
    tuple is several times cheaper to construct while staying immutable.
    """

    checksum: str
    size: int
    version: int
    category: StateCategory
    stored_at: float  # seconds since the epoch (UTC)
    ttl_seconds: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "checksum": self.checksum,
            "size": self.size,
            "version": self.version,
            "category": self.category.value,
            "stored_at": self.stored_at,
            "ttl_seconds": self.ttl_seconds,
        }


def make_metadata(
    value: str,
    *,
    version: int,
    category: StateCategory,
    ttl_seconds: int | None = None,
    stored_at: float | None = None,
) -> StateMetadata:
    """Metadata for ``value`` as written now."""
    encoded = value.encode("utf-8")
    return StateMetadata(
        checksum=hashlib.sha256(encoded).hexdigest(),
        size=len(encoded),
        version=version,
        category=category,
        stored_at=time.time() if stored_at is None else stored_at,
        ttl_seconds=ttl_seconds,
    )


class StoredValue(NamedTuple):
    """A value read from a tier, already verified against its checksum."""

    key: str
    value: str
    metadata: StateMetadata


class StaleCopy(NamedTuple):
    """Which copy of one key a conditional delete removes (a *fence*).

    A write with compare-and-set gives a version that goes on from every copy of the key,
    so its fence is the version alone: a copy below it is stale, and a copy as new or
    newer (another writer's value, moved into the tier meanwhile) stays. A write without
    a version (last writer wins) may be numbered afresh by its tier, so versions do not
    order it against other copies; its fence carries its checksum and time: every copy
    but its own that was stored before it is stale, and a copy stored after it stays.
    """

    version: int
    checksum: str | None = None
    written_at: float = 0.0

    def removes(self, version: int, checksum: str, stored_at: float) -> bool:
        """True when a copy at ``version`` with ``checksum``, stored at ``stored_at``
        (seconds since the epoch), is stale."""
        if self.checksum is None:
            return version < self.version
        return stored_at < self.written_at and (
            version != self.version or checksum != self.checksum
        )


#: The fence of a copy that goes whatever it holds (deletes, corrupt copies).
ANY_COPY = StaleCopy(2**62)


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One item of :meth:`StateRepository.store_many`."""

    key: str
    value: str
    version: int | None = None
    ttl_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class TierStats:
    """A tier's size and health, as :meth:`StateRepository.stats` reports it."""

    backend: str
    category: StateCategory
    key_count: int
    bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "category": self.category.value,
            "key_count": self.key_count,
            "bytes": self.bytes,
            **self.extra,
        }


@runtime_checkable
class StateRepository(Protocol):
    """The contract of every tier (memory, Redis, SQL, S3, filesystem).

    Errors: a driver failure is raised as
    :class:`~flask_tiered_state.errors.TierUnavailableError`; a checksum mismatch
    as :class:`~flask_tiered_state.errors.IntegrityError`; a bad key or pattern as
    :class:`~flask_tiered_state.errors.InvalidKeyError` /
    :class:`~flask_tiered_state.errors.InvalidPatternError`.
    """

    #: Short backend name: "memory", "redis", "postgresql", "sqlite", "s3", "filesystem".
    backend: str
    #: The tier this repository serves.
    category: StateCategory

    def fetch(self, key: str) -> StoredValue | None:
        """The value under ``key``, or None."""
        ...

    def fetch_many(self, keys: Sequence[str]) -> dict[str, StoredValue]:
        """The values present among ``keys`` (absent keys are left out), in one round trip
        per chunk."""
        ...

    def store(
        self,
        key: str,
        value: str,
        *,
        version: int | None = None,
        ttl_seconds: int | None = None,
        expected_version: int | None = None,
    ) -> StateMetadata:
        """Store ``value`` under ``key`` and return its metadata."""
        ...

    def store_many(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        """Store every item (one round trip per chunk); all or nothing where the tier has
        transactions."""
        ...

    def delete(self, key: str) -> bool:
        """Delete ``key``; True if it existed."""
        ...

    def delete_many(self, keys: Sequence[str]) -> int:
        """Delete ``keys`` in chunks; the number that existed."""
        ...

    def store_copies(self, items: Sequence[WriteRequest]) -> dict[str, StateMetadata]:
        """Store each item (every one carries its version) where this tier lacks the key
        or holds an older version of it, atomically per key: a copy never replaces a
        value as new or newer. Returns the metadata of the items stored."""
        ...

    def delete_unchanged(self, copies: Sequence[StoredValue]) -> list[str]:
        """Delete each key still holding exactly the copy given (same version and
        checksum), atomically per key; the keys deleted. How a move removes its source
        and a copy is taken back: a value written meanwhile stays."""
        ...

    def delete_stale(self, fences: Mapping[str, StaleCopy]) -> int:
        """Delete each key whose copy its :class:`StaleCopy` calls stale, atomically per
        key; how many were deleted. How the copies a write made stale are dropped."""
        ...

    def keys(self, pattern: str = "*") -> Iterator[str]:
        """Keys matching a glob of ``*`` and ``?``; every other character is literal."""
        ...

    def scan_keys(self, pattern: str = "*") -> Iterator[str]:
        """The keys :meth:`keys` finds, as a stream whose memory does not grow with the
        number of keys. A key may come more than once (Redis ``SCAN``'s guarantee), so
        feed it to something that removes duplicates. A bad pattern is refused at the
        call, before the first key; a driver failure while streaming is raised as
        :class:`~flask_tiered_state.errors.TierUnavailableError`."""
        ...

    def stats(self) -> TierStats:
        """Key count, bytes where cheap, backend-specific figures."""
        ...

    def ping(self) -> bool:
        """True when the backend answers."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...


@dataclass(frozen=True, slots=True)
class StateRepositories:
    """The repositories behind a store, for direct tier access (backups, recovery).

    ``redis``, ``postgres`` and ``s3`` are the seeds' names: the real backend where one
    is configured, else None. ``hot``, ``warm`` and ``cold`` are whatever backs each tier.
    """

    hot: StateRepository
    warm: StateRepository
    cold: StateRepository

    @classmethod
    def from_state_manager(cls, manager: Any) -> StateRepositories:
        """The repositories behind a :class:`~flask_tiered_state.StateManager` (or a
        :class:`~flask_tiered_state.storage.store.TieredStore`)."""
        get = getattr(manager, "get_repositories", None)
        if get is None:
            raise ConfigurationError(
                "from_state_manager needs a StateManager or a TieredStore, not "
                f"{type(manager).__name__}."
            )
        repositories = get()
        assert isinstance(repositories, cls)
        return repositories

    @property
    def redis(self) -> StateRepository | None:
        return self.hot if self.hot.backend == "redis" else None

    @property
    def postgres(self) -> StateRepository | None:
        return self.warm if self.warm.backend == "postgresql" else None

    @property
    def s3(self) -> StateRepository | None:
        return self.cold if self.cold.backend == "s3" else None

    def by_category(self, category: StateCategory) -> StateRepository:
        return {
            StateCategory.HOT: self.hot,
            StateCategory.WARM: self.warm,
            StateCategory.COLD: self.cold,
        }[category]

    def __iter__(self) -> Iterator[StateRepository]:
        return iter((self.hot, self.warm, self.cold))


# --------------------------------------------------------------------------- search

#: A JSON scalar a search compares with: equality includes the JSON type, so ``1``
#: matches neither ``true`` nor ``"1"``.
JSONScalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class DocumentQuery:
    """Which stored JSON documents a search matches (see :class:`DocumentSearch`).

    :param key_prefix: only keys that start with it.
    :param equal: ``(path, value)`` pairs that must all hold: the document's value at
        ``path`` (object keys from the root) is the JSON scalar ``value``.
    :param not_equal: ``(field, text)``: the top-level text ``field`` is not ``text``.
    :param one_of: ``(field, texts)``: the top-level text ``field`` is one of ``texts``.

    Expired values never match.
    """

    key_prefix: str
    equal: tuple[tuple[tuple[str, ...], JSONScalar], ...] = ()
    not_equal: tuple[tuple[str, str], ...] = ()
    one_of: tuple[tuple[str, tuple[str, ...]], ...] = ()


@runtime_checkable
class DocumentSearch(Protocol):
    """A capability of a repository that can query the documents it holds where they
    are, without loading them (the SQL repository: a GIN containment test on
    PostgreSQL, ``json_extract`` on SQLite). The domain's search goes through it."""

    def search_documents(
        self,
        query: DocumentQuery,
        *,
        newest_by: str,
        offset: int,
        limit: int,
        count_limit: int | None = None,
    ) -> tuple[list[str], int]:
        """``(values, total)``: the matching values ordered by the top-level text field
        ``newest_by`` descending, then key, from ``offset``, at most ``limit``; and how
        many match in all. With ``count_limit``, counting stops after ``count_limit + 1``
        matches: a total above ``count_limit`` means "more than ``count_limit``"."""
        ...

    def count_documents(
        self, query: DocumentQuery, group_by: Sequence[str]
    ) -> list[tuple[Any, ...]]:
        """``[(value of each field..., count)]``: the matches grouped by the top-level
        text fields ``group_by`` (none: one row, the count)."""
        ...


# --------------------------------------------------------------------------- backends


@dataclass(frozen=True, slots=True)
class BackendContext:
    """What a backend factory gets besides its URL and options.

    :param category: the tier the repository will serve.
    :param key_prefix: the prefix of every key in a shared server (Redis).
    :param local_dir: the app's directory for embedded data (relative ``file:`` URLs).
    :param sql_metadata: a :class:`sqlalchemy.MetaData` to define SQL tables on.
    :param create_tables: whether to create missing tables.
    """

    category: StateCategory
    key_prefix: str = "tiered_state:"
    local_dir: Path | None = None
    sql_metadata: Any = None
    create_tables: bool = True


#: ``factory(url, options, context)``: the repository for ``url`` (see
#: :mod:`~flask_tiered_state.storage.registry`).
BackendFactory = Callable[[str, Mapping[str, Any], BackendContext], StateRepository]


def check_options(
    options: Mapping[str, Any], target: Callable[..., Any], *, fixed: Iterable[str] = ()
) -> dict[str, Any]:
    """``options`` if every name is a keyword argument ``target`` takes (``fixed`` ones,
    which come from the URL and the context, excepted), else :class:`ConfigurationError`
    listing the names it takes. For backend factories."""
    taken = {
        name
        for name, parameter in inspect.signature(target).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    } - set(fixed)
    unknown = sorted(set(options) - taken)
    if unknown:
        raise ConfigurationError(
            f"{getattr(target, '__qualname__', target)} takes no option "
            f"{', '.join(map(repr, unknown))}; its options are {', '.join(sorted(taken))}."
        )
    return dict(options)


def fetch_readable(
    repository: StateRepository, keys: Sequence[str], on_corrupt: Callable[[str], None]
) -> dict[str, StoredValue]:
    """``repository.fetch_many(keys)``, but a chunk holding a copy that fails its checksum
    is read again key by key: ``on_corrupt(key)`` for each such copy, the others kept."""
    from ..errors import IntegrityError

    try:
        return dict(repository.fetch_many(keys))
    except IntegrityError:
        pass
    found: dict[str, StoredValue] = {}
    for key in keys:
        try:
            stored = repository.fetch(key)
        except IntegrityError:
            on_corrupt(key)
            continue
        if stored is not None:
            found[key] = stored
    return found

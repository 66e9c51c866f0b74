"""The connection and settings every part of
:class:`~.redis_repository.RedisStateRepository` shares: the client (given or built from a
URL), the key prefix, the default TTL, the encoding of a write and the error raised when
Redis does not answer."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import ConfigurationError, TierUnavailableError
from ._write_checks import check_ttl, check_value
from .base import StateCategory
from .keys import validate_key
from .redis_codec import SET_VERSIONED_LUA, EncodedWrite, encode_write

__all__ = ["CHUNK", "RedisTierBase"]

CHUNK = 1000


def _describe(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"redis://{host}:{port}/{kwargs.get('db', 0)}"


class RedisTierBase:
    """The shared state of :class:`~.redis_repository.RedisStateRepository` (see there
    for the parameters)."""

    def __init__(
        self,
        client_or_url: redis.Redis | str,
        *,
        key_prefix: str = "tiered_state:",
        default_ttl_seconds: int | None = None,
        category: StateCategory = StateCategory.HOT,
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        if not isinstance(key_prefix, str):
            raise ConfigurationError(f"key_prefix must be a string, not {key_prefix!r}.")
        if default_ttl_seconds is not None:
            check_ttl(default_ttl_seconds, "default_ttl_seconds", setting=True)
        if isinstance(client_or_url, str):
            parts = urlsplit(client_or_url)
            if parts.scheme not in ("redis", "rediss", "unix"):
                raise ConfigurationError(
                    f"Redis URL {client_or_url!r} has scheme {parts.scheme!r}; use a "
                    "redis://, rediss:// or unix:// URL."
                )
            try:
                client: redis.Redis = redis.Redis.from_url(
                    client_or_url,
                    socket_timeout=socket_timeout,
                    socket_connect_timeout=connect_timeout,
                    # one quick retry replaces a pooled connection a restart broke; more
                    # would only delay the fall back to the next tier when Redis is down
                    retry=Retry(NoBackoff(), 1),
                )
            except ValueError as exc:
                raise ConfigurationError(f"Redis URL {client_or_url!r} is invalid: {exc}") from exc
            self._owns_client = True
        elif isinstance(client_or_url, redis.Redis):
            client, self._owns_client = client_or_url, False
        else:
            raise ConfigurationError(
                f"client_or_url must be a redis.Redis client or a redis:// URL, "
                f"not {type(client_or_url).__name__}."
            )
        self.category = category
        self.key_prefix = key_prefix
        self.default_ttl_seconds = default_ttl_seconds
        self.client = client
        self.location = _describe(client)
        self._where = f"Redis at {self.location}"
        self._category_bytes = category.value.encode("ascii")
        self._get = client.get
        self._set_versioned = client.register_script(SET_VERSIONED_LUA)

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

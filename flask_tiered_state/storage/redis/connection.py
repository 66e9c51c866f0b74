"""The Redis client of the HOT tier: built from a URL with timeouts and one quick retry,
or given; and how it is named in messages."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ...errors import ConfigurationError

__all__ = ["CHUNK", "SCHEMES", "describe", "redis_client"]

#: Keys per command (MGET, UNLINK, scripts) and per pipelined round trip.
CHUNK = 1000
#: The URL schemes of a Redis server.
SCHEMES = ("redis", "rediss", "unix")


def redis_client(
    client_or_url: redis.Redis | redis.ConnectionPool | str,
    *,
    socket_timeout: float,
    connect_timeout: float,
) -> tuple[redis.Redis, bool]:
    """The client to use and whether it was built here (and is closed by its user).

    An application's own client or pool is used as it is (one that decodes responses
    too: the codec reads text as well as bytes).
    """
    if isinstance(client_or_url, redis.Redis):
        return client_or_url, False
    if isinstance(client_or_url, redis.ConnectionPool):
        return redis.Redis(connection_pool=client_or_url), False
    if not isinstance(client_or_url, str):
        raise ConfigurationError(
            f"client_or_url must be a redis.Redis client, a redis.ConnectionPool or a "
            f"redis:// URL, not {type(client_or_url).__name__}."
        )
    parts = urlsplit(client_or_url)
    if parts.scheme not in SCHEMES:
        raise ConfigurationError(
            f"Redis URL {client_or_url!r} has scheme {parts.scheme!r}; use a "
            "redis://, rediss:// or unix:// URL."
        )
    try:
        client: redis.Redis = redis.Redis.from_url(
            client_or_url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            # One quick retry replaces a pooled connection a restart broke; more would
            # only delay the fall back to the next tier when Redis is down.
            retry=Retry(NoBackoff(), 1),
        )
    except ValueError as exc:
        raise ConfigurationError(f"Redis URL {client_or_url!r} is invalid: {exc}") from exc
    return client, True


def describe(client: redis.Redis) -> str:
    """The server of ``client`` as a URL without credentials, for messages."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"redis://{host}:{port}/{kwargs.get('db', 0)}"

"""Cross-process cache invalidation over Redis pub/sub (when the HOT tier is Redis).

Every process keeps its own :class:`~.cache.StateCache`. After each acknowledged
write, delete or move, the store publishes the keys on the channel
``{key_prefix}__invalidate__``, in the same pipeline as the deletion of the stale
HOT copies (one round trip), and a subscriber thread in every other store on that
Redis and prefix drops those keys from its cache. Messages carry the sender's id,
so a store ignores its own (its cache is already up to date).

Pub/sub delivers at most once and only while connected. The subscriber therefore
clears its whole cache whenever its subscription is (re)confirmed, because messages
may have been missed while it was disconnected; it reconnects with exponential
backoff and pings a silent connection to notice a dead one. Announcements that could
not be published (Redis was down for the writer) are kept and sent with the next
one, or on HOT's recovery; past ``max_deferred`` keys a "clear everything" message
replaces them. The cache's maximum age is the backstop for whatever is still missed.

Message format (ASCII): ``<sender> <key> <key> ...``, at most
:data:`KEYS_PER_MESSAGE` keys each; ``<sender> *`` asks every other cache to clear.
Keys cannot contain spaces or ``*`` (see :mod:`.keys`).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .cache import StateCache
from .health import logger

__all__ = [
    "KEYS_PER_MESSAGE",
    "CacheInvalidation",
    "InvalidationPublisher",
    "InvalidationSubscriber",
    "channel_for",
]

KEYS_PER_MESSAGE = 1000
CLEAR_ALL = "*"
#: The most messages the subscriber handles in one turn.
_DRAIN = 1000


def channel_for(key_prefix: str) -> str:
    """The invalidation channel of the stores that share ``key_prefix``."""
    return f"{key_prefix}__invalidate__"


class InvalidationPublisher:
    """Turns the keys of acknowledged changes into messages; keeps the ones that could
    not be sent until the next announcement.

    :param channel: the channel to publish on.
    :param sender: this store's id, carried in every message.
    :param max_deferred: the most keys kept while publishing fails; past it a single
        "clear everything" message replaces them.
    """

    def __init__(self, channel: str, sender: str, *, max_deferred: int = 100_000) -> None:
        self.channel = channel
        self.sender = sender
        self.max_deferred = max_deferred
        self._lock = threading.Lock()
        self._deferred: dict[str, None] = {}
        self.published = 0

    def take(self, keys: Iterable[str]) -> list[str]:
        """``keys`` plus the deferred ones (which are taken): what to announce now."""
        with self._lock:
            if not self._deferred:
                return list(keys)
            taken = [*self._deferred, *keys]
            self._deferred = {}
        return [CLEAR_ALL] if CLEAR_ALL in taken else taken

    def defer(self, keys: Iterable[str]) -> None:
        """Keep ``keys`` for the next announcement (their publication failed)."""
        with self._lock:
            self._deferred.update(dict.fromkeys(keys))
            if len(self._deferred) > self.max_deferred:
                self._deferred = {CLEAR_ALL: None}

    @property
    def deferred(self) -> int:
        return len(self._deferred)

    def messages(self, keys: Sequence[str]) -> list[bytes]:
        """The messages announcing ``keys`` (from :meth:`take`), one per chunk of keys."""
        if not keys:
            return []
        head = self.sender + " "
        if CLEAR_ALL in keys:
            return [(head + CLEAR_ALL).encode("ascii")]
        return [
            (head + " ".join(keys[start : start + KEYS_PER_MESSAGE])).encode("ascii")
            for start in range(0, len(keys), KEYS_PER_MESSAGE)
        ]

    def publish(self, send: Callable[[str, list[bytes]], object], announce: Iterable[str]) -> None:
        """Announce ``announce`` plus the deferred keys through ``send(channel, messages)``
        (a HOT call that publishes after its own work, in one round trip). On failure the
        keys are deferred and the error raised."""
        outgoing = self.take(announce)
        messages = self.messages(outgoing)
        try:
            send(self.channel, messages)
        except BaseException:
            self.defer(outgoing)
            raise
        self.published += len(messages)


def _subscriber_client(client: redis.Redis) -> tuple[redis.Redis, bool]:
    """A client of its own for the subscriber (same server and options, no transparent
    retries: the subscriber's loop reconnects itself); falls back to ``client``."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["retry"] = Retry(NoBackoff(), 0)
    for name, default in (("socket_timeout", 5.0), ("socket_connect_timeout", 2.0)):
        if kwargs.get(name) is None:
            kwargs[name] = default
    try:
        own = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    except Exception:  # an exotic pool (sentinel): share the client's
        return client, False
    return redis.Redis(connection_pool=own), True


class InvalidationSubscriber:
    """A daemon thread that drops the keys other stores announce from ``cache``.

    :param client: a client of the HOT Redis (its server and options are reused).
    :param channel: the channel to listen on.
    :param sender: this store's id; messages carrying it are ignored.
    :param cache: the cache to invalidate.
    :param initial_backoff: seconds before the first reconnection attempt.
    :param max_backoff: the longest wait between two attempts.
    :param poll_seconds: how long one wait for a message lasts (also the longest a
        stopped subscriber takes to notice).
    :param ping_seconds: a connection silent this long is pinged; one silent for twice
        this long is dropped and reconnected.
    :param on_subscribed: called (in the thread) every time a subscription is confirmed:
        Redis answers this process again (the store recovers its HOT tier at once).
    """

    def __init__(
        self,
        client: redis.Redis,
        channel: str,
        sender: str,
        cache: StateCache,
        *,
        initial_backoff: float = 0.1,
        max_backoff: float = 1.0,
        poll_seconds: float = 0.5,
        ping_seconds: float = 1.0,
        on_subscribed: Callable[[], object] | None = None,
    ) -> None:
        self.channel = channel
        self.sender = sender
        self.cache = cache
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.poll_seconds = poll_seconds
        self.ping_seconds = ping_seconds
        self.on_subscribed = on_subscribed
        # Until the first subscription is confirmed, changes may go unheard.
        cache.synchronised = False
        self._client, self._owns_client = _subscriber_client(client)
        untyped: Any = self._client  # redis-py's pubsub() has no annotations
        self._pubsub: Any = untyped.pubsub(ignore_subscribe_messages=False)
        self._stop = threading.Event()
        #: Set while subscribed (after the cache was cleared for the subscription).
        self.ready = threading.Event()
        self._attempted = threading.Event()
        self._subscribing = False
        self._last_seen = 0.0
        self._ping_sent = False
        self.failures = 0
        self.subscriptions = 0
        self.messages = 0
        self.own_messages = 0
        self.keys_invalidated = 0
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None
        owned = self._client if self._owns_client else None
        self._finalizer = weakref.finalize(self, _close, self._pubsub, owned, self._stop)

    # -- lifecycle -------------------------------------------------------------

    def start(self, wait: float = 3.0) -> None:
        """Start the thread and wait up to ``wait`` seconds for the first attempt to
        subscribe (so a store starts with its subscription in place when Redis is up)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=_run,
            args=(weakref.ref(self), self._stop),
            name=f"tiered-state-invalidation-{self.sender[:8]}",
            daemon=True,
        )
        self._thread.start()
        self._attempted.wait(wait)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread (woken at once by shutting its socket down) and disconnect."""
        self._stop.set()
        connection = getattr(self._pubsub, "connection", None)
        sock = getattr(connection, "_sock", None)
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout)
        self._finalizer()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def connected(self) -> bool:
        return self.ready.is_set()

    def stats(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "subscriptions": self.subscriptions,
            "messages": self.messages,
            "own_messages": self.own_messages,
            "keys_invalidated": self.keys_invalidated,
            "failed_attempts": self.failures,
            "last_error": self.last_error,
        }

    # -- the thread's work -----------------------------------------------------

    def step(self) -> None:
        """Subscribe if needed, then handle the messages waiting (run by the thread).

        Every message already received is handled in the same turn: a thread of a busy
        process gets the GIL only now and then, and one message per turn would let them
        pile up (under a thousand changes a second, invalidations fell tens of
        milliseconds behind).
        """
        pubsub = self._pubsub
        if not self._subscribing:
            pubsub.subscribe(self.channel)
            self._subscribing = True
            self._last_seen, self._ping_sent = time.monotonic(), False
        message = pubsub.get_message(timeout=self.poll_seconds)
        now = time.monotonic()
        if message is None:
            if now - self._last_seen >= self.ping_seconds:
                if self._ping_sent:
                    raise redis.ConnectionError(
                        f"no reply from Redis within {2 * self.ping_seconds:g} seconds"
                    )
                pubsub.ping()
                self._last_seen, self._ping_sent = now, True
            return
        self._last_seen, self._ping_sent = now, False
        keys: list[str] = []
        for _ in range(_DRAIN):
            kind = message.get("type")
            if kind in ("subscribe", b"subscribe"):
                self._subscribed()
            elif kind in ("message", b"message") and self._received(message.get("data"), keys):
                keys.clear()  # everything was cleared
            message = pubsub.get_message(timeout=0)
            if message is None:
                break
        if keys:
            self.cache.invalidate_many(keys)
            self.keys_invalidated += len(keys)

    def _subscribed(self) -> None:
        # Messages published while we were not subscribed are lost: start afresh.
        self.cache.clear()
        self.cache.synchronised = True
        if self.on_subscribed is not None:
            try:
                self.on_subscribed()
            except Exception:  # the thread must survive anything
                logger.exception("Recovering the HOT tier after resubscribing failed.")
        self.subscriptions += 1
        if self.failures:
            logger.warning(
                "Cache invalidation on %r resumed after %d failed attempts; the local cache "
                "was cleared.",
                self.channel,
                self.failures,
            )
        self.failures = 0
        self.last_error = None
        self.ready.set()
        self._attempted.set()

    def _received(self, data: object, keys: list[str]) -> bool:
        """Add the keys a message announces to ``keys``; True when it cleared the cache."""
        self.messages += 1
        if isinstance(data, bytes):
            try:
                text = data.decode("ascii")
            except UnicodeDecodeError:
                logger.warning("Ignoring a malformed invalidation message on %r.", self.channel)
                return False
        elif isinstance(data, str):
            text = data
        else:
            return False
        sender, _, rest = text.partition(" ")
        if sender == self.sender:
            self.own_messages += 1
            return False
        if not rest:
            return False
        if rest == CLEAR_ALL:
            self.cache.clear()
            return True
        keys += rest.split(" ")
        return False

    def lost(self, exc: BaseException) -> None:
        """The connection failed: drop it and wait before the next attempt."""
        self.cache.synchronised = False
        self.ready.clear()
        self._subscribing = False
        with suppress(Exception):
            self._pubsub.reset()
        if self._stop.is_set():
            return
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.failures == 1:
            logger.warning(
                "Cache invalidation on %r lost its Redis connection (%s); reconnecting with "
                "backoff. Until then cached values are served for %g seconds after they "
                "were cached, no longer.",
                self.channel,
                self.last_error,
                self.cache.unsynced_max_age_seconds,
            )
        self._attempted.set()
        delay = min(self.max_backoff, self.initial_backoff * 2 ** (self.failures - 1))
        self._stop.wait(delay)


def _run(ref: weakref.ref[InvalidationSubscriber], stop: threading.Event) -> None:
    # Only a weak reference: a store that is garbage-collected without close() ends
    # its thread too, at the next poll.
    while not stop.is_set():
        subscriber = ref()
        if subscriber is None:
            return
        try:
            subscriber.step()
        except Exception as exc:  # the thread must survive anything; it reconnects
            subscriber.lost(exc)
        del subscriber
    subscriber = ref()
    if subscriber is not None:
        with suppress(Exception):
            subscriber._pubsub.reset()


def _close(pubsub: Any, client: redis.Redis | None, stop: threading.Event) -> None:
    stop.set()
    with suppress(Exception):
        pubsub.reset()
    if client is not None:
        with suppress(Exception):
            client.connection_pool.disconnect()


class CacheInvalidation:
    """The publisher and the subscriber of one store.

    :param hot: the HOT :class:`~.redis.RedisStateRepository` (its client
        and key prefix).
    :param cache: the store's cache.
    :param options: passed to :class:`InvalidationSubscriber`.
    """

    def __init__(self, hot: Any, cache: StateCache, **options: Any) -> None:
        self.sender = uuid.uuid4().hex
        self.channel = channel_for(hot.key_prefix)
        self.publisher = InvalidationPublisher(self.channel, self.sender)
        self.subscriber = InvalidationSubscriber(
            hot.client, self.channel, self.sender, cache, **options
        )

    def start(self) -> None:
        self.subscriber.start()

    def stop(self) -> None:
        self.subscriber.stop()

    def stats(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "sender": self.sender,
            "published_messages": self.publisher.published,
            "deferred_keys": self.publisher.deferred,
            **self.subscriber.stats(),
        }

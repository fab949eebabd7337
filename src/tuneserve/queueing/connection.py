"""Reaching Redis: one clear error when it cannot be reached at start, and a back-off for
the worker's loops when it goes away mid-run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from tuneserve.exceptions import InvalidInputError, UnavailableError
from tuneserve.redact import mask_url

__all__ = [
    "REDIS_DOWN",
    "Backoff",
    "RedisHealth",
    "check_stream",
    "connect",
    "connect_sync",
    "group_lost",
    "transient",
]

log = logging.getLogger(__name__)

#: What a lost connection raises: the loops retry after these, with a back-off.
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

_SCHEMES = ("redis", "rediss", "unix")


def check_stream(kind: str, stream: str) -> None:
    """Refuse a ``--stream`` that names a key of another type (``kind``, from ``TYPE``).

    Raises:
        InvalidInputError: The key holds a string, a list... (names it and what to do).
    """
    if kind not in ("none", "stream"):
        raise InvalidInputError(
            f"--stream {stream!r} names a Redis key of type {kind}, not a stream; pass the "
            "name of the request stream (or of a key not in use), e.g. --stream "
            "tuneserve:requests"
        )


def transient(exc: redis.ResponseError) -> bool:
    """Whether an error reply says Redis cannot write *now* (a replica after a failover, a
    failed save with stop-writes-on-bgsave-error, a load, a busy script, memory full under
    ``maxmemory`` with ``noeviction``): worth waiting out, as a lost connection is.
    redis-py strips the code of some replies (``OOM``, ``READONLY``) and raises its own
    class for them, so both the class and the text are checked."""
    known = (redis.exceptions.ReadOnlyError, redis.exceptions.OutOfMemoryError)
    return isinstance(exc, known) or str(exc).startswith(
        ("READONLY", "MISCONF", "LOADING", "BUSY ", "MASTERDOWN", "TRYAGAIN", "NOREPLICAS", "OOM")
    )


def group_lost(exc: redis.ResponseError) -> bool:
    """Whether an error reply says the stream or its group is gone: NOGROUP (a Redis restarted
    without its data, FLUSHDB, XGROUP DESTROY) or UNBLOCKED (the stream deleted while a
    read waited on it). The worker creates them again and goes on; any other error reply
    (READONLY after a failover, MISCONF, a key of the wrong type) is waited out with a
    :class:`Backoff`."""
    return str(exc).startswith(("NOGROUP", "UNBLOCKED"))


def _options(url: str) -> dict[str, object]:
    if urlsplit(url).scheme not in _SCHEMES:
        raise InvalidInputError(
            f"--queue {mask_url(url)!r} is not a Redis URL; write redis://HOST:PORT/DB "
            "(e.g. redis://127.0.0.1:6379/0), rediss:// for TLS or unix:///PATH"
        )
    # a blocking XREADGROUP waits 1 s; a reply slower than 10 s means the server is gone
    return {
        "decode_responses": True,
        "encoding_errors": "replace",  # a message of bad bytes is dead-lettered, not fatal
        "socket_connect_timeout": 5,
        "socket_timeout": 10,
    }


def _down(url: str, exc: Exception) -> UnavailableError:
    return UnavailableError(
        f"cannot reach Redis at {mask_url(url)} ({type(exc).__name__}: {exc}). Hint: start "
        "it (redis-server) or pass --queue redis://HOST:PORT/DB of a running one"
    )


def _client(url: str, factory: Any, **extra: Any) -> object:
    try:
        return factory.from_url(url, **_options(url), **extra)
    except ValueError as exc:  # redis-py's own URL checks (a bad port, database...)
        raise InvalidInputError(
            f"--queue {mask_url(url)!r} is not a valid Redis URL: {exc}; write redis://HOST:PORT/DB"
        ) from None


async def connect(url: str) -> aioredis.Redis:
    """An asyncio client of the Redis at ``url``, checked with a PING. redis-py's own
    retries are off: the worker's loops retry with :class:`Backoff`, which logs and counts
    each error (one policy, visible in the metrics).

    Raises:
        InvalidInputError: ``url`` is not a Redis URL.
        UnavailableError: Redis cannot be reached (names the URL and what to do).
    """
    client = _client(url, aioredis.Redis, retry=AsyncRetry(NoBackoff(), 0))
    assert isinstance(client, aioredis.Redis)
    try:
        await client.ping()
    except REDIS_DOWN as exc:
        await client.aclose()
        raise _down(url, exc) from None
    return client


def connect_sync(url: str) -> redis.Redis:
    """A blocking client of the Redis at ``url``, checked with a PING (as :func:`connect`)."""
    client = _client(url, redis.Redis)
    assert isinstance(client, redis.Redis)
    try:
        client.ping()
    except REDIS_DOWN as exc:
        client.close()
        raise _down(url, exc) from None
    return client


class RedisHealth:
    """Whether Redis answers, as every loop of one worker sees it: one warning when it goes
    away (whichever loop notices first) and one when it is back, not one per waiting task.
    ``on_error`` is called for every failed call (the worker counts them)."""

    def __init__(self, url: str, on_error: Callable[[], None] | None = None) -> None:
        self.url = mask_url(url)
        self.on_error = on_error
        self.down = False

    def failed(self, exc: BaseException, doing: str) -> None:
        if self.on_error:
            self.on_error()
        if not self.down:
            self.down = True
            log.warning(
                "Redis at %s: %s failed (%s: %s); retrying in a back-off of 0.1 s to 5 s",
                self.url,
                doing,
                type(exc).__name__,
                exc,
            )

    def ok(self) -> None:
        if self.down:
            self.down = False
            log.warning("Redis at %s answers again; carrying on", self.url)


class Backoff:
    """Exponential waits after Redis errors: 0.1 s doubling to 5 s, back to 0.1 s after a
    success. Un-acknowledged messages stay pending in Redis while it waits, so nothing is
    lost: they are read again (or claimed) once Redis is back."""

    def __init__(self, health: RedisHealth, first: float = 0.1, cap: float = 5.0) -> None:
        self.health = health
        self.first, self.cap = first, cap
        self.delay = first

    async def wait(self, exc: BaseException, doing: str) -> None:
        """Note the error and sleep the current delay (doubled for the next time)."""
        self.health.failed(exc, doing)
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.cap)

    def reset(self) -> None:
        self.delay = self.first
        self.health.ok()

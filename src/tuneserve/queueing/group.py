"""A worker's membership of its stream's consumer group: join (creating the stream and the
group when missing), come back after they vanished, and leave without dropping anything."""

from __future__ import annotations

import contextlib
import logging

import redis
import redis.asyncio as aioredis

from .connection import REDIS_DOWN, Backoff, check_stream, group_lost, transient
from .protocol import LEAVE_SCRIPT, Keys

__all__ = ["Membership"]

log = logging.getLogger(__name__)


class Membership:
    """Consumer ``consumer`` of group ``group`` on ``keys.stream``."""

    def __init__(self, client: aioredis.Redis, keys: Keys, group: str, consumer: str) -> None:
        self.redis, self.keys, self.group, self.consumer = client, keys, group, consumer
        self._leave = client.register_script(LEAVE_SCRIPT)

    async def join(self) -> None:
        """Create the stream and the group if missing; a new group reads from the start, so
        messages sent before any worker started are served.

        Raises:
            InvalidInputError: The stream's name is a key of another type.
        """
        try:
            await self.redis.xgroup_create(self.keys.stream, self.group, "0", mkstream=True)
        except redis.ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):
                check_stream(str(await self.redis.type(self.keys.stream)), self.keys.stream)
            if "BUSYGROUP" not in str(exc):
                raise

    async def recover(self, exc: redis.ResponseError, backoff: Backoff, doing: str) -> None:
        """After an error reply: a stream or group that is gone is created again at once;
        Redis unable to write *now* (:func:`~.connection.transient`) is waited out with the
        back-off (and counted, and logged once).

        Raises:
            redis.ResponseError: Any other error reply (NOPERM, an unknown command, the
                stream's key replaced by another type): waiting cannot help, so the loop
                ends and the worker stops naming it, rather than retry forever.
        """
        if not group_lost(exc) and not transient(exc):
            raise exc
        problem: Exception = exc
        if group_lost(exc):
            try:
                await self.join()
            except (*REDIS_DOWN, redis.ResponseError) as again:
                problem = again
            else:
                log.warning(
                    "stream %s or its group %s was gone (%s); created again, carrying on",
                    self.keys.stream,
                    self.group,
                    exc,
                )
                return
        await backoff.wait(problem, doing)

    async def leave(self) -> None:
        """Leave the group's list of consumers, unless something is still pending under this
        name (deleting the consumer would drop it from the pending list, and no one could
        claim it). The check and the delete are one script: atomic."""
        with contextlib.suppress(*REDIS_DOWN, redis.ResponseError):
            await self._leave(keys=[self.keys.stream], args=[self.group, self.consumer])

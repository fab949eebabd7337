"""Back-pressure inside a worker: a message enters its model's batcher only while the
batcher has room for its items.

A batcher refuses items past ``--max-queue`` with :class:`~tuneserve.serving.batcher.
QueueFullError`. Over HTTP that is the right answer (the client retries); a worker reads as
many messages as ``--concurrency`` allows, and a refusal would cost the message a delivery
and a visibility timeout, and in the end a dead letter for a valid request. So a message
waits here, still pending under this worker's name (renewed by the claim loop), until its
items fit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["ItemGate"]


class ItemGate:
    """Counts the items each model has in its batcher, at most ``capacity`` at once.

    A request larger than ``capacity`` is let in alone (the batcher then refuses it with
    its own message); any other waits until its items fit.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._held: dict[str, int] = {}
        self._changed = asyncio.Condition()

    def held(self, model: str) -> int:
        return self._held.get(model, 0)

    @contextlib.asynccontextmanager
    async def hold(self, model: str, items: int) -> AsyncIterator[None]:
        """Wait until ``items`` more fit in ``model``'s batcher, and hold them while the
        body runs."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.held(model) == 0 or self.held(model) + items <= self.capacity
            )
            self._held[model] = self.held(model) + items
        try:
            yield
        finally:
            async with self._changed:
                self._held[model] -= items
                self._changed.notify_all()

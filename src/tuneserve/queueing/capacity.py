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
from collections import deque
from collections.abc import AsyncIterator

__all__ = ["ItemGate"]


class ItemGate:
    """Counts the items each model has in its batcher, at most ``capacity`` at once.

    Requests are let in in arrival order: one that does not fit yet also holds back those
    behind it, so a large request is never starved by a stream of small ones (waiting costs
    no delivery, so without the order it could wait forever). A request larger than
    ``capacity`` is let in alone (the batcher then refuses it with its own message).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._held: dict[str, int] = {}
        self._waiting: dict[str, deque[tuple[int, asyncio.Future[None]]]] = {}

    def held(self, model: str) -> int:
        return self._held.get(model, 0)

    def _fits(self, model: str, items: int) -> bool:
        return self.held(model) == 0 or self.held(model) + items <= self.capacity

    @contextlib.asynccontextmanager
    async def hold(self, model: str, items: int) -> AsyncIterator[None]:
        """Wait until ``items`` more fit in ``model``'s batcher and every request that came
        before is in, and hold them while the body runs."""
        queue = self._waiting.setdefault(model, deque())
        if queue or not self._fits(model, items):
            turn = (items, asyncio.get_running_loop().create_future())
            queue.append(turn)
            try:
                await turn[1]
            except asyncio.CancelledError:
                if turn[1].done() and not turn[1].cancelled():  # let in as it was cancelled
                    self._release(model, items)
                else:
                    with contextlib.suppress(ValueError):  # _admit may have dropped it
                        queue.remove(turn)
                    self._admit(model)  # the next one may fit now
                raise
        else:
            self._held[model] = self.held(model) + items
        try:
            yield
        finally:
            self._release(model, items)

    def _release(self, model: str, items: int) -> None:
        self._held[model] -= items
        self._admit(model)

    def _admit(self, model: str) -> None:
        """Let in the waiting requests, first come first, while the first one fits."""
        queue = self._waiting.get(model)
        while queue and self._fits(model, queue[0][0]):
            items, future = queue.popleft()
            if future.done():  # cancelled while waiting
                continue
            self._held[model] = self.held(model) + items
            future.set_result(None)

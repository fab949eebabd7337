"""Dynamic batching: requests for one model are queued and run together.

A worker takes the first waiting request, then keeps adding requests until the batch holds
``max_batch_size`` items or ``max_queue_delay_ms`` has passed since the first arrived, and
runs the batch in a thread (ONNX Runtime releases the GIL), off the event loop. The queue is
bounded: when ``max_queue`` items wait, new requests are refused at once (back-pressure).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuneserve.exceptions import InputItemError, TuneserveError


class QueueFullError(TuneserveError):
    """The model's queue is full: retry later (HTTP 503 with Retry-After)."""


@dataclass
class _Pending:
    items: list[Any]
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What the batcher did, for ``/metrics`` and tests."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    sizes: list[int] = field(default_factory=list)


class Batcher:
    """Queue and batch calls of ``run(items) -> array with one row per item``.

    Args:
        run: Runs a list of raw inputs (a :class:`Predictor`'s ``run``).
        max_batch_size: Most items per call.
        max_queue_delay_ms: Longest wait for more requests after the first of a batch.
        max_queue: Most items waiting; more are refused with :class:`QueueFullError`.
        executor: Threads the calls run on.
        on_batch: Called with (batch items, queue seconds of each request) after each run.
    """

    def __init__(
        self,
        run: Callable[[list[Any]], np.ndarray],
        *,
        max_batch_size: int = 32,
        max_queue_delay_ms: float = 2.0,
        max_queue: int = 1024,
        executor: ThreadPoolExecutor | None = None,
        on_batch: Callable[[int, list[float]], None] | None = None,
    ) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_delay = max_queue_delay_ms / 1000.0
        self.max_queue = max_queue
        self.executor = executor or ThreadPoolExecutor(max_workers=1)
        self.on_batch = on_batch
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._waiting = 0
        self._worker: asyncio.Task[None] | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None

    def _ensure_worker(self) -> asyncio.Queue[_Pending]:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._event_loop is not loop:  # first use, or a new event loop
            self._queue, self._event_loop, self._worker, self._waiting = (
                asyncio.Queue(),
                loop,
                None,
                0,
            )
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._loop())
        return self._queue

    async def submit(self, items: list[Any]) -> np.ndarray:
        """Run ``items`` in some batch; their result rows, in order."""
        queue = self._ensure_worker()
        if self._waiting + len(items) > self.max_queue:
            raise QueueFullError(
                f"the queue holds {self._waiting} items (limit {self.max_queue}); retry shortly"
            )
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._waiting += len(items)
        await queue.put(_Pending(list(items), future))
        return await future

    async def _loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            first = await queue.get()
            batch = [first]
            size = len(first.items)
            deadline = first.enqueued + self.max_delay
            while size < self.max_batch_size:
                timeout = deadline - time.perf_counter()
                if timeout <= 0 and queue.empty():
                    break
                try:
                    nxt = (
                        queue.get_nowait()
                        if timeout <= 0
                        else await asyncio.wait_for(queue.get(), timeout)
                    )
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                batch.append(nxt)
                size += len(nxt.items)
            self._waiting -= size
            await self._run(batch, size)

    async def _run(self, batch: list[_Pending], size: int) -> None:
        started = time.perf_counter()
        waits = [started - p.enqueued for p in batch]
        items = [item for p in batch for item in p.items]
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(self.executor, self.run, items)
        except InputItemError:
            # one request's bad input must not fail the others: run each on its own
            for pending in batch:
                await self._run_one(pending)
            return
        except Exception as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        self.stats.batches += 1
        self.stats.items += size
        self.stats.largest = max(self.stats.largest, size)
        self.stats.sizes.append(size)
        if self.on_batch:
            self.on_batch(size, waits)
        at = 0
        for pending in batch:
            n = len(pending.items)
            if not pending.future.done():
                pending.future.set_result(out[at : at + n])
            at += n

    async def _run_one(self, pending: _Pending) -> None:
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(self.executor, self.run, pending.items)
        except Exception as exc:
            if not pending.future.done():
                pending.future.set_exception(exc)
            return
        if not pending.future.done():
            pending.future.set_result(out)

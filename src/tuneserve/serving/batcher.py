"""Dynamic batching: requests for one model are queued and run together.

A worker takes the first waiting request, then keeps adding requests until the batch holds
``max_batch_size`` items or ``max_queue_delay_ms`` has passed since the first arrived, and
runs the batch in a thread (ONNX Runtime releases the GIL), off the event loop. The queue is
bounded: when ``max_queue`` items wait, new requests are refused at once (back-pressure).

The wait adapts to the load. Requests that queued while the previous batch ran join at
once. Then the worker waits for one more only if it is worth it: a :class:`CostModel`
fitted on recent batches gives the fixed cost of one call, a moving average gives the gap
between arrivals, and the worker waits while the next request should come before the
deadline and the wait it costs the items already taken (gap x items) is less than the call
it saves. Under light load a request runs at once instead of sitting out the whole delay;
under heavy load batches fill up. BentoML's adaptive batching (a learned latency model
too) is the reference; ``benchmarks/serve.py`` compares the two.

A request's items are a list of raw inputs, or a 2-D array whose rows are table rows in
the model's column order (what the server decodes Open Inference Protocol tables into);
:func:`join` makes one batch of several requests' items.

A batch that fails is run again one request at a time: whatever one request's items break
(in preprocessing or in the runtime) fails that request alone, never its neighbours.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuneserve.exceptions import UnavailableError

GAP_DECAY = 0.8  # weight of the past in the moving average of arrival gaps

#: The items of one request or one batch: raw inputs, or table rows as one 2-D array.
Items = list[Any] | np.ndarray


def join(parts: list[Items]) -> Items:
    """One batch of several requests' items, in order. Arrays of rows stack into one
    array (no per-row work); lists, or a mix of lists and arrays, make one list (an
    array contributes its rows)."""
    if len(parts) == 1:
        return parts[0]
    arrays = [p for p in parts if isinstance(p, np.ndarray)]
    if len(arrays) == len(parts) and len({a.shape[1:] for a in arrays}) == 1:
        return np.concatenate(arrays)  # float64 and object rows stack as object
    return [item for part in parts for item in part]


class CostModel:
    """Seconds per call as ``overhead + per_item * items``, a least-squares line through
    recent batches (exponentially weighted, so it follows the machine's load)."""

    def __init__(self, decay: float = 0.95) -> None:
        self.decay = decay
        self._sums = np.zeros(5)  # weight, n, t, n*n, n*t

    def observe(self, items: int, seconds: float) -> None:
        self._sums = self.decay * self._sums + (1.0, items, seconds, items * items, items * seconds)

    def overhead(self) -> float | None:
        """The fixed cost of one call in seconds; ``None`` before the first batch."""
        w, n, t, nn, nt = self._sums
        if w == 0:
            return None
        spread = w * nn - n * n
        if spread <= 1e-9 * w * w:  # one batch size seen: all of its time may be overhead
            return float(t / w)
        per_item = (w * nt - n * t) / spread
        return float(max((t - per_item * n) / w, 0.0))


class QueueFullError(UnavailableError):
    """The model's queue is full: retry later (HTTP 503 with Retry-After)."""


@dataclass
class _Pending:
    items: Items
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What the batcher did, for ``/metrics`` and tests."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    dropped: int = 0  # items of requests that timed out or left before they ran
    sizes: list[int] = field(default_factory=list)


class Batcher:
    """Queue and batch calls of ``run(items) -> array with one row per item``.

    Args:
        run: Runs :data:`Items` (a :class:`Predictor`'s ``run``).
        max_batch_size: Most items per call.
        max_queue_delay_ms: Longest wait for more requests after the first of a batch. The
            wait is adaptive: the batcher waits only while the observed arrival rate says
            another request should come before that deadline (a lone request under light
            load runs at once), and never while requests are already queued.
        max_queue: Most items waiting; more are refused with :class:`QueueFullError`.
        executor: Threads the calls run on.
        on_batch: Called with (batch items, queue seconds of each request) after each run.
    """

    def __init__(
        self,
        run: Callable[[Items], np.ndarray],
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
        self._last_arrival: float | None = None
        self.gap: float | None = None  # moving average of seconds between arrivals
        self.cost = CostModel()

    def _arrived(self, now: float) -> None:
        if self._last_arrival is not None:
            gap = now - self._last_arrival
            self.gap = gap if self.gap is None else GAP_DECAY * self.gap + (1 - GAP_DECAY) * gap
        self._last_arrival = now

    def _worth_waiting(self, remaining: float, items: int) -> bool:
        """Wait for one more request? Only if it should come within ``remaining`` seconds
        and the wait it costs the ``items`` already taken is less than the per-call
        overhead that merging it saves."""
        overhead = self.cost.overhead()
        return (
            self.gap is not None
            and overhead is not None
            and self.gap < remaining
            and self.gap * items < overhead
        )

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

    async def submit(self, items: Items) -> np.ndarray:
        """Run ``items`` in some batch; their result rows, in order."""
        queue = self._ensure_worker()
        if self._waiting + len(items) > self.max_queue:
            raise QueueFullError(
                f"the queue holds {self._waiting} items (limit {self.max_queue}); retry shortly"
            )
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._waiting += len(items)
        pending = _Pending(items if isinstance(items, np.ndarray) else list(items), future)
        self._arrived(pending.enqueued)
        await queue.put(pending)
        return await future

    def _live(self, pending: _Pending) -> bool:
        """Whether a queued request still waits for its answer; the work of one that timed
        out (or whose client left) is dropped, so it delays nobody behind it."""
        if not pending.future.done():
            return True
        self._waiting -= len(pending.items)
        self.stats.dropped += len(pending.items)
        return False

    async def _loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            first = await queue.get()
            if not self._live(first):
                continue
            batch = [first]
            size = len(first.items)
            deadline = first.enqueued + self.max_delay
            while size < self.max_batch_size:
                timeout = deadline - time.perf_counter()
                if queue.empty() and (timeout <= 0 or not self._worth_waiting(timeout, size)):
                    break
                try:
                    nxt = (
                        queue.get_nowait()
                        if timeout <= 0
                        else await asyncio.wait_for(queue.get(), timeout)
                    )
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                if not self._live(nxt):
                    continue
                batch.append(nxt)
                size += len(nxt.items)
            self._waiting -= size
            await self._run(batch, size)

    async def _run(self, batch: list[_Pending], size: int) -> None:
        started = time.perf_counter()
        waits = [started - p.enqueued for p in batch]
        items = batch[0].items if len(batch) == 1 else join([p.items for p in batch])
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(self.executor, self.run, items)
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            # Whatever broke the batch (an item the checks before batching let through, or
            # the runtime itself), it must fail only the request that caused it: run each
            # request on its own, so a neighbour's bad item never fails a good request.
            for pending in batch:
                await self._run_one(pending)
            return
        self.cost.observe(size, time.perf_counter() - started)
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

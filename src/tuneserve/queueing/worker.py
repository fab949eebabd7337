"""The queue worker: reads inference requests from a Redis Stream with a consumer group,
answers them with the server's own prediction path, and records each outcome once.

Delivery is at-least-once, results are exactly-once per request id:

* A message is acknowledged only in the script that records its outcome
  (:data:`~.outcome.FINISH_SCRIPT`: result, dead letter, reply, ack, one atomic step,
  idempotent by request id). A worker that dies before that leaves it pending.
* Every ``visibility_timeout / 2`` seconds each worker renews the messages it has in work
  (XCLAIM JUSTID: no delivery counted), then claims (XAUTOCLAIM) the messages pending
  longer than ``visibility_timeout``, which a dead or failing delivery left, and runs them
  again; one delivered more than ``max_attempts`` times is dead-lettered with its last
  error.
* Whose fault decides what a failure does (:func:`tuneserve.serving.errors.status_of`,
  the same table as HTTP): the client's (a message that is no request, an unknown model,
  bad inputs: 4xx) is recorded at once as an error result and a dead letter, since
  retrying cannot help; the server's (a full queue, the time limit, anything unexpected:
  5xx) leaves the message pending for a retry.

Messages run as concurrent asyncio tasks (up to ``concurrency``), so a model's
:class:`~tuneserve.serving.batcher.Batcher` merges them into one ONNX Runtime call, as it
does HTTP requests. Redis errors are retried with a back-off: nothing is lost while it is
away, since whatever is not acknowledged stays pending in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

import redis
import redis.asyncio as aioredis

from tuneserve.serving.batcher import QueueFullError
from tuneserve.serving.errors import status_of
from tuneserve.serving.infer import predict_json
from tuneserve.serving.state import ServerState

from .capacity import ItemGate
from .connection import REDIS_DOWN, Backoff, RedisHealth, transient
from .group import Membership
from .metrics import QueueMetrics, QueueState, read_queue_state
from .outcome import FINISH_SCRIPT, Outcome, Retention, finish_call
from .protocol import (
    FIELD,
    RENEW_SCRIPT,
    Keys,
    MalformedMessageError,
    Request,
    parse_request,
    shown,
)
from .settings import WorkerSettings

__all__ = ["Worker", "WorkerSettings"]

log = logging.getLogger(__name__)


class Worker:
    """Serves the models of ``state`` to the request stream of ``settings``.

    Args:
        state: The models (loaded), limits and metrics, as the HTTP server has them.
        client: An asyncio Redis client (``decode_responses=True``; see
            :func:`~.connection.connect`).
        settings: Stream, group, limits of the reading and retrying.
        url: Redis's address, for log lines.
        metrics: Where to count; default: new ones in ``state.metrics.registry`` (one
            scrape shows both). A registry takes one set: pass it to a second worker.
    """

    def __init__(
        self,
        state: ServerState,
        client: aioredis.Redis,
        settings: WorkerSettings | None = None,
        url: str = "redis",
        metrics: QueueMetrics | None = None,
    ) -> None:
        self.state = state
        self.redis = client
        self.settings = settings or WorkerSettings()
        self.url = url
        self.keys = Keys(self.settings.stream)
        self.metrics = metrics or QueueMetrics(state.metrics.registry)
        errors = self.metrics.redis_errors.labels(self.settings.stream)
        self.health = RedisHealth(url, errors.inc)
        self.processed = 0  # outcomes this worker recorded
        self._finish = client.register_script(FINISH_SCRIPT)
        self._renew = client.register_script(RENEW_SCRIPT)
        self._lost: set[str] = set()  # in work here, but another worker claimed them
        self.group = Membership(client, self.keys, self.settings.group, self.settings.consumer)
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._room = ItemGate(state.repository.settings.max_queue)
        self._draining = False  # no more claims; in-flight messages are still renewed
        self._closing = asyncio.Event()  # the drain is over: the helper loops end

    async def ensure_group(self) -> None:
        """Join the group (see :meth:`~.group.Membership.join`)."""
        await self.group.join()

    async def run(self, stop: asyncio.Event) -> int:
        """Serve until ``stop`` is set, then finish the messages in work (drain) and return
        how many outcomes this worker recorded. Cancelled, it stops at once: what was in
        work stays pending and other workers claim it.

        Raises:
            RuntimeError: A loop (reading, claiming, the metrics, the alias watch) ended
                with an error (a bug, or an error reply waiting cannot cure: NOPERM,
                WRONGTYPE...): the worker stops with it rather than serve without it.
        """
        await self.ensure_group()
        helpers = [
            asyncio.create_task(self._claim_loop(), name="claim loop"),
            asyncio.create_task(self._observe(), name="metrics loop"),
        ]
        if self.state.watch_interval:
            helpers.append(asyncio.create_task(self.state.follow_aliases(), name="alias watch"))
        reader = asyncio.create_task(self._read_loop(stop), name="read loop")
        try:
            done, _ = await asyncio.wait([reader, *helpers], return_when=asyncio.FIRST_COMPLETED)
            for task in done:  # the helpers run until the drain ends: one that ended died
                exc = None if task.cancelled() else task.exception()
                if task is not reader or exc is not None:
                    raise RuntimeError(
                        f"the worker's {task.get_name()} ended ({type(exc).__name__}: {exc}); "
                        "the worker stops "
                        "(what is in work stays pending, other workers claim it)"
                    ) from exc
            reader.result()
            await self._drain(helpers)
        finally:
            for task in [reader, *helpers, *self._inflight.values()]:
                task.cancel()
            await asyncio.gather(reader, *helpers, return_exceptions=True)
        return self.processed

    async def _drain(self, helpers: list[asyncio.Task[Any]]) -> None:
        """Finish the messages in work, then end the helper loops and leave the group.

        The claim loop stops *claiming* but goes on renewing what is in work (a drain
        longer than the visibility timeout must not let other workers take it), and ends
        by itself once nothing is. The loops end on a flag, never by ``cancel()``: redis-py
        (8.1) can swallow a cancellation that lands inside a command, and a cancelled
        claim loop then ran on forever while the drain waited for it.
        """
        self._draining = True
        while self._inflight:
            await asyncio.wait(list(self._inflight.values()))
        self._closing.set()
        ours = [t for t in helpers if t.get_name() != "alias watch"]
        for task in helpers:
            if task not in ours:  # the registry watch: no Redis call in it
                task.cancel()
        await asyncio.wait(helpers)
        while self._inflight:  # what a claim sent just as the drain began started
            await asyncio.wait(list(self._inflight.values()))
        await self.group.leave()

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``; cut short when the drain is over (then, while something is
        still in work, until a message ends)."""
        if self._closing.is_set():
            if self._inflight:
                waiting = list(self._inflight.values())
                await asyncio.wait(waiting, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing.wait()

    # ---- reading and claiming ----------------------------------------------------------

    @property
    def free(self) -> int:
        return self.settings.concurrency - len(self._inflight)

    async def _read_loop(self, stop: asyncio.Event) -> None:
        s = self.settings
        backoff = Backoff(self.health)
        while not stop.is_set():
            if self.free <= 0:
                await asyncio.wait(
                    list(self._inflight.values()),
                    timeout=s.block_ms / 1000,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                continue
            try:
                replies: Any = await self.redis.xreadgroup(
                    s.group,
                    s.consumer,
                    {self.keys.stream: ">"},
                    count=min(self.free, s.read_count),
                    block=s.block_ms,
                )
            except REDIS_DOWN as exc:
                await backoff.wait(exc, "reading")
                continue
            except redis.ResponseError as exc:
                await self.group.recover(exc, backoff, "reading")
                continue
            backoff.reset()
            for _, entries in replies or []:
                for entry_id, fields in entries:
                    self._start(entry_id, fields, 1)

    def _start(self, entry_id: str, fields: dict[str, str], deliveries: int) -> None:
        if entry_id in self._inflight:  # claimed while in work here: the claim renewed it
            return
        if deliveries > self.settings.max_attempts:
            coro = self._give_up(entry_id, fields, deliveries)
        else:
            coro = self._handle(entry_id, fields, deliveries)
        task = asyncio.create_task(self._guarded(entry_id, coro))
        self._inflight[entry_id] = task
        task.add_done_callback(lambda _: self._forget(entry_id))

    def _forget(self, entry_id: str) -> None:
        self._inflight.pop(entry_id, None)
        self._lost.discard(entry_id)

    async def _guarded(self, entry_id: str, work: Coroutine[Any, Any, None]) -> None:
        """Run one message's work; an error nobody expected (Redis refusing the finish
        script, say) is logged and leaves the message pending, to be claimed again."""
        try:
            await work
        except Exception:
            log.exception("%s failed unexpectedly; left pending for a retry", entry_id)

    async def _claim_loop(self) -> None:
        """Every half visibility timeout: renew the messages in work here, then (unless
        draining) claim what dead or failing deliveries left pending."""
        backoff = Backoff(self.health)
        idle_ms = max(int(self.settings.visibility_timeout * 1000), 1)
        while True:  # until the drain is over and nothing is in work
            await self._pause(max(self.settings.visibility_timeout / 2, 0.05))
            if self._closing.is_set() and not self._inflight:
                return
            try:
                await self.renew()
                if not self._draining:
                    await self.claim(idle_ms)
            except REDIS_DOWN as exc:
                await backoff.wait(exc, "claiming")
                continue
            except redis.ResponseError as exc:
                await self.group.recover(exc, backoff, "claiming")
                continue
            backoff.reset()

    async def renew(self) -> None:
        """Reset the idle time of the messages in work here, so that no worker (this one
        included) claims them while this one lives; only those still pending under this
        name (:data:`~.protocol.RENEW_SCRIPT`): one another worker claimed meanwhile is
        left to it. Renewal counts no delivery: a slow healthy message is never
        dead-lettered for it."""
        ids: list[Any] = [i for i in self._inflight if i not in self._lost]
        if ids:
            s = self.settings
            lost = await self._renew(keys=[self.keys.stream], args=[s.group, s.consumer, *ids])
            self._lost.update(lost)

    async def claim(self, idle_ms: int) -> int:
        """Claim and start the messages pending longer than ``idle_ms`` (as many as there is
        room for); how many were claimed."""
        s, start, claimed = self.settings, "0-0", 0
        while self.free > 0:
            reply = await self.redis.xautoclaim(
                self.keys.stream, s.group, s.consumer, idle_ms, start_id=start, count=self.free
            )
            start, entries = reply[0], [(i, f) for i, f in reply[1] if f is not None]
            if entries:
                pipe = self.redis.pipeline(transaction=False)
                for entry_id, _ in entries:
                    pipe.xpending_range(self.keys.stream, s.group, entry_id, entry_id, 1)
                rows = await pipe.execute()
                counts = [r[0]["times_delivered"] if r else 1 for r in rows]
                for (entry_id, fields), deliveries in zip(entries, counts, strict=True):
                    if entry_id not in self._inflight:
                        self.metrics.retried.labels(s.stream).inc()
                    self._start(entry_id, fields, deliveries)
                claimed += len(entries)
            if start == "0-0":
                break
        return claimed

    # ---- one message ----------------------------------------------------------------------

    async def _handle(self, entry_id: str, fields: dict[str, str], deliveries: int) -> None:
        raw, limit = fields.get(FIELD) or "", self.state.limits.max_body_bytes
        size = sum(len(k) + len(v) for k, v in fields.items())  # every field: all is stored
        if size > limit:  # refused before JSON (and before any image is decoded)
            error = (
                f"the message is {size:,} characters (all its fields); the limit is {limit:,} "
                f"(--max-body-mb {limit / 2**20:g}). Hint: send fewer or smaller inputs per "
                "request, or start the workers with a larger --max-body-mb"
            )
            cut = {FIELD: f"{raw[:1000]}... (cut: {size:,} characters)"}
            await self._record(entry_id, cut, Outcome(None, error=error, dead=True), deliveries)
            return
        try:
            request = parse_request(fields, self.keys, max_ttl=self.settings.result_ttl)
        except MalformedMessageError as exc:
            outcome = Outcome(exc.request_id, error=str(exc), dead=True, reply_to=exc.reply_to)
            await self._record(entry_id, fields, outcome, deliveries)
            return
        failed = Outcome(request.id, request.model, reply_to=request.reply_to, dead=True)
        failed.reply_ttl = request.ttl
        repository = self.state.repository
        if request.model not in repository.specs:
            failed.status = 404
            failed.error = (
                f"no model named {shown(request.model)} is served on stream "
                f"{self.keys.stream!r}; "
                f"served: {repository.listed}. Every worker of a stream must serve every "
                "model sent to it (one stream per set of models); a message for a model this "
                f"worker lacks is dead-lettered. Hint: start the workers of this stream with "
                f"--model {shown(request.model)[1:-1]} too, or send it to the stream of "
                "the workers that serve it"
            )
            await self._record(entry_id, fields, failed, deliveries)
            return
        try:
            inputs = request.payload.get("inputs")
            items = len(inputs) if isinstance(inputs, list) else 1
            self.state.check_items(items)  # refused at once, not after waiting for room
            answer = await self._predict(request, items)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            problem = str(exc) or type(exc).__name__  # a timeout says its limit
            if status_of(exc) < 500:  # the request's fault: retrying cannot help
                failed.error, failed.status = problem, status_of(exc)
                await self._record(entry_id, fields, failed, deliveries)
                return
            # The server's: left pending, claimed again after the visibility timeout.
            log.warning(
                "request %s (%s) failed on delivery %d, left for a retry: %s: %s",
                request.id,
                entry_id,
                deliveries,
                type(exc).__name__,
                problem,
                exc_info=status_of(exc) == 500,
            )
            await self._note_failure(entry_id, f"{type(exc).__name__}: {problem}")
            return
        outcome = Outcome(request.id, request.model, str(answer["version"]), answer)
        outcome.reply_to, outcome.reply_ttl = request.reply_to, request.ttl
        await self._record(entry_id, fields, outcome, deliveries)

    async def _predict(self, request: Request, items: int) -> dict[str, Any]:
        """The answer, once the items fit in the model's batcher. The gate frees a timed-out
        request's items at once, while the batcher counts them until it dequeues them: a
        full batcher here is the worker's own overload, waited out locally rather than
        costing the message a delivery (unless the request alone is over the capacity)."""
        delay = 0.01
        while True:
            async with self._room.hold(request.model, items):
                try:
                    return await predict_json(self.state, request.model, request.payload, "queue")
                except QueueFullError:
                    if items > self._room.capacity:
                        raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _give_up(self, entry_id: str, fields: dict[str, str], deliveries: int) -> None:
        """Dead-letter a message delivered more than ``max_attempts`` times, with the last
        error any worker noted for it."""
        last: Any = None
        with contextlib.suppress(*REDIS_DOWN):  # the dead letter says less, still written
            last = await self.redis.hget(self.keys.failures, entry_id)
        error = (
            f"gave up after {deliveries - 1} deliveries (--max-attempts "
            f"{self.settings.max_attempts}); last error: "
            + (last or "none noted: each worker that took it stopped before it finished")
        )
        try:
            request = parse_request(fields, self.keys, max_ttl=self.settings.result_ttl)
            outcome = Outcome(request.id, request.model, error=error, status=503, dead=True)
            outcome.reply_to, outcome.reply_ttl = request.reply_to, request.ttl
        except MalformedMessageError as exc:
            outcome = Outcome(exc.request_id, error=str(exc), dead=True, reply_to=exc.reply_to)
        except Exception as exc:  # giving up must not fail: the raw fields, with the error
            problem = f"{error}; the message cannot be read ({type(exc).__name__}: {exc})"
            outcome = Outcome(None, error=problem, dead=True)
        await self._record(entry_id, fields, outcome, deliveries)

    async def _note_failure(self, entry_id: str, error: str) -> None:
        with contextlib.suppress(*REDIS_DOWN):  # only a dead letter's message would lack it
            await self.redis.hset(self.keys.failures, entry_id, error)

    async def _record(
        self, entry_id: str, fields: dict[str, str], outcome: Outcome, deliveries: int
    ) -> None:
        """Run the finish script until Redis takes it (retried while Redis is away)."""
        s, rid, ok = self.settings, outcome.request_id, outcome.error is None
        keep = Retention(s.group, s.result_ttl, s.results_maxlen, s.dead_maxlen)
        keys, args = finish_call(self.keys, keep, entry_id, fields, outcome, deliveries)
        backoff = Backoff(self.health)
        while True:
            try:
                recorded, dropped = await self._finish(keys=keys, args=args)
                break
            except REDIS_DOWN as exc:
                await backoff.wait(exc, f"recording {entry_id}")
            except redis.ResponseError as exc:
                if not transient(exc):
                    raise
                await backoff.wait(exc, f"recording {entry_id}")
        backoff.reset()
        if dropped:
            log.warning(
                "request %s: reply_to %r is a key of another type, not a list: its outcome "
                "is recorded in %s without a reply",
                rid,
                outcome.reply_to,
                self.keys.results,
            )
        if not recorded:
            log.debug("%s (request %s) was recorded by another delivery", entry_id, rid)
            return
        self.processed += 1
        self.metrics.processed.labels(s.stream, "ok" if ok else "error").inc()
        if outcome.dead:
            self.metrics.dead_lettered.labels(s.stream).inc()
            log.warning("dead-lettered %s (request %s): %s", entry_id, rid, outcome.error)

    # ---- the queue's state, for the metrics ------------------------------------------

    async def queue_state(self) -> QueueState:
        """What the stream holds now (see :func:`~.metrics.read_queue_state`)."""
        return await read_queue_state(self.redis, self.keys.stream, self.settings.group)

    async def _observe(self) -> None:
        gauges, stream = self.metrics, self.settings.stream
        while not self._closing.is_set():
            try:
                state = await self.queue_state()
            except (*REDIS_DOWN, redis.ResponseError):
                pass  # the read loop reports Redis errors; the gauges keep their last value
            else:
                gauges.show(stream, state)
            await self._pause(self.settings.observe_interval)

"""The worker's Prometheus metrics: the queue's state (read from Redis) and what this worker
did, next to the server's own request and batching metrics (api label ``queue``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["QueueMetrics", "QueueState", "read_queue_state"]


@dataclass(frozen=True)
class QueueState:
    """What a stream holds now: unread, pending, and the oldest unfinished message's age."""

    backlog: int
    pending: int
    oldest_age: float


async def read_queue_state(client: aioredis.Redis, stream: str, group: str) -> QueueState:
    """Backlog (unread by ``group``), pending, and the oldest unfinished message's age in
    seconds, by Redis's clock. Workers delete what they finish, so the oldest unfinished
    message is the stream's first entry; and when deletions leave ``XINFO GROUPS`` without
    a lag, the backlog is the stream's length less what is pending."""
    pipe = client.pipeline(transaction=False)
    pipe.xinfo_groups(stream)
    pipe.xpending(stream, group)
    pipe.xrange(stream, "-", "+", count=1)
    pipe.xlen(stream)
    pipe.time()
    groups, pending, first, length, now = await pipe.execute()
    found: dict[str, Any] = next((g for g in groups if g["name"] == group), {})
    waiting = int(pending["pending"])
    lag = found.get("lag")
    backlog = int(lag) if lag is not None else max(int(length) - waiting, 0)
    age = 0.0
    if first:
        millis = int(first[0][0].split("-")[0])  # an entry id is "<ms>-<seq>"
        age = max(now[0] + now[1] / 1e6 - millis / 1000, 0.0)
    return QueueState(backlog, waiting, age)


class QueueMetrics:
    """Backlog, pending, the oldest message's age, and processed / retried / dead-lettered
    counts, labelled by stream. Registered in ``registry`` (the server's
    :class:`~tuneserve.serving.metrics.Metrics` registry, so one scrape shows both)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.backlog = Gauge(
            "tuneserve_queue_backlog",
            "Messages in the stream that no worker of the group has read yet",
            ["stream"],
            registry=registry,
        )
        self.pending = Gauge(
            "tuneserve_queue_pending",
            "Messages read by a worker and not yet acknowledged (in work, or left by a worker "
            "that died and waiting to be claimed)",
            ["stream"],
            registry=registry,
        )
        self.oldest_age = Gauge(
            "tuneserve_queue_oldest_age_seconds",
            "Age of the oldest message not yet acknowledged (pending or unread); 0 when empty",
            ["stream"],
            registry=registry,
        )
        self.processed = Counter(
            "tuneserve_queue_processed",
            "Requests this worker recorded an outcome for, by outcome (ok, error)",
            ["stream", "outcome"],
            registry=registry,
        )
        self.retried = Counter(
            "tuneserve_queue_retried",
            "Messages this worker claimed after another delivery of them was not acknowledged "
            "in time (a failure or a worker that died)",
            ["stream"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "tuneserve_queue_dead_lettered",
            "Messages this worker moved to the dead-letter stream",
            ["stream"],
            registry=registry,
        )
        self.redis_errors = Counter(
            "tuneserve_queue_redis_errors",
            "Redis connection errors this worker retried after",
            ["stream"],
            registry=registry,
        )

    def show(self, stream: str, state: QueueState) -> None:
        """Set the gauges of ``stream`` to ``state``."""
        self.backlog.labels(stream).set(state.backlog)
        self.pending.labels(stream).set(state.pending)
        self.oldest_age.labels(stream).set(state.oldest_age)

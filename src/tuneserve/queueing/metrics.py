"""The worker's Prometheus metrics: the queue's state (read from Redis) and what this worker
did, next to the server's own request and batching metrics (api label ``queue``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["QueueMetrics"]


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

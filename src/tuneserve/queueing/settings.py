"""How a worker reads and retries: the settings ``tuneserve worker`` passes to
:class:`~.worker.Worker`."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from .protocol import DEFAULT_GROUP, DEFAULT_STREAM

__all__ = ["WorkerSettings", "default_consumer"]


def default_consumer() -> str:
    """This process's consumer name: ``hostname-pid``."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerSettings:
    """How a worker reads and retries.

    Attributes:
        stream: The request stream; the other keys derive from it (:class:`~.protocol.Keys`).
        group: The consumer group all workers of the stream share.
        consumer: This worker's name in the group.
        concurrency: Most messages in work at once.
        visibility_timeout: Seconds a message may stay unacknowledged before another worker
            claims it. Must exceed the time a request takes (the ``--timeout``).
        max_attempts: Deliveries before a message that keeps failing is dead-lettered.
        result_ttl: Seconds a request id is remembered (a repeat is not answered twice) and
            a reply list is kept.
        results_maxlen: The results stream is trimmed to about this many entries.
        dead_maxlen: The dead-letter stream is trimmed to about this many entries.
        read_count: Most messages read per XREADGROUP (the model's batch size is a fit).
    """

    stream: str = DEFAULT_STREAM
    group: str = DEFAULT_GROUP
    consumer: str = field(default_factory=default_consumer)
    concurrency: int = 64
    visibility_timeout: float = 60.0  # above Limits.timeout_s (30)
    max_attempts: int = 5
    result_ttl: int = 24 * 3600
    results_maxlen: int = 1_000_000
    dead_maxlen: int = 100_000
    read_count: int = 32
    block_ms: int = 1000
    observe_interval: float = 1.0

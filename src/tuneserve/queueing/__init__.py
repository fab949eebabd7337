"""The message queue: inference requests read from a Redis Stream by workers of one consumer
group, answered with the server's own prediction path (:mod:`tuneserve.serving.infer`), each
outcome recorded once. See docs/queue.md. Never imports torch.

The client side is :class:`tuneserve.client.QueueClient`.
"""

from .connection import connect, connect_sync
from .metrics import QueueMetrics, QueueState
from .process import WorkerConfig, load_state, run_worker
from .protocol import (
    DEFAULT_GROUP,
    DEFAULT_STREAM,
    Keys,
    MalformedMessageError,
    Request,
    encode_request,
    parse_request,
)
from .worker import Worker, WorkerSettings

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_STREAM",
    "Keys",
    "MalformedMessageError",
    "QueueMetrics",
    "QueueState",
    "Request",
    "Worker",
    "WorkerConfig",
    "WorkerSettings",
    "connect",
    "connect_sync",
    "encode_request",
    "load_state",
    "parse_request",
    "run_worker",
]

"""The worker as a process: load the models, connect, serve the metrics, and stop on
signals (the first drains, a second stops at once)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from tuneserve.redact import mask_url
from tuneserve.serving.metrics import Metrics
from tuneserve.serving.repository import BatchSettings, ModelSpec, Repository
from tuneserve.serving.state import Limits, ServerState

from .connection import connect
from .worker import Worker, WorkerSettings

__all__ = ["WorkerConfig", "load_state", "run_worker"]

log = logging.getLogger(__name__)


@dataclass
class WorkerConfig:
    """Everything ``tuneserve worker`` is told."""

    models: list[str]
    url: str
    settings: WorkerSettings = field(default_factory=WorkerSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    limits: Limits = field(default_factory=Limits)
    watch: float = 5.0
    threads: int | None = None
    max_image_pixels: int = 40_000_000
    metrics_port: int | None = None  # None: no endpoint; 0: a free port
    metrics_host: str = "127.0.0.1"


def load_state(config: WorkerConfig) -> ServerState:
    """The models loaded (each warmed up, with its batcher), the limits and the metrics:
    the state the HTTP server builds, with no HTTP app around it."""
    from tuneserve.preprocessing.image import set_max_image_pixels

    set_max_image_pixels(config.max_image_pixels)
    repository = Repository(
        [ModelSpec.parse(m) for m in config.models], config.batch, intra_op_threads=config.threads
    )
    repository.load_all()
    state = ServerState(repository, config.limits, Metrics(), watch_interval=config.watch or None)
    repository.on_batch = state.metrics.on_batch
    state.metrics.show_loaded(repository)
    return state


def run_worker(
    config: WorkerConfig, state: ServerState, echo: Callable[[str], None] = print
) -> int:
    """Serve until SIGTERM or SIGINT, then drain; the number of outcomes recorded. A second
    signal stops at once (:class:`asyncio.CancelledError` is raised out of this call)."""
    return asyncio.run(_main(config, state, echo))


async def _main(config: WorkerConfig, state: ServerState, echo: Callable[[str], None]) -> int:
    client = await connect(config.url)
    worker = Worker(state, client, config.settings, config.url)
    await worker.ensure_group()
    if config.metrics_port is not None:
        from prometheus_client import start_http_server

        server, _ = start_http_server(
            config.metrics_port, config.metrics_host, registry=state.metrics.registry
        )
        echo(f"metrics on http://{config.metrics_host}:{server.server_port}/metrics")
    s = config.settings
    echo(
        f"worker {s.consumer} of group {s.group} reading {s.stream} at {mask_url(config.url)} "
        f"(up to {s.concurrency} in work); SIGTERM or Ctrl-C drains"
    )
    stop = asyncio.Event()
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if not stop.is_set():
            echo("stopping: finishing the messages in work (signal again to stop at once)")
            stop.set()
        elif main is not None:
            main.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        return await worker.run(stop)
    finally:
        await client.aclose()

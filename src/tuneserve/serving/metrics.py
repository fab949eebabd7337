"""The server's Prometheus metrics, and ``/metrics`` across worker processes.

With ``--workers N``, ``tuneserve serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` and every worker
writes its values there; ``/metrics`` then sums the counters and histograms of all workers,
whichever one answers.
"""

from __future__ import annotations

import contextlib
import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .repository import Repository

__all__ = ["CONTENT_TYPE_LATEST", "MULTIPROCESS_ENV", "Metrics"]

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """Requests, latency, batching, loads and traffic splits, by model."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tuneserve_requests",
            "Requests by model, API and HTTP status",
            ["model", "api", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tuneserve_request_seconds",
            "Request latency",
            ["model", "api"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.queue = Histogram(
            "tuneserve_queue_seconds",
            "Time a request waited for its batch",
            ["model"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
        )
        self.batch = Histogram(
            "tuneserve_batch_size",
            "Items per ONNX Runtime call",
            ["model"],
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.load_error = Gauge(
            "tuneserve_model_load_error",
            "1 while the version a model's alias points at fails to load (the old serves)",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.swaps = Counter(
            "tuneserve_model_swaps",
            "Versions swapped in by the alias watcher",
            ["model"],
            registry=self.registry,
        )
        self.routed = Counter(
            "tuneserve_routed",
            "Requests of canary models by route (primary or canary)",
            ["model", "route"],
            registry=self.registry,
        )
        self.shadow = Counter(
            "tuneserve_shadow_items",
            "Items mirrored to the challenger, by outcome (agree, disagree, error)",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.loaded = Gauge(
            "tuneserve_loaded_version",
            "1 for each loaded version; current marks the version requests get (one series "
            "per worker process, labelled pid, with --workers)",
            ["model", "version", "current"],
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self._shown: set[tuple[str, str, str]] = set()

    def on_batch(self, model: str, size: int, waits: list[float]) -> None:
        """The repository's batch callback: items per call and each request's wait."""
        self.batch.labels(model).observe(size)
        for wait in waits:
            self.queue.labels(model).observe(wait)

    def show_loaded(self, repository: Repository) -> None:
        """Set ``tuneserve_loaded_version`` to the versions ``repository`` holds now."""
        shown = {
            (name, version, str(repository.current.get(name) == version).lower())
            for name, versions in repository.versions.items()
            for version in versions
        }
        for labels in self._shown - shown:  # 0 first: a worker's file keeps the last value
            self.loaded.labels(*labels).set(0)
            self.loaded.remove(*labels)
        for labels in shown:
            self.loaded.labels(*labels).set(1)
        self._shown = shown

    def exposition(self) -> bytes:
        """The ``/metrics`` body: this process's metrics, or with ``--workers N`` the sum
        over all workers."""
        registry = self.registry
        if folder := os.environ.get(MULTIPROCESS_ENV):
            _forget_dead_workers(folder)
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return bytes(generate_latest(registry))

    @staticmethod
    def worker_exits() -> None:
        """Drop this worker's live gauges (loaded versions) at a clean shutdown."""
        if os.environ.get(MULTIPROCESS_ENV):
            multiprocess.mark_process_dead(os.getpid())


def _forget_dead_workers(folder: str) -> None:
    """Drop the live gauges (loaded versions) of workers that died without a shutdown, e.g.
    killed, and were replaced: a clean exit does this itself. Several workers may do this
    at once, so a file already gone is fine."""
    for file in os.scandir(folder):
        if not (file.name.startswith("gauge_live") and file.name.endswith(".db")):
            continue
        pid = file.name[: -len(".db")].rpartition("_")[2]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):
                os.remove(file.path)
        except PermissionError:
            pass  # alive, another user's

"""What every room of the server shares: the models, the limits, the metrics, the traffic
split, and the steps of a prediction that both APIs take (route, predict, mirror)."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import numpy as np
from fastapi import Request

from tuneserve.exceptions import InvalidInputError, NotFoundError

from .batcher import Items
from .errors import status_of
from .metrics import Metrics
from .repository import Repository, ServedModel
from .traffic import Traffic, companion

__all__ = ["Limits", "ServerState"]


@dataclass
class Limits:
    """Request limits: body bytes, items per request, seconds per request."""

    max_body_bytes: int = 32 * 1024 * 1024
    max_items: int = 1024
    timeout_s: float = 30.0


@dataclass
class ServerState:
    """The server's collaborators, handed to each router factory.

    Attributes:
        repository: The served models (loaded), each with its batcher.
        limits: Request limits.
        metrics: Prometheus metrics.
        traffic: Canary and shadow splits between champions and challengers.
        keys: API keys ({key: scope}); empty: the server is open.
        watch_interval: Seconds between alias checks; None: aliases are not followed.
    """

    repository: Repository
    limits: Limits = field(default_factory=Limits)
    metrics: Metrics = field(default_factory=Metrics)
    traffic: Traffic = field(default_factory=Traffic)
    keys: dict[str, str] = field(default_factory=dict)
    watch_interval: float | None = None
    _background: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    async def read_body(self, request: Request) -> bytes:
        """The request body. Never over the limit: the gate refuses a Content-Length over
        it, and counts a chunked body as it streams in (413 the moment it passes)."""
        return await request.body()

    def route(self, name: str, version: str | None) -> ServedModel:
        """The model that answers: the challenger for a canary's share, else ``name``."""
        canary = self.traffic.canary
        if version is None and name in canary:
            if random.random() * 100 < canary[name]:
                try:
                    chosen = self.repository.get(companion(name))
                except NotFoundError:
                    pass
                else:
                    self.metrics.routed.labels(name, "canary").inc()
                    return chosen
            self.metrics.routed.labels(name, "primary").inc()
        return self.repository.get(name, version)

    def check_items(self, count: int) -> None:
        """Refuse more inputs than ``--max-items``: called before decoding (a request of
        20,000 images is refused before one is read) and again before predicting."""
        if count > self.limits.max_items:
            raise InvalidInputError(
                f"{count} inputs in one request; the limit is {self.limits.max_items}. "
                "Hint: split the request"
            )

    async def predict(
        self, model: ServedModel, inputs: Items, api: str, deadline: float | None = None
    ) -> np.ndarray:
        """Run ``inputs`` through the model's batcher within the time limit (or within
        ``deadline`` seconds, the caller's, when that ends first); counted and timed by
        model, API and status. Past the time, a :class:`TimeoutError` says which limit ended
        it: every API answers with that text."""
        self.check_items(len(inputs))
        start = time.perf_counter()
        code = "200"
        server = self.limits.timeout_s
        limit = server if deadline is None else min(deadline, server)
        try:
            return await asyncio.wait_for(model.batcher.submit(inputs), max(limit, 0.0))
        except TimeoutError:
            code = "504"
            which = "the server's limit" if limit == server else "the call's deadline"
            raise TimeoutError(f"the request took longer than {limit:g} s ({which})") from None
        except Exception as exc:
            code = str(status_of(exc))
            raise
        finally:
            self.metrics.requests.labels(model.name, api, code).inc()
            self.metrics.latency.labels(model.name, api).observe(time.perf_counter() - start)

    def mirror(self, name: str, inputs: Items, answer: np.ndarray) -> None:
        """Send the request to the challenger too, in the background; compare, never
        answer with it."""
        if name not in self.traffic.shadow:
            return

        async def run() -> None:
            shadow = self.metrics.shadow
            try:
                other = await self.repository.get(companion(name)).batcher.submit(inputs)
            except Exception:
                shadow.labels(name, "error").inc(len(inputs))
                return
            if answer.ndim == 2 and other.ndim == 2 and answer.shape == other.shape:
                same = int((answer.argmax(1) == other.argmax(1)).sum())
            else:
                same = int(np.isclose(answer, other, rtol=1e-3, atol=1e-6).sum())
            shadow.labels(name, "agree").inc(same)
            shadow.labels(name, "disagree").inc(len(inputs) - same)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def follow_aliases(self) -> None:
        """Forever: every ``watch_interval`` seconds, load and swap in the version each
        model's alias points at now (one that fails to load is not swapped in)."""
        loop = asyncio.get_running_loop()
        repository = self.repository
        while True:
            await asyncio.sleep(self.watch_interval or 1.0)
            for name in list(repository.specs):
                if name not in repository.current:  # unloaded by the API: stays unloaded
                    continue
                if await loop.run_in_executor(None, repository.refresh, name):
                    self.metrics.swaps.labels(name).inc()
                    self.metrics.show_loaded(repository)
                self.metrics.load_error.labels(name).set(1 if repository.errors.get(name) else 0)

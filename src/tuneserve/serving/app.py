"""The HTTP server, assembled from its rooms:

* simple JSON (:mod:`.routes_simple`): ``/v1/models``, ``/v1/models/{name}/predict``;
* the Open Inference Protocol, KServe v2 REST with the binary tensor extension
  (:mod:`.routes_oip`): server and model metadata, health, inference;
* the model repository extension (:mod:`.routes_repository`): index, load, unload;
* operations (:mod:`.routes_ops`): Prometheus ``/metrics``;
* and, on its own port, the Open Inference Protocol over gRPC (:mod:`.grpc_service`).

They share one :class:`~.state.ServerState`. A prediction takes one path per request shape
(:mod:`.infer`), inputs are decoded in one place (:mod:`.decode`), errors become HTTP
statuses in one place (:mod:`.errors`), and every request meets the :class:`~.gate.Gate`
first (body size, API keys). Bad input always gets
a 4xx with ``{"error": "..."}``; the server never imports torch.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tuneserve._version import __version__

from . import errors
from .gate import Gate
from .metrics import Metrics
from .repository import Repository
from .routes_oip import add_oip_routes
from .routes_ops import add_ops_routes
from .routes_repository import add_repository_routes
from .routes_simple import add_simple_routes
from .state import Limits, ServerState
from .traffic import Traffic

__all__ = ["Limits", "create_app"]


def create_app(
    repository: Repository,
    limits: Limits | None = None,
    api_keys: dict[str, str] | None = None,
    watch_interval: float | None = None,
    traffic: Traffic | None = None,
    grpc_address: tuple[str, int] | None = None,
) -> FastAPI:
    """The ASGI app serving ``repository`` (its models already loaded).

    Args:
        repository: The models to serve, loaded.
        limits: Request limits (body bytes, items, seconds).
        api_keys: ``{key: scope}`` (see :mod:`tuneserve.serving.auth`); turns
            authentication on.
        watch_interval: Seconds between registry alias checks: when an alias moves, the
            new version is loaded, warmed up and swapped in; one that fails to load is not.
            None: aliases are not followed.
        traffic: Canary and shadow splits.
        grpc_address: ``(host, port)`` to serve the Open Inference Protocol's gRPC service
            on too, from the same models and state, for as long as the app runs (see
            :mod:`tuneserve.serving.grpc_service`).
    """
    state = ServerState(
        repository,
        limits=limits or Limits(),
        metrics=Metrics(),
        traffic=traffic or Traffic(),
        keys=dict(api_keys or {}),
        watch_interval=watch_interval,
    )
    repository.on_batch = state.metrics.on_batch
    state.metrics.show_loaded(repository)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(state.follow_aliases()) if watch_interval else None
        grpc_server = None
        if grpc_address is not None:
            from .grpc_service import start_grpc

            grpc_server = await start_grpc(state, *grpc_address)
        yield
        if grpc_server is not None:  # calls in flight finish; new ones are refused
            await grpc_server.stop(grace=state.limits.timeout_s)
        if task is not None:
            task.cancel()
        state.metrics.worker_exits()

    app = FastAPI(
        lifespan=lifespan,
        title="tuneserve",
        version=__version__,
        description="Predictions from tuneserve packages: simple JSON and the Open Inference "
        "Protocol (KServe v2 REST, with the binary tensor extension).",
    )
    app.state.server = state
    app.state.repository = repository  # what `tuneserve serve` reports at start-up
    app.state.metrics = state.metrics
    app.add_middleware(
        Gate, keys=state.keys, max_body_bytes=state.limits.max_body_bytes, worker=str(os.getpid())
    )
    errors.install(app, state.limits.timeout_s)
    # Each room adds its routes to the app's own router. Not include_router: FastAPI
    # (0.165) keeps an included router as a wrapper that every request walks through to
    # match its route, 20-30 us more per request in-process (5-8 % of a one-row request).
    for add_routes in (add_simple_routes, add_oip_routes, add_repository_routes, add_ops_routes):
        add_routes(app.router, state)
    return app

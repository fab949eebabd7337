"""The HTTP server: simple JSON, the Open Inference Protocol (KServe v2) with the binary
tensor extension, the model repository API, Prometheus metrics and an OpenAPI document.

Bad input always gets a 4xx with ``{"error": "..."}``; this module never imports torch.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneserve._version import __version__
from tuneserve.exceptions import InvalidInputError, NotFoundError, TuneserveError

from . import oip
from .batcher import QueueFullError
from .gate import Gate
from .repository import Repository, ServedModel
from .traffic import Traffic, companion


@dataclass
class Limits:
    """Request limits: body bytes, items per request, seconds per request."""

    max_body_bytes: int = 32 * 1024 * 1024
    max_items: int = 1024
    timeout_s: float = 30.0


MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _Metrics:
    """The server's Prometheus metrics. With ``--workers N``, ``tuneserve serve`` sets
    ``PROMETHEUS_MULTIPROC_DIR`` and every worker writes its values there; ``/metrics`` then
    sums the counters and histograms of all workers, whichever one answers."""

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
        self.shown: set[tuple[str, str, str]] = set()

    def on_batch(self, model: str, size: int, waits: list[float]) -> None:
        self.batch.labels(model).observe(size)
        for wait in waits:
            self.queue.labels(model).observe(wait)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _status(exc: Exception) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, QueueFullError):
        return 503
    return 400


def create_app(
    repository: Repository,
    limits: Limits | None = None,
    api_keys: dict[str, str] | None = None,
    watch_interval: float | None = None,
    traffic: Traffic | None = None,
) -> FastAPI:
    """The ASGI app serving ``repository`` (its models already loaded). ``api_keys``
    ({key: scope}, see :mod:`tuneserve.serving.auth`) turns authentication on. With
    ``watch_interval`` (seconds), registry aliases are followed: when one moves, the new
    version is loaded, warmed up and swapped in; one that fails to load is not."""
    limits = limits or Limits()
    keys = dict(api_keys or {})
    traffic = traffic or Traffic()
    metrics = _Metrics()
    background: set[asyncio.Task[None]] = set()
    repository.on_batch = metrics.on_batch

    async def watch() -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(watch_interval or 1.0)
            for name in list(repository.specs):
                if name not in repository.current:  # unloaded by the API: stays unloaded
                    continue
                if await loop.run_in_executor(None, repository.refresh, name):
                    metrics.swaps.labels(name).inc()
                    refresh_loaded()
                metrics.load_error.labels(name).set(1 if repository.errors.get(name) else 0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(watch()) if watch_interval else None
        yield
        if task is not None:
            task.cancel()
        if os.environ.get(MULTIPROCESS_ENV):
            multiprocess.mark_process_dead(os.getpid())  # drop this worker's live gauges

    app = FastAPI(
        lifespan=lifespan,
        title="tuneserve",
        version=__version__,
        description="Predictions from tuneserve packages: simple JSON and the Open Inference "
        "Protocol (KServe v2 REST, with the binary tensor extension).",
    )
    app.state.repository = repository
    app.state.metrics = metrics

    def refresh_loaded() -> None:
        shown = {
            (name, version, str(repository.current.get(name) == version).lower())
            for name, versions in repository.versions.items()
            for version in versions
        }
        for labels in metrics.shown - shown:  # 0 first: a worker's file keeps the last value
            metrics.loaded.labels(*labels).set(0)
            metrics.loaded.remove(*labels)
        for labels in shown:
            metrics.loaded.labels(*labels).set(1)
        metrics.shown = shown

    refresh_loaded()

    app.add_middleware(
        Gate, keys=keys, max_body_bytes=limits.max_body_bytes, worker=str(os.getpid())
    )

    @app.exception_handler(TuneserveError)
    async def tuneserve_error(request: Request, exc: TuneserveError) -> JSONResponse:
        headers = {"Retry-After": "1"} if isinstance(exc, QueueFullError) else None
        return _error(_status(exc), str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return _error(400, f"bad request: {problems}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    async def body_of(request: Request) -> bytes:
        body = await request.body()
        if len(body) > limits.max_body_bytes:
            raise InvalidInputError(f"request body over {limits.max_body_bytes} bytes")
        return body

    async def predict(model: ServedModel, inputs: list[Any], api: str) -> np.ndarray:
        if len(inputs) > limits.max_items:
            raise InvalidInputError(
                f"{len(inputs)} inputs in one request; the limit is {limits.max_items}. Hint: "
                "split the request"
            )
        start = time.perf_counter()
        code = "200"
        try:
            return await asyncio.wait_for(model.batcher.submit(inputs), limits.timeout_s)
        except TimeoutError:
            code = "504"
            raise
        except Exception as exc:
            code = str(_status(exc)) if isinstance(exc, TuneserveError) else "500"
            raise
        finally:
            metrics.requests.labels(model.name, api, code).inc()
            metrics.latency.labels(model.name, api).observe(time.perf_counter() - start)

    def route(name: str, version: str | None) -> ServedModel:
        """The model that answers: the challenger for a canary's share, else ``name``."""
        if version is None and name in traffic.canary:
            if random.random() * 100 < traffic.canary[name]:
                try:
                    chosen = repository.get(companion(name))
                except NotFoundError:
                    pass
                else:
                    metrics.routed.labels(name, "canary").inc()
                    return chosen
            metrics.routed.labels(name, "primary").inc()
        return repository.get(name, version)

    def mirror(name: str, inputs: list[Any], answer: np.ndarray) -> None:
        """Send the request to the challenger too; compare, never answer with it."""
        if name not in traffic.shadow:
            return

        async def run() -> None:
            try:
                other = await repository.get(companion(name)).batcher.submit(inputs)
            except Exception:
                metrics.shadow.labels(name, "error").inc(len(inputs))
                return
            if answer.ndim == 2 and other.ndim == 2 and answer.shape == other.shape:
                same = int((answer.argmax(1) == other.argmax(1)).sum())
            else:
                same = int(np.isclose(answer, other, rtol=1e-3, atol=1e-6).sum())
            metrics.shadow.labels(name, "agree").inc(same)
            metrics.shadow.labels(name, "disagree").inc(len(inputs) - same)

        task = asyncio.get_running_loop().create_task(run())
        background.add(task)
        task.add_done_callback(background.discard)

    @app.exception_handler(TimeoutError)
    async def timeout_error(request: Request, exc: TimeoutError) -> JSONResponse:
        return _error(504, f"the request took longer than {limits.timeout_s} s")

    # ---- simple JSON -------------------------------------------------------------------

    @app.get("/v1/models", summary="Served models")
    async def list_models() -> dict[str, Any]:
        return {
            "models": [
                {"name": n, "version": repository.current[n], "versions": sorted(v)}
                for n, v in sorted(repository.versions.items())
            ]
        }

    predict_doc = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["inputs"],
                        "properties": {
                            "inputs": {"type": "array", "minItems": 1, "items": {}},
                            "version": {"type": "string"},
                        },
                    },
                    "example": {"inputs": ["great food, friendly staff"]},
                }
            },
            "description": '{"inputs": [...], "version": optional}: strings for text, row '
            "objects or lists for tables, base64 image files or nested pixel arrays",
        }
    }

    @app.post(
        "/v1/models/{name}/predict", summary="Predict (simple JSON)", openapi_extra=predict_doc
    )
    async def predict_json(name: str, request: Request) -> dict[str, Any]:
        try:  # JSON whatever the Content-Type says (curl -d sends form-urlencoded)
            payload = json.loads(await body_of(request))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidInputError(f"the request is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise InvalidInputError('send a JSON object: {"inputs": [...]}')
        inputs = payload.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise InvalidInputError('send {"inputs": [...]} with at least one input')
        version = payload.get("version")
        model = route(name, str(version) if version is not None else None)
        modality = model.predictor.manifest.modality
        if modality == "image":
            inputs = [_image_input(x, i) for i, x in enumerate(inputs)]
        out = await predict(model, inputs, "v1")
        mirror(name, inputs, out)
        predictions = model.predictor.decode(out)
        return {
            "model": name,
            "version": model.version,
            "predictions": [p.to_dict() for p in predictions],
        }

    # ---- Open Inference Protocol --------------------------------------------------------

    @app.get("/v2", summary="Server metadata (OIP)")
    async def server_metadata() -> dict[str, Any]:
        return {
            "name": "tuneserve",
            "version": __version__,
            "extensions": ["binary_tensor_data", "model_repository"],
        }

    @app.get("/v2/health/live", summary="Liveness (OIP)")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", summary="Readiness (OIP)")
    async def ready() -> Response:
        ok = bool(repository.current)
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2/models/{name}", summary="Model metadata (OIP)")
    @app.get("/v2/models/{name}/versions/{version}", summary="Model version metadata (OIP)")
    async def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        return repository.metadata(repository.get(name, version))

    @app.get("/v2/models/{name}/ready", summary="Model readiness (OIP)")
    @app.get("/v2/models/{name}/versions/{version}/ready", summary="Version readiness (OIP)")
    async def model_ready(name: str, version: str | None = None) -> dict[str, Any]:
        model = repository.get(name, version)
        return {"name": model.name, "version": model.version, "ready": True}

    infer_doc = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["inputs"],
                        "properties": {
                            "id": {"type": "string"},
                            "inputs": {"type": "array", "items": {"type": "object"}},
                            "outputs": {"type": "array", "items": {"type": "object"}},
                            "parameters": {"type": "object"},
                        },
                    }
                },
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"},
                    "description": "binary tensor extension: JSON header of "
                    "Inference-Header-Content-Length bytes, then the tensors",
                },
            },
        }
    }

    async def infer(name: str, version: str | None, request: Request) -> Response:
        model = route(name, version)
        parsed = oip.parse_request(await body_of(request), request.headers.get(oip.HEADER))
        inputs = oip.to_inputs(parsed, model.predictor.manifest.modality, model.columns)
        out = await predict(model, inputs, "v2")
        mirror(name, inputs, out)
        m = model.predictor.manifest
        tensors = oip.outputs_for(m.task, m.label_names, out)
        body, header = oip.encode_response(name, model.version, parsed, tensors)
        if header is None:
            return Response(body, media_type="application/json")
        return Response(
            body,
            media_type="application/octet-stream",
            headers={oip.HEADER: str(header)},
        )

    @app.post("/v2/models/{name}/infer", summary="Infer (OIP)", openapi_extra=infer_doc)
    async def infer_current(name: str, request: Request) -> Response:
        return await infer(name, None, request)

    @app.post(
        "/v2/models/{name}/versions/{version}/infer",
        summary="Infer with a pinned version (OIP)",
        openapi_extra=infer_doc,
    )
    async def infer_version(name: str, version: str, request: Request) -> Response:
        return await infer(name, version, request)

    # ---- model repository extension ----------------------------------------------------

    @app.post("/v2/repository/index", summary="Model repository index")
    async def repository_index() -> list[dict[str, Any]]:
        return [
            {
                "name": n,
                "version": repository.current.get(n, ""),
                "state": "READY" if n in repository.current else "UNAVAILABLE",
                "reason": repository.errors.get(n) or "",
            }
            for n in sorted(repository.specs)
        ]

    @app.post("/v2/repository/models/{name}/load", summary="Load (or reload) a model")
    async def load(name: str) -> dict[str, Any]:
        model = await asyncio.get_running_loop().run_in_executor(None, repository.load, name)
        refresh_loaded()
        return {"name": model.name, "version": model.version, "loaded": True}

    @app.post("/v2/repository/models/{name}/unload", summary="Unload a model")
    async def unload(name: str) -> dict[str, Any]:
        repository.unload(name)
        refresh_loaded()
        return {"name": name, "loaded": False}

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=True)
    async def prometheus() -> Response:
        registry = metrics.registry
        if folder := os.environ.get(MULTIPROCESS_ENV):  # --workers N: the sum over all workers
            _forget_dead_workers(folder)
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


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


def _image_input(value: Any, index: int) -> Any:
    """A JSON image: a base64 string of an image file, or nested pixel lists."""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise InvalidInputError(
                f"inputs[{index}] is a string but not base64; send an image file as base64 or "
                "pixels as nested lists"
            ) from None
    if isinstance(value, list):
        try:
            return np.asarray(value, dtype=np.float32)
        except (ValueError, TypeError):
            raise InvalidInputError(
                f"inputs[{index}] is not a rectangular array of numbers"
            ) from None
    raise InvalidInputError(f"inputs[{index}] must be base64 image bytes or a pixel array")

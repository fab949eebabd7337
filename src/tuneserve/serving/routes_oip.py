"""The Open Inference Protocol room (KServe v2 REST, with the binary tensor extension):
server metadata, health, model metadata and readiness, and inference.

The tensors a model takes, per modality, are in :mod:`tuneserve.serving.decode`; the model
metadata lists them as ``inputs`` and says every accepted form in
``parameters.inputs_doc`` (for an all-number table also ``parameters.matrix_input``, the
one ``[n, n_columns]`` tensor form).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from . import oip
from .infer import SERVER_METADATA, infer_tensors, model_metadata
from .state import ServerState

__all__ = ["add_oip_routes"]

_INFER_DOC: dict[str, Any] = {
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
        "description": "Raw inputs as tensors: text one BYTES [n]; images BYTES [n] files or "
        "pixels [n, h, w(, c)]; tables one tensor [n] per column or, when every column is a "
        "number, one FP32/FP64 tensor [n, n_columns] (see the model metadata's "
        "parameters.inputs_doc)",
    }
}


def add_oip_routes(router: APIRouter, state: ServerState) -> None:
    """Add this room's routes to ``router``."""
    repository = state.repository

    @router.get("/v2", summary="Server metadata (OIP)")
    async def server_metadata() -> dict[str, Any]:
        extensions = ["binary_tensor_data", *SERVER_METADATA["extensions"]]
        return {**SERVER_METADATA, "extensions": extensions}

    @router.get("/v2/health/live", summary="Liveness (OIP)")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/v2/health/ready", summary="Readiness (OIP)")
    async def ready() -> Response:
        ok = bool(repository.current)
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @router.get("/v2/models/{name}", summary="Model metadata (OIP)")
    @router.get("/v2/models/{name}/versions/{version}", summary="Model version metadata (OIP)")
    async def metadata(name: str, version: str | None = None) -> dict[str, Any]:
        model = repository.get(name, version)
        return model_metadata(model, sorted(repository.versions.get(model.name, {})))

    @router.get("/v2/models/{name}/ready", summary="Model readiness (OIP)")
    @router.get("/v2/models/{name}/versions/{version}/ready", summary="Version readiness (OIP)")
    async def model_ready(name: str, version: str | None = None) -> dict[str, Any]:
        model = repository.get(name, version)
        return {"name": model.name, "version": model.version, "ready": True}

    async def infer(name: str, version: str | None, request: Request) -> Response:
        model = state.route(name, version)
        body = await state.read_body(request)
        parsed = oip.parse_request(body, request.headers.get(oip.HEADER), state.check_items)
        tensors = await infer_tensors(state, name, model, parsed, "v2")
        body, header = oip.encode_response(name, model.version, parsed, tensors)
        if header is None:
            return Response(body, media_type="application/json")
        return Response(
            body, media_type="application/octet-stream", headers={oip.HEADER: str(header)}
        )

    @router.post("/v2/models/{name}/infer", summary="Infer (OIP)", openapi_extra=_INFER_DOC)
    async def infer_current(name: str, request: Request) -> Response:
        return await infer(name, None, request)

    @router.post(
        "/v2/models/{name}/versions/{version}/infer",
        summary="Infer with a pinned version (OIP)",
        openapi_extra=_INFER_DOC,
    )
    async def infer_version(name: str, version: str, request: Request) -> Response:
        return await infer(name, version, request)

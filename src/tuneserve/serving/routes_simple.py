"""The simple JSON room: ``GET /v1/models`` and ``POST /v1/models/{name}/predict``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from . import oip
from .infer import predict_json
from .state import ServerState

__all__ = ["add_simple_routes"]

_PREDICT_DOC: dict[str, Any] = {
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


def add_simple_routes(router: APIRouter, state: ServerState) -> None:
    """Add this room's routes to ``router``."""
    repository = state.repository

    @router.get("/v1/models", summary="Served models")
    async def list_models() -> dict[str, Any]:
        return {
            "models": [
                {"name": n, "version": repository.current[n], "versions": sorted(v)}
                for n, v in sorted(repository.versions.items())
            ]
        }

    @router.post(
        "/v1/models/{name}/predict", summary="Predict (simple JSON)", openapi_extra=_PREDICT_DOC
    )
    async def predict(name: str, request: Request) -> dict[str, Any]:
        # JSON whatever the Content-Type says (curl -d sends form-urlencoded)
        payload = oip.load_json(await state.read_body(request))
        return await predict_json(state, name, payload, "v1")

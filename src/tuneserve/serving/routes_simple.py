"""The simple JSON room: ``GET /v1/models`` and ``POST /v1/models/{name}/predict``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from tuneserve.exceptions import InvalidInputError

from . import decode, oip
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
        if not isinstance(payload, dict):
            raise InvalidInputError('send a JSON object: {"inputs": [...]}')
        inputs = payload.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise InvalidInputError('send {"inputs": [...]} with at least one input')
        version = payload.get("version")
        model = state.route(name, str(version) if version is not None else None)
        items = decode.from_json(model.inputs, inputs)
        out = await state.predict(model, items, "v1")
        state.mirror(name, items, out)
        return {
            "model": name,
            "version": model.version,
            "predictions": [p.to_dict() for p in model.predictor.decode(out)],
        }

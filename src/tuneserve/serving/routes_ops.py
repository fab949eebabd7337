"""The operations room: ``GET /metrics`` (Prometheus; with ``--workers N`` the sum over all
worker processes). Health and readiness are in the OIP room, as the protocol names them."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from .metrics import CONTENT_TYPE_LATEST
from .state import ServerState

__all__ = ["add_ops_routes"]


def add_ops_routes(router: APIRouter, state: ServerState) -> None:
    """Add this room's routes to ``router``."""

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=True)
    async def prometheus() -> Response:
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

"""The model repository room (the OIP repository extension, ``admin`` scope): list the
configured models, load (or reload) and unload one."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from .state import ServerState

__all__ = ["add_repository_routes"]


def add_repository_routes(router: APIRouter, state: ServerState) -> None:
    """Add this room's routes to ``router``."""
    repository = state.repository

    @router.post("/v2/repository/index", summary="Model repository index")
    async def index() -> list[dict[str, Any]]:
        return [
            {
                "name": n,
                "version": repository.current.get(n, ""),
                "state": "READY" if n in repository.current else "UNAVAILABLE",
                "reason": repository.errors.get(n) or "",
            }
            for n in sorted(repository.specs)
        ]

    @router.post("/v2/repository/models/{name}/load", summary="Load (or reload) a model")
    async def load(name: str) -> dict[str, Any]:
        model = await asyncio.get_running_loop().run_in_executor(None, repository.load, name)
        state.metrics.show_loaded(repository)
        return {"name": model.name, "version": model.version, "loaded": True}

    @router.post("/v2/repository/models/{name}/unload", summary="Unload a model")
    async def unload(name: str) -> dict[str, Any]:
        repository.unload(name)
        state.metrics.show_loaded(repository)
        return {"name": name, "loaded": False}

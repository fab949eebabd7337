"""Everything ``tuneserve serve`` is told, and building the app from it (also in each
worker process of ``--workers N``, which reads it from ``TUNESERVE_SERVE_CONFIG``)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

ENV = "TUNESERVE_SERVE_CONFIG"


@dataclass
class ServeConfig:
    models: list[str]
    max_batch_size: int = 32
    max_queue_delay_ms: float = 2.0
    max_queue: int = 1024
    max_body_bytes: int = 32 * 1024 * 1024
    max_items: int = 1024
    timeout_s: float = 30.0
    threads: int | None = None
    watch: float = 5.0
    canary: list[str] = field(default_factory=list)
    shadow: list[str] = field(default_factory=list)
    api_keys: list[str] = field(default_factory=list)
    max_image_pixels: int = 40_000_000  # preprocessing.image.DEFAULT_MAX_IMAGE_PIXELS
    require_signature: bool = False
    trusted_keys: list[str] = field(default_factory=list)
    grpc_host: str = "127.0.0.1"
    grpc_port: int | None = None  # None: no gRPC service

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def build_app(config: ServeConfig) -> Any:
    """Load the models and return the ASGI app (raises on a model that does not load)."""
    from tuneserve.preprocessing.image import set_max_image_pixels

    from .app import create_app
    from .auth import parse_keys
    from .repository import BatchSettings, ModelSpec, Repository
    from .state import Limits
    from .traffic import Traffic

    set_max_image_pixels(config.max_image_pixels)  # per process: each worker runs this
    keys = parse_keys(config.api_keys)
    specs = [ModelSpec.parse(m) for m in config.models]
    traffic = Traffic.parse(config.canary, config.shadow)
    repository = Repository(
        specs + traffic.companions(specs),
        BatchSettings(config.max_batch_size, config.max_queue_delay_ms, config.max_queue),
        intra_op_threads=config.threads,
        trusted_keys=(
            config.trusted_keys if config.require_signature or config.trusted_keys else None
        ),
    )
    repository.load_all()
    limits = Limits(config.max_body_bytes, config.max_items, config.timeout_s)
    grpc = None if config.grpc_port is None else (config.grpc_host, config.grpc_port)
    return create_app(
        repository,
        limits,
        keys,
        watch_interval=config.watch or None,
        traffic=traffic,
        grpc_address=grpc,
    )


def app_from_env() -> Any:
    """The app of one worker process (uvicorn factory)."""
    return build_app(ServeConfig(**json.loads(os.environ[ENV])))

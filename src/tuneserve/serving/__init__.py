"""The model server: simple JSON and the Open Inference Protocol over HTTP, with dynamic
batching per model, Prometheus metrics and an OpenAPI document. Never imports torch."""

from .app import create_app
from .batcher import Batcher, QueueFullError
from .repository import BatchSettings, ModelSpec, Repository, ServedModel
from .state import Limits
from .traffic import Traffic

__all__ = [
    "BatchSettings",
    "Batcher",
    "Limits",
    "ModelSpec",
    "QueueFullError",
    "Repository",
    "ServedModel",
    "Traffic",
    "create_app",
]

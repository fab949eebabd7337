"""BentoML, adaptive batching on, serving a tuneserve package (peer in
``benchmarks/serve.py``).

Usage: ``PEER_PACKAGE=DIR bentoml serve bento_service:PackageService --port PORT`` (from
``.venv-peers``, with ``src`` and this folder on ``PYTHONPATH``). POST /predict with
``{"inputs": [one input]}``. BentoML batches ``inputs`` lists across requests, up to
``max_batch_size`` items, and its adaptive dispatcher keeps the wait under
``max_latency_ms``. Access logs are off, as in the other servers of the benchmark."""

from __future__ import annotations

from typing import Any

import _package
import bentoml


@bentoml.service(workers=1, traffic={"timeout": 30}, logging={"access": {"enabled": False}})
class PackageService:
    def __init__(self) -> None:
        self.predictor = _package.load()

    @bentoml.api(batchable=True, max_batch_size=_package.MAX_BATCH_SIZE, max_latency_ms=1000)
    def predict(self, inputs: list[Any]) -> list[dict[str, Any]]:
        return _package.predictions(self.predictor, inputs)

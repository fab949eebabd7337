"""LitServe, batching on, serving a tuneserve package (peer in ``benchmarks/serve.py``).

Usage: ``PEER_PACKAGE=DIR python litserve_server.py PORT`` (from ``.venv-peers``, with
``src`` on ``PYTHONPATH``). POST /predict with ``{"inputs": [one input]}``."""

from __future__ import annotations

import sys
from typing import Any

import _package
import litserve as ls


class PackageAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.predictor = _package.load()

    def decode_request(self, request):  # untyped: LitServe turns annotations into parameters
        return request["inputs"][0]

    def predict(self, batch: list[Any]) -> list[dict[str, Any]]:
        return _package.predictions(self.predictor, list(batch))

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return {"predictions": [output]}


if __name__ == "__main__":
    api = PackageAPI(
        max_batch_size=_package.MAX_BATCH_SIZE, batch_timeout=_package.MAX_DELAY_MS / 1000
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(port=int(sys.argv[1]), log_level="warning", generate_client_file=False)

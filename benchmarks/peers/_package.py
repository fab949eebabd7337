"""What both peers serve: a tuneserve package's ONNX model through the same ``Predictor``
(preprocessing + ONNX Runtime) the tuneserve server uses, so only the serving layer
differs. Set by ``benchmarks/serve.py`` through the environment."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tuneserve.runtime import Predictor

PACKAGE = os.environ["PEER_PACKAGE"]
MAX_BATCH_SIZE = int(os.environ.get("PEER_MAX_BATCH_SIZE", "32"))
MAX_DELAY_MS = float(os.environ.get("PEER_MAX_DELAY_MS", "2"))
THREADS = int(os.environ.get("PEER_THREADS", "1"))


def load() -> Predictor:
    return Predictor(PACKAGE, intra_op_threads=THREADS)


def predictions(predictor: Predictor, items: list[Any]) -> list[dict[str, Any]]:
    """The same answer tuneserve's simple JSON gives: label and probabilities per item."""
    probabilities = np.asarray(predictor.run(items))
    labels = predictor.labels
    return [
        {
            "label": labels[int(row.argmax())],
            "probabilities": dict(zip(labels, map(float, row), strict=True)),
        }
        for row in probabilities
    ]

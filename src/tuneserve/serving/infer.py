"""One prediction, whatever carried it: the steps every API shares.

Two request shapes exist, and each has one path here:

* simple JSON (``{"inputs": [...], "version": ...}``): the REST ``/v1`` predict route and
  the Redis Streams worker (:mod:`tuneserve.queueing`) call :func:`predict_json`;
* Open Inference Protocol tensors: the REST ``/v2`` infer route and the gRPC
  ``ModelInfer`` call :func:`infer_tensors`, after their own codec has read the tensors.

Each routes (canary), decodes the inputs by modality (:mod:`.decode`), predicts through the
model's batcher within the time limit (counted by API), mirrors to a shadow, and encodes the
outputs (``Predictor.decode`` for JSON, :func:`.oip.outputs_for` for tensors). A fix to the
decoding or the encoding is a fix for REST, gRPC and the queue at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tuneserve._version import __version__
from tuneserve.exceptions import InvalidInputError

from . import decode, oip
from .repository import ServedModel
from .state import ServerState

__all__ = ["SERVER_METADATA", "infer_tensors", "model_metadata", "predict_json"]

#: OIP server metadata, less the transport's own extensions (REST adds binary_tensor_data).
SERVER_METADATA: dict[str, Any] = {
    "name": "tuneserve",
    "version": __version__,
    "extensions": ["model_repository"],
}

#: Named output tensors: {name: (OIP datatype, values)}.
Tensors = dict[str, tuple[str, np.ndarray]]


async def predict_json(state: ServerState, name: str, payload: Any, api: str) -> dict[str, Any]:
    """A simple JSON request's answer: ``{"model", "version", "predictions"}``.

    Args:
        state: The server's (or worker's) models, limits and metrics.
        name: The model asked for.
        payload: The decoded JSON document, ``{"inputs": [...], "version": optional}``.
        api: The label the request is counted under in the metrics (``v1``, ``queue``).
    """
    if not isinstance(payload, dict):
        raise InvalidInputError('send a JSON object: {"inputs": [...]}')
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInputError('send {"inputs": [...]} with at least one input')
    version = payload.get("version")
    state.check_items(len(inputs))  # before decoding any of them
    model = state.route(name, str(version) if version is not None else None)
    items = decode.from_json(model.inputs, inputs)
    out = await state.predict(model, items, api)
    state.mirror(name, items, out)
    return {
        "model": name,
        "version": model.version,
        "predictions": [p.to_dict() for p in model.predictor.decode(out)],
    }


async def infer_tensors(
    state: ServerState,
    name: str,
    model: ServedModel,
    request: oip.InferRequest,
    api: str,
    deadline: float | None = None,
) -> Tensors:
    """An Open Inference Protocol request's named output tensors (every output; the
    caller's codec keeps those the request asked for). ``model`` is what
    :meth:`ServerState.route` chose for ``name``, before the body was read: an unknown model
    is a 404 whatever the body holds. ``deadline``: seconds the caller has left (a gRPC
    deadline), when shorter than the server's time limit."""
    state.check_items(max((t.shape[0] for t in request.inputs if t.shape), default=1))
    items = decode.from_tensors(model.inputs, request.inputs)
    out = await state.predict(model, items, api, deadline)
    state.mirror(name, items, out)
    m = model.predictor.manifest
    return oip.outputs_for(m.task, m.label_names, out)


_OUTPUTS: dict[str, list[dict[str, Any]]] = {
    "regression": [{"name": "value", "datatype": "FP32", "shape": [-1]}],
    "embedding": [{"name": "embedding", "datatype": "FP32", "shape": [-1, -1]}],
}


def model_metadata(model: ServedModel, versions: list[str]) -> dict[str, Any]:
    """OIP model metadata: raw inputs by modality (and how to send them), outputs by task."""
    m = model.predictor.manifest
    inputs, how = decode.metadata_inputs(model.inputs)
    if m.task == "classification":
        outputs = [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(m.label_names or [])]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ]
    else:
        outputs = _OUTPUTS[m.task]
    return {
        "name": model.name,
        "versions": versions,
        "platform": "onnxruntime_onnx",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "task": m.task,
            "modality": m.modality,
            "package_id": model.predictor.package.id,
            "labels": m.label_names,
            **how,
        },
    }

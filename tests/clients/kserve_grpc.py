"""Calls a tuneserve gRPC server with the kserve package's gRPC client
(``InferenceGRPCClient``, Open Inference Protocol v2), used as it ships, in its own
environment (``make kserve-client`` builds ``.venv-kserve``).

Usage: ``python kserve_grpc.py HOST:PORT MODEL INPUTS.npz``. Each array in the npz file is
one input tensor. The script checks health and readiness, then infers twice: once with typed
contents (the client's list data) and once raw (numpy data), and prints one JSON object:
``{"live", "ready", "model_ready", "typed": {...}, "raw": {...}}`` where each inference is
``{"id", "model_name", output name: values as a list}``."""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

_DATATYPES = {"float32": "FP32", "float64": "FP64", "uint8": "UINT8", "int64": "INT64"}


def _request(model: str, arrays: dict[str, np.ndarray], raw: bool) -> InferRequest:
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else _DATATYPES[str(array.dtype)]
        data = array if raw else array.reshape(-1).tolist()
        inputs.append(InferInput(name, list(array.shape), datatype, data=data))
    return InferRequest(model, inputs, request_id=f"kserve-{'raw' if raw else 'typed'}")


def _values(output) -> list:  # output: a kserve InferOutput
    array = output.as_numpy()
    if array.dtype == object:
        return [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]
    return array.tolist()


async def main(address: str, model: str, path: str) -> dict:
    with np.load(path, allow_pickle=True) as loaded:
        arrays = {name: loaded[name] for name in loaded.files}
    client = InferenceGRPCClient(address, timeout=60, retries=0)
    try:
        report: dict = {
            "live": await client.is_server_live(),
            "ready": await client.is_server_ready(),
            "model_ready": await client.is_model_ready(model),
        }
        for raw in (False, True):
            response = await client.infer(_request(model, arrays, raw))
            result = {o.name: _values(o) for o in response.outputs}
            result["id"], result["model_name"] = response.id, response.model_name
            report["raw" if raw else "typed"] = result
        return report
    finally:
        await client.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))

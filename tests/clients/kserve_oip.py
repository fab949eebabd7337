"""Calls a tuneserve server with the kserve package's REST client (``InferenceRESTClient``,
Open Inference Protocol v2), used as it ships. It runs in its own environment
(``make kserve-client`` builds ``.venv-kserve``: kserve pins pandas<3).

Usage: ``python kserve_oip.py BASE_URL MODEL INPUTS.npz``. Each array in the npz file is
one input tensor. The script checks health and readiness, then infers twice, once with
JSON tensors and once with the binary tensor extension (binary outputs requested), and
prints one JSON object: ``{"live", "ready", "model_ready", "json": {...}, "binary": {...}}``
where each inference is ``{output name: values as a list}``."""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

_DATATYPES = {"float32": "FP32", "float64": "FP64", "uint8": "UINT8", "int64": "INT64"}


def _request(model: str, arrays: dict[str, np.ndarray], binary: bool) -> InferRequest:
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else _DATATYPES[str(array.dtype)]
        tensor = InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    outputs = [
        RequestedOutput(name, {"binary_data": binary}) for name in ("probabilities", "label")
    ]
    return InferRequest(model, inputs, request_id=f"kserve-{binary}", request_outputs=outputs)


def _values(output) -> list:  # output: a kserve InferOutput
    array = output.as_numpy()
    if array.dtype == object:
        return [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]
    return array.tolist()


async def main(base_url: str, model: str, path: str) -> dict:
    with np.load(path, allow_pickle=True) as loaded:
        arrays = {name: loaded[name] for name in loaded.files}
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60, retries=0))
    try:
        report: dict = {
            "live": await client.is_server_live(base_url),
            "ready": await client.is_server_ready(base_url),
            "model_ready": await client.is_model_ready(base_url, model),
        }
        for binary in (False, True):
            response = await client.infer(base_url, _request(model, arrays, binary), model)
            report["binary" if binary else "json"] = {
                "id": response.id,
                "model_name": response.model_name,  # kserve's parser drops model_version
                **{out.name: _values(out) for out in response.outputs},
            }
        return report
    finally:
        await client.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))

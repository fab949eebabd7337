"""The Open Inference Protocol's gRPC messages to and from what the REST room uses: an
:class:`~.oip.InferRequest` of :class:`~.oip.Tensor` objects in, named output tensors out.

Inputs come as ``raw_input_contents`` (one entry per input, the layout of the binary
extension: what ``tritonclient.grpc`` sends) or as typed ``contents`` (what the ``kserve``
client sends); both are checked by the same rules as REST (:func:`.oip.check_header`,
:func:`.oip.shaped`). Outputs are always answered raw (``raw_output_contents``):
``tritonclient.grpc`` reads nothing else, and the ``kserve`` client reads it too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from tuneserve.exceptions import InvalidInputError

from . import oip
from .proto import grpc_predict_v2_pb2 as pb

__all__ = ["metadata_response", "request_from_proto", "response_to_proto"]

#: The typed ``InferTensorContents`` field of each datatype (FP16 has none: raw only).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def request_from_proto(
    request: pb.ModelInferRequest, check_items: Callable[[int], None] | None = None
) -> oip.InferRequest:
    """The tensors of a ``ModelInferRequest``, checked as a REST request's are (with
    ``check_items`` seeing each tensor's first dimension before its values are read)."""
    if not request.inputs:
        raise InvalidInputError("an infer request needs at least one input tensor")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one entry per input, in order (or typed contents for every input)"
        )
    tensors = []
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        if not name:
            raise InvalidInputError(f"inputs[{i}] has no name")
        datatype, shape = oip.check_header(name, tensor.datatype, list(tensor.shape))
        if check_items is not None and shape:
            check_items(shape[0])
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInputError(
                    f"input {name!r} has typed contents while the request also sends "
                    "raw_input_contents; send one or the other"
                )
            values = oip.raw_values(name, datatype, shape, raw[i])
        else:
            values = _typed(name, datatype, shape, tensor.contents)
        tensors.append(oip.shaped(name, datatype, shape, values))
    outputs = [{"name": o.name, "parameters": {}} for o in request.outputs] or None
    return oip.InferRequest(
        id=request.id or None, inputs=tensors, outputs=outputs, binary_output=True
    )


def _typed(
    name: str, datatype: str, shape: list[int], contents: pb.InferTensorContents
) -> np.ndarray:
    field = CONTENTS.get(datatype)
    if field is None:
        raise InvalidInputError(
            f"input {name!r} is {datatype}, which has no typed contents field; send it in "
            "raw_input_contents"
        )
    values = getattr(contents, field)
    others = [f for f in set(CONTENTS.values()) - {field} if len(getattr(contents, f))]
    if others:
        raise InvalidInputError(
            f"input {name!r} is {datatype}, whose values go in contents.{field}; it sent "
            f"{sorted(others)}"
        )
    if len(values) != math.prod(shape):  # before any copy of them
        raise InvalidInputError(
            f"input {name!r}: shape {shape} holds {math.prod(shape)} elements but "
            f"{len(values)} were sent"
        )
    if datatype == "BYTES":
        out = np.empty(len(values), dtype=object)
        out[:] = list(values)
        return out
    try:
        return np.array(values, dtype=oip.DTYPES[datatype])
    except (OverflowError, ValueError) as exc:
        raise InvalidInputError(f"input {name!r}: {exc}; send values that fit {datatype}") from None


def response_to_proto(
    name: str,
    version: str,
    request: oip.InferRequest,
    tensors: dict[str, tuple[str, np.ndarray]],
) -> pb.ModelInferResponse:
    """The ``ModelInferResponse``: the outputs asked for (all by default), raw."""
    wanted = oip.wanted_outputs(request.outputs, tensors)
    response = pb.ModelInferResponse(model_name=name, model_version=version, id=request.id or "")
    for output, (datatype, values) in tensors.items():
        if wanted is not None and output not in wanted:
            continue
        response.outputs.add(name=output, datatype=datatype, shape=list(values.shape))
        response.raw_output_contents.append(oip.to_raw(datatype, values))
    return response


def metadata_response(metadata: dict[str, Any]) -> pb.ModelMetadataResponse:
    """The ``ModelMetadataResponse`` of REST's model metadata document (gRPC's message has
    no ``parameters``: how to send a table in one tensor is in the REST document)."""

    def tensor(entry: dict[str, Any]) -> pb.ModelMetadataResponse.TensorMetadata:
        return pb.ModelMetadataResponse.TensorMetadata(
            name=entry["name"], datatype=entry["datatype"], shape=entry["shape"]
        )

    return pb.ModelMetadataResponse(
        name=metadata["name"],
        versions=metadata["versions"],
        platform=metadata["platform"],
        inputs=[tensor(e) for e in metadata["inputs"]],
        outputs=[tensor(e) for e in metadata["outputs"]],
    )

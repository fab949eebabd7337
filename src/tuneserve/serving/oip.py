"""The Open Inference Protocol (KServe v2) codec: JSON tensors and the binary extension.

This module reads and writes tensors; which tensors a model takes (per modality, and the
two forms of a table) is :mod:`tuneserve.serving.decode`'s business.
Responses: ``probabilities`` (``FP32 [n, classes]``) and ``label`` (``BYTES [n]``) for a
classifier, ``value`` (``FP32 [n]``) for a regressor, ``embedding`` (``FP32 [n, d]``).

Binary extension: the body is a JSON header of ``Inference-Header-Content-Length`` bytes,
followed by each binary tensor in input order (``parameters.binary_data_size`` bytes);
``BYTES`` elements are each a 4-byte little-endian length then the bytes.
"""

from __future__ import annotations

import json
import math
import reprlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneserve.exceptions import InvalidInputError

HEADER = "Inference-Header-Content-Length"
#: Most dimensions of a tensor (numpy's own limit is 64), and the largest size of one.
MAX_RANK = 32
MAX_DIM = 2**31 - 1
_END = object()

#: OIP datatype -> numpy dtype (BYTES is handled apart).
DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    values: np.ndarray  # BYTES: an object array of bytes


@dataclass
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[dict[str, Any]] | None
    binary_output: bool


def _bytes_elements(blob: bytes, name: str, expected: int) -> list[bytes]:
    """The length-prefixed elements of ``blob``; more than ``expected`` (the shape's count)
    is refused as soon as it is seen, before the rest are made into objects."""
    out: list[bytes] = []
    at = 0
    while at < len(blob):
        if len(out) == expected:
            raise InvalidInputError(
                f"input {name!r}: more BYTES elements than its shape's {expected}; send as "
                "many as the shape says"
            )
        if at + 4 > len(blob):
            raise InvalidInputError(f"input {name!r}: truncated BYTES element length at {at}")
        (size,) = struct.unpack_from("<I", blob, at)
        at += 4
        if at + size > len(blob):
            raise InvalidInputError(
                f"input {name!r}: a BYTES element claims {size} bytes but {len(blob) - at} remain"
            )
        out.append(blob[at : at + size])
        at += size
    return out


def encode_bytes(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def _object_array(values: list[bytes]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _is_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _short(value: Any) -> str:
    return reprlib.repr(value)


def _count(shape: list[int]) -> int:
    return math.prod(shape)  # not np.prod: 30 column tensors would cost more than the model


def load_json(body: bytes) -> Any:
    """A request's JSON document; malformed or too deeply nested JSON is the client's error."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError(f"the request is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInputError(
            "the request's JSON is nested deeper than the server parses (about 1000 levels); "
            "send inputs nested at most as deep as their shape"
        ) from None


def check_header(name: str, datatype: Any, shape: Any) -> tuple[str, list[int]]:
    """An input tensor's datatype and shape, checked: an OIP type, and a list of sane
    sizes."""
    if datatype != "BYTES" and datatype not in DTYPES:
        raise InvalidInputError(
            f"input {name!r}: datatype {datatype!r} is not an OIP type "
            f"({', '.join(['BYTES', *DTYPES])})"
        )
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInputError(f"input {name!r}: shape must be a list of sizes >= 0")
    if len(shape) > MAX_RANK or any(d > MAX_DIM for d in shape):
        raise InvalidInputError(
            f"input {name!r}: shape {_short(shape)} is beyond what any request can hold (at "
            f"most {MAX_RANK} dimensions of at most {MAX_DIM} each); send the tensor's real "
            "shape"
        )
    return datatype, shape


def raw_values(name: str, datatype: str, shape: list[int], blob: bytes) -> np.ndarray:
    """A tensor's flat values from its raw bytes (the binary extension's, or gRPC's
    ``raw_input_contents``): little-endian elements, or length-prefixed ``BYTES``."""
    if datatype == "BYTES":
        return _object_array(_bytes_elements(blob, name, _count(shape)))
    dtype = np.dtype(DTYPES[datatype]).newbyteorder("<")
    if len(blob) != _count(shape) * dtype.itemsize:
        raise InvalidInputError(
            f"input {name!r}: {len(blob)} raw bytes, but shape {shape} of "
            f"{datatype} needs {_count(shape) * dtype.itemsize}"
        )
    return np.frombuffer(blob, dtype=dtype)


def shaped(name: str, datatype: str, shape: list[int], values: np.ndarray) -> Tensor:
    """The tensor of flat ``values`` in ``shape``, whose element count must match."""
    if values.size != _count(shape):
        raise InvalidInputError(
            f"input {name!r}: shape {shape} holds {_count(shape)} elements but "
            f"{values.size} were sent"
        )
    try:
        return Tensor(name, datatype, shape, values.reshape(shape))
    except ValueError:  # an empty tensor whose other sizes multiply past numpy's limit
        raise InvalidInputError(
            f"input {name!r}: shape {_short(shape)} is larger than numpy can address; send "
            "the tensor's real shape"
        ) from None


def parse_request(
    body: bytes, header_length: str | None, check_items: Callable[[int], None] | None = None
) -> InferRequest:
    """Decode an infer request (JSON, or JSON header plus binary tensors). ``check_items``
    (the server's ``--max-items`` check) sees each tensor's first dimension before its
    values are read."""
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise InvalidInputError(f"{HEADER} must be an integer, got {header_length!r}") from None
        if not 0 <= size <= len(body):
            raise InvalidInputError(
                f"{HEADER} is {size} but the body has {len(body)} bytes; send the JSON header "
                "length in bytes"
            )
        head, binary = body[:size], body[size:]
    else:
        head, binary = body, b""
    doc = load_json(head)
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise InvalidInputError('an infer request is a JSON object with a non-empty "inputs" list')
    offset = 0
    tensors = []
    for i, raw in enumerate(doc["inputs"]):
        if not isinstance(raw, dict):
            raise InvalidInputError(f"inputs[{i}] must be an object with name, shape, datatype")
        name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"inputs[{i}] has no name")
        datatype, shape = check_header(name, datatype, shape)
        if check_items is not None and shape:
            check_items(shape[0])
        params = raw.get("parameters") or {}
        blob_size = params.get("binary_data_size") if isinstance(params, dict) else None
        if blob_size is not None:
            if not isinstance(blob_size, int) or blob_size < 0 or offset + blob_size > len(binary):
                raise InvalidInputError(
                    f"input {name!r}: binary_data_size {blob_size!r} does not fit the "
                    f"{len(binary) - offset} binary bytes left"
                )
            values = raw_values(name, datatype, shape, binary[offset : offset + blob_size])
            offset += blob_size
        else:
            if "data" not in raw:
                raise InvalidInputError(f"input {name!r} has no data and no binary_data_size")
            values = _json_values(raw["data"], datatype, name)
        tensors.append(shaped(name, datatype, shape, values))
    if offset != len(binary):
        raise InvalidInputError(
            f"{len(binary) - offset} binary bytes follow the tensors; binary_data_size must "
            "account for every byte"
        )
    outputs = doc.get("outputs")
    if outputs is not None and not (
        isinstance(outputs, list)
        and all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
    ):
        raise InvalidInputError('"outputs" must be a list of objects with a name')
    for o in outputs or ():
        if not isinstance(o.get("parameters") or {}, dict):
            raise InvalidInputError(
                f"outputs {o['name']!r}: parameters is {_short(o['parameters'])}; it must be an "
                'object, such as {"binary_data": true}'
            )
    params = doc.get("parameters") or {}
    binary_output = bool(isinstance(params, dict) and params.get("binary_data_output"))
    request_id = doc.get("id")
    return InferRequest(
        id=str(request_id) if request_id is not None else None,
        inputs=tensors,
        outputs=outputs,
        binary_output=binary_output,
    )


def _flatten(data: Any, name: str) -> list[Any]:
    """Nested lists -> their leaves in order; a loop, not recursion, so that no nesting
    reaches Python's recursion limit (``data`` nests at most as deep as the shape)."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(v, list) for v in data):
        return data  # flat already: the common case, no copy
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            if len(stack) >= MAX_RANK:
                raise InvalidInputError(
                    f"input {name!r}: data is nested more than {MAX_RANK} lists deep; send it "
                    "flat (row-major) or nested as its shape"
                )
            stack.append(iter(item))
        else:
            out.append(item)
    return out


def _json_values(data: Any, datatype: str, name: str) -> np.ndarray:
    flat = _flatten(data, name)
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise InvalidInputError(f"input {name!r}: BYTES data must be strings in JSON")
        try:
            return _object_array([v.encode() for v in flat])
        except UnicodeEncodeError:
            i = next(i for i, v in enumerate(flat) if not _is_unicode(v))
            raise InvalidInputError(
                f"input {name!r}: BYTES data[{i}] holds a lone surrogate, which is not valid "
                "Unicode; send UTF-8 text (a \\uD800-\\uDFFF escape in JSON must be one half "
                "of a pair)"
            ) from None
    if not all(isinstance(v, int | float) for v in flat):
        raise InvalidInputError(f"input {name!r}: {datatype} data must be numbers")
    try:
        return np.asarray(flat, dtype=DTYPES[datatype])
    except (OverflowError, ValueError) as exc:
        raise InvalidInputError(f"input {name!r}: {exc}") from None


def outputs_for(
    task: str, labels: list[str] | None, result: np.ndarray
) -> dict[str, tuple[str, np.ndarray]]:
    """Named output tensors (datatype, values) for a model's raw result."""
    if task == "classification":
        names = _object_array([(labels or [])[i].encode() for i in result.argmax(1)])
        return {
            "probabilities": ("FP32", result.astype(np.float32)),
            "label": ("BYTES", names),
        }
    if task == "embedding":
        return {"embedding": ("FP32", result.astype(np.float32))}
    return {"value": ("FP32", result.astype(np.float32).reshape(-1))}


def to_raw(datatype: str, values: np.ndarray) -> bytes:
    """A tensor's raw bytes: elements row-major and little-endian, or length-prefixed
    ``BYTES`` (the binary extension's layout, and gRPC's ``raw_output_contents``)."""
    if datatype == "BYTES":
        return encode_bytes(list(values.reshape(-1)))
    return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()


def wanted_outputs(
    requested: list[dict[str, Any]] | None, tensors: dict[str, tuple[str, np.ndarray]]
) -> dict[str, dict[str, Any]] | None:
    """The outputs a request asked for, by name (None: all); an unknown one is refused."""
    if not requested:
        return None
    wanted = {o["name"]: o for o in requested}
    unknown = sorted(set(wanted) - set(tensors))
    if unknown:
        raise InvalidInputError(f"unknown outputs {unknown}; this model has {sorted(tensors)}")
    return wanted


def encode_response(
    model: str,
    version: str,
    request: InferRequest,
    tensors: dict[str, tuple[str, np.ndarray]],
) -> tuple[bytes, int | None]:
    """The response body and, when it has binary outputs, its JSON header length."""
    wanted = wanted_outputs(request.outputs, tensors)
    outputs, blobs = [], []
    for name, (datatype, values) in tensors.items():
        if wanted is not None and name not in wanted:
            continue
        params = (wanted or {}).get(name, {}).get("parameters") or {}
        binary = bool(params.get("binary_data", request.binary_output))
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(values.shape)}
        if binary:
            blob = to_raw(datatype, values)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":
            entry["data"] = [v.decode("utf-8", "replace") for v in values.reshape(-1)]
        else:
            entry["data"] = values.reshape(-1).tolist()
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if request.id is not None:
        doc["id"] = request.id
    head = json.dumps(doc).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)

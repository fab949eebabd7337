"""Which quantized nodes hurt most: both graphs run with each quantized node's input and
output activations added as outputs, and a node is scored by the error it adds. The search
leaves the worst nodes in float (``exclude``) when an INT8 variant loses too much."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from tuneserve.package import Package
from tuneserve.preprocessing import Preprocessor, preprocessor_from_spec

from ._quantize import (
    _WEIGHT_INPUT,
    _batches,
    _float_weights,
    _quantizable,
    _quiet,
    _session,
    _weight_is_float,
)

__all__ = ["node_sensitivity"]


def node_sensitivity(
    parent: Package, variant: Package, inputs: Any, top: int = 3
) -> list[tuple[str, float]]:
    """The parent's nodes whose quantization in ``variant`` hurts most, worst first.

    For each node of the parent's graph that ``variant`` quantized (a MatMul, Gemm or
    Conv whose constant weight is no longer float32), both graphs run on ``inputs`` with
    the node's input and output activations added as graph outputs. A node's score is the
    relative error (``|quantized - float| / |float|``, over all inputs) of its output minus
    that of its input: the error the node adds, not the error it inherits, so that leaving
    the worst node in float (``exclude``) removes the most error.

    Returns:
        Up to ``top`` ``(node name, added relative error)`` pairs, largest first.
    """
    parent_model = onnx.load(str(parent.graph_path))
    variant_model = onnx.load(str(variant.graph_path))
    float_left = _float_weights(variant_model)
    nodes = [
        n
        for n in _quantizable(parent_model, tuple(_WEIGHT_INPUT))
        if not _weight_is_float(n, float_left)
    ]
    if not nodes:
        return []
    pairs: dict[str, tuple[str, str]] = {}  # parent tensor -> (itself, variant tensor)
    watched: dict[str, tuple[str | None, str | None]] = {}  # node -> (input, output)
    for node in nodes:
        data = node.input[1 - _WEIGHT_INPUT[node.op_type]]  # the activation it reads
        ends = [_match(parent_model, variant_model, t) for t in (data, node.output[0])]
        for pair in ends:
            if pair is not None:
                pairs[pair[0]] = pair
        watched[node.name] = (
            ends[0][0] if ends[0] else None,
            ends[1][0] if ends[1] else None,
        )
    float_names = sorted(pairs)
    quant_names = [pairs[name][1] for name in float_names]
    preprocessor = preprocessor_from_spec(parent.manifest.preprocessing, parent.assets_path)
    with _quiet():
        float_values = _activations(parent_model, float_names, preprocessor, inputs, parent)
        quant_values = _activations(variant_model, quant_names, preprocessor, inputs, parent)
    error = {
        name: _relative_error(f, q)
        for name, f, q in zip(float_names, float_values, quant_values, strict=True)
    }
    scores = [
        (name, max(0.0, error[out] - (error[inp] if inp else 0.0)))
        for name, (inp, out) in watched.items()
        if out is not None
    ]
    scores.sort(key=lambda item: item[1], reverse=True)
    return scores[:top]


def _match(
    parent: onnx.ModelProto, variant: onnx.ModelProto, tensor: str
) -> tuple[str, str] | None:
    """The parent tensor whose value ``variant`` still holds, with its name there.

    The dynamic quantizer keeps tensor names. The QDQ quantizer reads a tensor ``t`` as
    ``t_DequantizeLinear_Output``, and drops a Relu after a Conv or Gemm, giving the Relu's
    output name to the node before it: then the Relu's output is the tensor to compare.
    """
    producers = {out: node for node in variant.graph.node for out in node.output}
    parent_producers = {out: node for node in parent.graph.node for out in node.output}
    parent_names = {node.name for node in parent.graph.node}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in parent.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_inputs = {i.name for i in parent.graph.input}
    for _ in range(4):  # follow at most a few activations
        if tensor in graph_inputs:
            return None  # the graph's input: its quantization is the first node's error
        if tensor + "_DequantizeLinear_Output" in producers:
            return tensor, tensor + "_DequantizeLinear_Output"
        made_by = producers.get(tensor)
        owner = parent_producers.get(tensor)
        if made_by is not None and not (
            made_by.name in parent_names and owner is not None and made_by.name != owner.name
        ):
            return tensor, tensor
        after = consumers.get(tensor, [])
        if len(after) != 1 or after[0].op_type not in ("Relu", "Clip", "LeakyRelu"):
            return None
        tensor = after[0].output[0]
    return None


def _activations(
    model: onnx.ModelProto,
    names: list[str],
    preprocessor: Preprocessor,
    inputs: Any,
    package: Package,
) -> list[np.ndarray]:
    """The values of tensors ``names`` of ``model`` on ``inputs``, flattened per tensor."""
    watched = onnx.ModelProto()
    watched.CopyFrom(model)
    types = _tensor_types(watched)
    del watched.graph.output[:]
    for name in names:
        watched.graph.output.append(
            onnx.helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None)
        )
    session = _session(watched.SerializeToString())
    runs = [session.run(names, feed) for feed in _batches(preprocessor, inputs, package)]
    return [
        np.concatenate([np.asarray(run[i], np.float64).reshape(-1) for run in runs])
        for i in range(len(names))
    ]


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a graph ONNX cannot infer (contrib ops): fall back to float
        inferred = model
    infos = [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
    return {i.name: i.type.tensor_type.elem_type for i in infos if i.type.HasField("tensor_type")}


def _relative_error(reference: np.ndarray, other: np.ndarray) -> float:
    scale = float(np.linalg.norm(reference))
    return float(np.linalg.norm(other - reference)) / max(scale, 1e-12)

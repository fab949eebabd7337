"""Post-training quantization (PTQ) of a package's ONNX graph with ONNX Runtime.

Three methods, each a transformed copy of the parent's graph written by
:func:`write_graph_variant`:

- ``int8-dynamic``: INT8 weights; activations are quantized on the fly, per call
  (``MatMulInteger``, ``ConvInteger``). No calibration data. Works for CNNs, MLPs and
  transformer encoders alike.
- ``int8-static``: INT8 weights and activations in QDQ format, the activation ranges
  calibrated on training inputs. Offered for CNNs and MLPs only: the activations of a
  transformer (attention scores, LayerNorm outputs) have outliers that one calibrated
  range per tensor clips.
- ``fp16``: half-precision weights and compute for GPU execution providers; inputs and
  outputs stay float32, and the graph still runs (slower) on the CPU.

Only nodes that multiply by constant weights (``MatMul``, ``Gemm``, ``Conv`` with an
initializer as weight) are worth quantizing; a scikit-learn graph (``ai.onnx.ml``
operators) has none. :func:`tuneserve.compression._sensitivity.node_sensitivity` finds the
nodes whose quantization hurts most, so a search can leave them in float (``exclude``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tuneserve.exceptions import ExportError, InvalidInputError
from tuneserve.package import Package
from tuneserve.preprocessing import Preprocessor, preprocessor_from_spec

from ._variant import write_graph_variant

__all__ = [
    "CALIBRATIONS",
    "PTQ_METHODS",
    "ptq_reason",
    "quantize_package",
]

PTQ_METHODS = ("int8-dynamic", "int8-static", "fp16")
CALIBRATIONS = ("minmax", "entropy", "percentile")
#: Ops whose constant weights are quantized (the dynamic quantizer turns Gemm into MatMul).
QUANTIZABLE_OPS = ("MatMul", "Gemm", "Conv")
#: Where each op that carries a weight reads it: Gather (an embedding table) reads it
#: first. INT8 embedding tables make a MiniLM graph 3.9x smaller instead of 1.5x.
_WEIGHT_INPUT = {"MatMul": 1, "Gemm": 1, "Conv": 1, "Gather": 0}
#: Ops found only in transformer encoders (plain, or fused by ONNX Runtime).
_TRANSFORMER_OPS = frozenset(
    {
        "LayerNormalization",
        "SkipLayerNormalization",
        "EmbedLayerNormalization",
        "Attention",
        "MultiHeadAttention",
    }
)
#: Calibration rows used at most (a seeded sample of larger sets): the ranges settle
#: with a few hundred, and each row is one more graph run.
MAX_CALIBRATION_ROWS = 512
#: Rows per calibration batch.
CALIBRATION_BATCH = 32
#: Rows per graph call when comparing outputs or activations.
_RUN_BATCH = 64


# --- what applies ---------------------------------------------------------------------


def _quantizable(
    model: onnx.ModelProto, ops: Sequence[str] = QUANTIZABLE_OPS
) -> list[onnx.NodeProto]:
    """Nodes of the main graph with op type in ``ops`` whose weight is a float32
    initializer (an fp16 or int8 weight is already compressed)."""
    weights = _float_weights(model)
    return [
        node
        for node in model.graph.node
        if node.op_type in ops
        and len(node.input) > 1
        and node.input[_WEIGHT_INPUT[node.op_type]] in weights
    ]


def _is_transformer(model: onnx.ModelProto) -> bool:
    return any(node.op_type in _TRANSFORMER_OPS for node in model.graph.node)


def _check_method(method: str) -> None:
    if method not in PTQ_METHODS:
        raise InvalidInputError(
            f"unknown quantization method {method!r}; choose one of {list(PTQ_METHODS)}"
        )


def ptq_reason(package: Package, method: str) -> str | None:
    """Why ``method`` does not apply to ``package``, in one sentence; None when it does.

    Raises:
        InvalidInputError: ``method`` is not one of :data:`PTQ_METHODS`.
    """
    from tuneserve.ensemble_package import is_ensemble

    _check_method(method)
    if is_ensemble(package.manifest):
        return "the package is an ensemble; quantize its member packages one by one"
    model = onnx.load(str(package.graph_path))
    if not _quantizable(model):
        ml_ops = sorted({n.op_type for n in model.graph.node if n.domain == "ai.onnx.ml"})
        source = (
            f" (a scikit-learn model: {', '.join(ml_ops)})"
            if ml_ops
            else f" (its ops are {sorted({n.op_type for n in model.graph.node})})"
        )
        return (
            "the graph has no MatMul, Gemm or Conv with float32 weights to quantize"
            f"{source}; retrain it with a torch backbone (mlp, cnn) to compress it"
        )
    if method == "int8-static" and _is_transformer(model):
        return (
            "static INT8 is not offered for transformer encoders (text or vision): one "
            "calibrated range per activation clips their outliers; use int8-dynamic"
        )
    return None


# --- quantize --------------------------------------------------------------------------


def quantize_package(
    parent: Package,
    out: str | Path,
    method: str,
    *,
    calibration: Any = None,
    calibrate: str = "minmax",
    per_channel: bool | None = None,
    exclude: Sequence[str] = (),
    check: Any = None,
    overwrite: bool = False,
) -> Package:
    """Quantize ``parent``'s graph with ``method`` and write the variant to ``out``.

    Args:
        parent: An uncompressed (or distilled, pruned) package with a torch-exported graph.
        out: The variant's package directory.
        method: One of :data:`PTQ_METHODS`.
        calibration: Raw training inputs (table rows, images, texts), required by
            ``int8-static``; at most :data:`MAX_CALIBRATION_ROWS` of them are used.
        calibrate: How ``int8-static`` picks activation ranges: one of
            :data:`CALIBRATIONS`.
        per_channel: One scale per output channel of each weight instead of one per
            tensor. None: per channel for transformer encoders (on a MiniLM probe it
            halved the mean probability error, 0.0081 to 0.0041, and cut the largest
            from 0.079 to 0.058 on 66 review texts), per tensor otherwise (on the
            digits CNN and a table MLP both are within 0.003 of each other).
        exclude: Node names left in float.
        check: Raw inputs on which the variant's outputs are compared with the parent's;
            the largest difference is recorded as the variant's ``parity_max_abs_diff``.
        overwrite: Replace an existing package at ``out``.

    Returns:
        The variant. Its lineage records the method, settings and what was quantized.

    Raises:
        InvalidInputError: unknown ``method`` or ``calibrate``, a method that does not
            apply (see :func:`ptq_reason`), an unknown node in ``exclude``, or missing or
            mismatched ``calibration`` inputs.
        ExportError: ONNX Runtime could not quantize the graph.
    """
    reason = ptq_reason(parent, method)
    if reason is not None:
        raise InvalidInputError(f"{method} does not apply to package {parent.path}: {reason}")
    if calibrate not in CALIBRATIONS:
        raise InvalidInputError(
            f"unknown calibration method {calibrate!r}; choose one of {list(CALIBRATIONS)}"
        )
    model = onnx.load(str(parent.graph_path))
    nodes = _quantizable(model, tuple(_WEIGHT_INPUT))
    known = {node.name for node in model.graph.node}
    unknown = [name for name in exclude if name not in known]
    if unknown:
        raise InvalidInputError(
            f"exclude names nodes {unknown} that the graph of {parent.path} does not have; "
            f"its quantizable nodes are {[n.name for n in nodes]}"
        )
    transformer = _is_transformer(model)
    if per_channel is None:
        per_channel = transformer and method != "fp16"
    settings: dict[str, Any] = {"exclude": list(exclude)}
    details: dict[str, Any] = {}
    preprocessor = preprocessor_from_spec(parent.manifest.preprocessing, parent.assets_path)

    with tempfile.TemporaryDirectory(prefix="tuneserve-ptq-") as tmp, _quiet():
        source, target = Path(tmp) / "float.onnx", Path(tmp) / "quantized.onnx"
        source.write_bytes(parent.graph_path.read_bytes())
        if method == "int8-dynamic":
            settings.update(weight_type="int8", per_channel=per_channel)
            _dynamic(source, target, per_channel, exclude)
        elif method == "int8-static":
            feeds = _CalibrationFeeds(preprocessor, calibration, parent)
            settings.update(
                weight_type="int8",
                activation_type="int8",
                format="QDQ",
                per_channel=per_channel,
                calibrate=calibrate,
            )
            details["calibration_rows"] = feeds.rows
            _static(source, target, feeds, calibrate, per_channel, exclude)
        else:
            settings.update(keep_io_types=True)
            _fp16(source, target, exclude)
        graph = target.read_bytes()

    variant = onnx.load_from_string(graph)
    float_left = _float_weights(variant)
    done = [n for n in nodes if not _weight_is_float(n, float_left)]
    details.update(
        quantized_nodes=len(done),
        quantized_op_types=sorted({n.op_type for n in done}),
        excluded_nodes=list(exclude),
        per_channel=per_channel if method != "fp16" else None,
        calibration=calibrate if method == "int8-static" else None,
        graph_bytes={"parent": parent.graph_path.stat().st_size, "variant": len(graph)},
    )
    if not done:
        raise InvalidInputError(
            f"{method} quantized none of the {len(nodes)} quantizable nodes of "
            f"{parent.path} (exclude={list(exclude)}); leave fewer nodes in float"
        )
    session = _session(graph)  # every variant must load on the CPU, fp16 included
    diff = None
    if check is not None:
        parent_out = _outputs(_session(parent.graph_path.read_bytes()), preprocessor, check, parent)
        variant_out = _outputs(session, preprocessor, check, parent)
        diff = float(np.max(np.abs(parent_out - variant_out)))
    details["max_output_diff"] = diff
    return write_graph_variant(
        parent,
        out,
        method=method,
        graph=graph,
        settings=settings,
        details=details,
        parity_max_abs_diff=diff,
        overwrite=overwrite,
    )


def _dynamic(source: Path, target: Path, per_channel: bool, exclude: Sequence[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # the dynamic quantizer rewrites each Gemm into "<name>_MatMul" + "<name>_Add" first
    excluded = [*exclude, *(f"{name}_MatMul" for name in exclude)]
    _retry_with_shapes(
        source,
        lambda model: quantize_dynamic(
            model,
            target,
            op_types_to_quantize=["MatMul", "Conv", "Gather"],  # Gemm becomes MatMul
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            # fused ops (com.microsoft) carry no type information for the quantizer
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        ),
    )


def _static(
    source: Path,
    target: Path,
    feeds: _CalibrationFeeds,
    calibrate: str,
    per_channel: bool,
    exclude: Sequence[str],
) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry

    # the QDQ ops only: a quantized Softmax would round the probabilities to 1/256
    ops = list(QDQRegistry)

    def quantize(model: Path) -> None:
        cache = model.with_name(f"{model.stem}.ranges.json")
        method = _calibrate(model, cache, feeds, calibrate, ops)
        quantize_static(
            model,
            target,
            None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=ops,
            per_channel=per_channel,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            calibrate_method=method,
            calibration_cache_path=cache,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )

    _retry_with_shapes(source, quantize)


def _calibrate(
    model: Path,
    cache: Path,
    feeds: _CalibrationFeeds,
    calibrate: str,
    ops: list[str],
) -> Any:
    """Measure the activation ranges of ``model`` on ``feeds`` into the range file
    ``cache`` that ``quantize_static`` reads; returns the calibration method.

    ``quantize_static`` calibrates by itself too, but gives the entropy calibrator as many
    histogram bins (128) as quantized bins, which leaves it one candidate range: the full
    one, as MinMax. Here it gets 512 bins (TensorRT uses 2048, but the search grows with
    the square of the bins: 2048 took 12 s on the 8x8 digits CNN). One batch at a time:
    the calibrators merge ranges and histograms across calls, and the histogram ones
    keep every activation of the batches of a call in memory.
    """
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorsData,
        create_calibrator,
        save_tensors_data,
    )

    method, options = {
        "minmax": (CalibrationMethod.MinMax, {}),
        "entropy": (CalibrationMethod.Entropy, {"num_bins": 512, "num_quantized_bins": 128}),
        "percentile": (CalibrationMethod.Percentile, {}),
    }[calibrate]
    calibrator = create_calibrator(
        model,
        ops,
        augmented_model_path=str(model.with_name(f"{model.stem}.augmented.onnx")),
        calibrate_method=method,
        extra_options=options,
    )
    for feed in feeds:
        calibrator.collect_data(_FeedReader([feed]))
    ranges = calibrator.compute_data()
    if not isinstance(ranges, TensorsData):
        raise TypeError(f"the {calibrate} calibrator returned {type(ranges).__name__}")
    save_tensors_data(ranges, cache)
    return method


def _fp16(source: Path, target: Path, exclude: Sequence[str]) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(
        onnx.load(str(source)), keep_io_types=True, node_block_list=list(exclude) or None
    )
    onnx.save(half, str(target))


def _retry_with_shapes(source: Path, quantize: Any) -> None:
    """Run ``quantize(path)``; if it fails, once more on the graph with its shapes
    inferred by ``quant_pre_process`` (the dynamo exporter leaves some shapes out)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quantize(source)
        return
    except Exception as exc:  # ONNX Runtime's quantizers raise untyped errors
        first = str(exc)[:300]
    shaped = source.with_name("shaped.onnx")
    try:
        # ONNX's shape inference only: the symbolic one gives up on the dynamo MiniLM
        # graph and then saves a 90 MB sym_shape_infer_temp.onnx into the working
        # directory. No graph optimization: it would fuse and rename the nodes to exclude.
        quant_pre_process(
            str(source), str(shaped), skip_optimization=True, skip_symbolic_shape=True
        )
        quantize(shaped)
    except Exception as exc:
        raise ExportError(
            f"ONNX Runtime could not quantize the graph: {first} (with its shapes inferred: "
            f"{str(exc)[:300]}). Hint: try another method, or exclude the node it names"
        ) from exc


class _FeedReader:
    """The calibration batches as ONNX Runtime's ``CalibrationDataReader`` (``get_next``)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


class _CalibrationFeeds:
    """Graph feeds made from raw calibration inputs, one batch at a time (a seeded
    sample of at most :data:`MAX_CALIBRATION_ROWS`). The first batch is made at once, so
    that inputs that do not fit the package fail before any quantization work."""

    def __init__(self, preprocessor: Preprocessor, calibration: Any, parent: Package) -> None:
        if calibration is None or not hasattr(calibration, "__len__") or len(calibration) == 0:
            raise InvalidInputError(
                "int8-static needs calibration inputs to measure activation ranges, got "
                f"{'none' if calibration is None else type(calibration).__name__}. Hint: "
                "pass calibration= some training inputs (a few hundred), or use int8-dynamic"
            )
        n = len(calibration)
        rows = np.arange(n)
        if n > MAX_CALIBRATION_ROWS:
            rows = np.sort(np.random.default_rng(0).choice(n, MAX_CALIBRATION_ROWS, replace=False))
        self.rows = len(rows)
        self._batches = [
            rows[i : i + CALIBRATION_BATCH] for i in range(0, self.rows, CALIBRATION_BATCH)
        ]
        self._preprocessor, self._inputs, self._parent = preprocessor, calibration, parent
        self._first = self._feed(self._batches[0])

    def _feed(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        try:
            feed = self._preprocessor.transform(_take(self._inputs, rows))
        except (InvalidInputError, KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"the calibration inputs do not match the input schema of package "
                f"{self._parent.path}: {exc}. Hint: calibrate on rows of the data it was "
                "trained on"
            ) from exc
        return {name: feed[name] for name in self._parent.manifest.graph.inputs}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        yield self._first
        for rows in self._batches[1:]:
            yield self._feed(rows)


def _take(inputs: Any, rows: np.ndarray) -> Any:
    if hasattr(inputs, "iloc"):  # a DataFrame: rows, not columns
        return inputs.iloc[rows]
    if isinstance(inputs, np.ndarray):
        return inputs[rows]
    return [inputs[int(i)] for i in rows]


def _float_weights(model: onnx.ModelProto) -> set[str]:
    """The float32 initializers that some node reads (the quantizers may leave the
    original of a weight they replaced behind, unused)."""
    used = {name for node in model.graph.node for name in node.input}
    return {
        i.name
        for i in model.graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT and i.name in used
    }


def _weight_is_float(node: onnx.NodeProto, float_weights: set[str]) -> bool:
    """Whether ``node``'s weight is still float32 in a quantized graph (the dynamic
    quantizer stores a Gemm's transposed weight as ``<weight>_Transposed``)."""
    weight = node.input[_WEIGHT_INPUT[node.op_type]]
    copy = re.compile(re.escape(weight) + r"(_Transposed(_\d+)?)?")
    return any(copy.fullmatch(name) for name in float_weights)


# --- run and compare -------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the quantizers' advice: warnings on the root logger ("consider
    pre-processing"), on the ``onnxruntime.*`` loggers and in prints, and Python warnings.
    Errors still come through."""

    def advice(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname or record.levelno >= logging.ERROR

    root, ort_logger = logging.getLogger(), logging.getLogger("onnxruntime")
    level = ort_logger.level
    root.addFilter(advice)
    ort_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(advice)
        ort_logger.setLevel(level)


def _session(graph: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own untyped errors
        raise ExportError(
            f"ONNX Runtime cannot load the graph on the CPU: {str(exc)[:300]}. Hint: "
            "exclude the node it names, or use another method"
        ) from exc


def _batches(
    preprocessor: Preprocessor, inputs: Any, package: Package
) -> Iterator[dict[str, np.ndarray]]:
    n = len(inputs)
    if n == 0:
        raise InvalidInputError("the inputs to compare on are empty; pass at least one")
    names = package.manifest.graph.inputs
    for start in range(0, n, _RUN_BATCH):
        feed = preprocessor.transform(_take(inputs, np.arange(start, min(n, start + _RUN_BATCH))))
        yield {name: feed[name] for name in names}


def _outputs(session: Any, preprocessor: Preprocessor, inputs: Any, package: Package) -> Any:
    output = package.manifest.graph.output
    parts = [session.run([output], feed)[0] for feed in _batches(preprocessor, inputs, package)]
    return np.concatenate(parts, axis=0).astype(np.float64)

"""Quantization-aware training (QAT): a ``compress`` strategy that fine-tunes a package's
torch model with int8 fake quantization and writes an int8 QDQ graph.

The path is torchao's PT2E: ``torch.export`` captures the model, ``prepare_qat_pt2e`` with
the x86 quantizer (uint8 activations per tensor, int8 weights per channel) inserts fake
quantizers that the loop trains through, ``convert_pt2e`` folds them into
quantize/dequantize pairs around int8 weights, and the dynamo ONNX exporter writes those as
``QuantizeLinear``/``DequantizeLinear``. ONNX Runtime fuses each pair around a convolution or
linear layer into an integer kernel (``QLinearConv``, ``QGemm``/``MatMulInteger``).

The package stores no ``extras/weights.pt``: a quantized graph is an end point, and cannot
be fine-tuned or compressed by a training-based method again.

Parity: ONNX Runtime computes in integers, torch's converted model simulates them in float,
so an activation next to a rounding boundary can land one quantization step apart; the
outputs (probabilities) agree to :data:`QAT_PARITY_TOLERANCE`, not to the 1e-4 of float
exports. The measured difference is recorded in the manifest.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from tuneserve.exceptions import ExportError, InvalidInputError
from tuneserve.exporters import (
    OUTPUT_KINDS,
    check_task,
    graph_opset,
    lineage_of,
    write_package,
)
from tuneserve.lineage import Backbone, Lineage, next_compression
from tuneserve.package import Graph, Package
from tuneserve.preprocessing import Preprocessor

from ._build import Parts, Run
from ._plan import Plan, Strategy, register_strategy
from ._result import TrainedModel
from .augment import ImageAugment
from .config import TrainConfig
from .loop import fit
from .source_model import source_model

METHOD = "qat"
#: Largest |torch converted model - ONNX Runtime| difference of output probabilities a QAT
#: export may show (one activation quantization step, rounded differently, moves a
#: probability by up to a few 1e-3 on the built-in models; the measured one is recorded).
QAT_PARITY_TOLERANCE = 2e-2
#: Rows traced for export; the graph keeps a dynamic batch axis.
TRACE_ROWS = 4
PARITY_BATCH = 256
#: ONNX Runtime kernels that compute in integers: what the QDQ pairs should fuse into.
INT8_KERNELS = ("QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "ConvInteger")


@dataclass
class QATConfig(TrainConfig):
    """Settings of quantization-aware training: the loop's (a short fine-tune at a small
    learning rate from the package's weights), plus image augmentation.

    Attributes:
        augment: Random affine augmentation of training images (the CNN; ignored for
            tables).
    """

    augment: bool = True


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torchao's import notices (its optional CUDA kernels fail to load on CPU,
    harmlessly), torch's export and ONNX exporter chatter, and their warnings."""
    names = ("torchao", "torch.utils._pytree", "torch.onnx", "torch.export", "torch._export")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def prepare_qat(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """``model`` captured by ``torch.export`` (dynamic batch) with x86 int8 fake quantizers
    inserted; its ``train()``/``eval()`` switch dropout and the observers (eval keeps the
    fake quantization but freezes the ranges, so validation never moves them)."""
    with _quiet():
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )

        model.train()  # dropout is captured as a train/eval switchable op
        batch = torch.export.Dim("batch", min=1)
        exported = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        quantizer = X86InductorQuantizer().set_global(
            get_default_x86_inductor_quantization_config(is_qat=True)
        )
        prepared = prepare_qat_pt2e(exported.module(), quantizer)
    _switch_train_eval(prepared)
    return prepared


def _switch_train_eval(model: torch.fx.GraphModule) -> None:
    from torchao.quantization.pt2e import (
        disable_observer,
        enable_observer,
        move_exported_model_to_eval,
        move_exported_model_to_train,
    )

    def train(mode: bool = True) -> torch.fx.GraphModule:
        if mode:
            move_exported_model_to_train(model)
            model.apply(enable_observer)
        else:
            move_exported_model_to_eval(model)
            model.apply(disable_observer)
        return model

    model.train = train  # type: ignore[method-assign]
    model.eval = lambda: train(False)  # type: ignore[method-assign]


def convert_qat(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The trained fake-quantized model as quantize/dequantize ops around int8 weights."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    prepared.eval()
    with _quiet():
        converted = convert_pt2e(prepared)
    move_exported_model_to_eval(converted)
    return converted


class _Output(nn.Module):
    """What the graph outputs: softmax probabilities (classification) or values."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if self.task == "classification":
            return torch.softmax(out.float(), dim=-1)
        return out.float().reshape(out.shape[0])


def qdq_onnx(converted: nn.Module, example: np.ndarray, task: str) -> onnx.ModelProto:
    """The converted model (with its output head) as an ONNX QDQ graph, input ``input``
    with a dynamic batch axis, output ``output``."""
    head = _Output(converted, task)
    try:
        with _quiet():
            program = torch.onnx.export(
                head,
                (torch.from_numpy(np.ascontiguousarray(example)),),
                None,
                input_names=["input"],
                output_names=["output"],
                dynamo=True,
                verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            )
    except Exception as exc:  # the exporter raises many unrelated types
        raise ExportError(f"torch.onnx.export failed for the QAT model: {exc}") from exc
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        program.save(path)
        return onnx.load(path)


def _session(graph: bytes, optimized: str | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if optimized is not None:
        # EXTENDED: the QDQ fusions, without the machine-specific NCHWc layout rewrites
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = optimized
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def ort_kernels(graph: bytes) -> list[str]:
    """Op types of the graph as ONNX Runtime's CPU provider optimizes it (sorted, unique):
    QDQ pairs around convolutions and linear layers show as ``QLinearConv``, ``QGemm``, ..."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        _session(graph, path)
        optimized = onnx.load(path)
    return sorted({n.op_type for n in optimized.graph.node})


def _run_ort(session: Any, preprocessor: Preprocessor, inputs: Sequence[Any]) -> np.ndarray:
    feeds = (
        preprocessor.transform(inputs[s : s + PARITY_BATCH])["input"]
        for s in range(0, len(inputs), PARITY_BATCH)
    )
    return np.concatenate([session.run(["output"], {"input": x})[0] for x in feeds])


def parity(
    converted: nn.Module,
    graph: bytes,
    preprocessor: Preprocessor,
    inputs: Sequence[Any],
    task: str,
) -> tuple[float, float]:
    """Largest |torch converted model - ONNX Runtime| output difference on ``inputs``, and
    (classification) the fraction of rows whose predicted class agrees (else 1.0)."""
    head = _Output(converted, task)
    session = _session(graph)
    diff, agree = 0.0, 0
    for s in range(0, len(inputs), PARITY_BATCH):
        x = preprocessor.transform(inputs[s : s + PARITY_BATCH])["input"]
        (actual,) = session.run(["output"], {"input": x})
        with torch.no_grad():
            expected = head(torch.from_numpy(x)).numpy()
        diff = max(diff, float(np.max(np.abs(expected - actual))))
        if expected.ndim == 2:
            agree += int(np.sum(expected.argmax(1) == actual.argmax(1)))
        else:
            agree += len(x)
    return diff, agree / len(inputs)


def check_qat_parity(diff: float) -> None:
    if not diff <= QAT_PARITY_TOLERANCE:  # also catches NaN
        raise ExportError(
            f"the QAT graph run by ONNX Runtime disagrees with the converted torch model: max "
            f"|difference| {diff:.3g} > {QAT_PARITY_TOLERANCE}. The graph is not written. Hint: "
            "report this with the model class and the torchao and onnxruntime versions"
        )


@dataclass
class QATModel(TrainedModel):
    """A QAT model: ``model`` is the converted (quantize/dequantize) torch GraphModule and
    ``graph`` its ONNX QDQ graph, which :meth:`predict_proba` and the package run."""

    graph: bytes = b""
    source_class: str = ""
    source_arguments: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, inputs: Sequence[Any]) -> np.ndarray:
        """What the package will serve: ONNX Runtime's output on ``inputs``."""
        out = _run_ort(_session(self.graph), self.preprocessor, inputs)
        return out if self.task == "classification" else out.reshape(-1)

    def export(
        self,
        out: str | Path,
        sample_inputs: Sequence[Any],
        *,
        name: str | None = None,
        metrics: dict[str, float] | None = None,
        lineage: Lineage | None = None,
        torchscript: bool = False,
        overwrite: bool = False,
    ) -> Package:
        """Write the QDQ graph as a package, parity-checked on ``sample_inputs`` against the
        converted torch model (to :data:`QAT_PARITY_TOLERANCE`); no ``extras/weights.pt``."""
        check_task(self.task, self.label_names)
        if torchscript:
            raise InvalidInputError(
                "a QAT package holds an int8 ONNX graph only; TorchScript is not exported"
            )
        if len(sample_inputs) < 2:
            raise InvalidInputError("sample_inputs needs at least 2 inputs to check parity")
        diff, agree = parity(self.model, self.graph, self.preprocessor, sample_inputs, self.task)
        check_qat_parity(diff)
        lineage = lineage or self.lineage
        if lineage.compression is not None:
            details = {
                **lineage.compression.details,
                "parity_max_abs_diff": diff,
                "parity_label_agreement": agree,
                "parity_rows": len(sample_inputs),
                "parity_tolerance": QAT_PARITY_TOLERANCE,
            }
            compression = lineage.compression.model_copy(update={"details": details})
            lineage = lineage.model_copy(update={"compression": compression})
        graph = Graph(
            inputs=["input"],
            output="output",
            output_kind=OUTPUT_KINDS[self.task],  # type: ignore[arg-type]
            opset=graph_opset(onnx.load_from_string(self.graph)),
            parity_max_abs_diff=diff,
        )
        return write_package(
            out,
            name=name,
            task=self.task,
            label_names=self.label_names,
            preprocessor=self.preprocessor,
            graph_bytes=self.graph,
            graph=graph,
            metrics={**self.metrics, **(metrics or {})},
            lineage=lineage_of(
                lineage, self.data_fingerprint, None, self.source_class, self.source_arguments
            ),
            extras=None,
            overwrite=overwrite,
        )


def _graph_facts(graph: onnx.ModelProto) -> dict[str, Any]:
    ops = [n.op_type for n in graph.graph.node]
    int8 = [i for i in graph.graph.initializer if i.data_type in (onnx.TensorProto.INT8,)]
    return {
        "ort_ops": sorted(set(ops)),
        "quantize_linear": ops.count("QuantizeLinear"),
        "dequantize_linear": ops.count("DequantizeLinear"),
        "int8_initializers": len(int8),
        "int8_values": int(sum(np.prod(i.dims) for i in int8)),
    }


def fit_qat(parts: Parts, plan: Plan, run: Run) -> TrainedModel:
    """Fine-tune ``plan.init``'s torch model with int8 fake quantization on ``parts.train``
    (the kept epoch chosen on ``parts.validation``, measured with fake quantization on),
    then convert and export it to an ONNX QDQ graph.

    Raises:
        InvalidInputError: no package to compress, one without ``extras/weights.pt``, of
            another family, or a task QAT does not handle here.
    """
    if plan.init is None:
        raise InvalidInputError(
            "quantization-aware training compresses a package; pass the package to start from "
            "(init=..., --from)"
        )
    source = source_model(plan.init, METHOD)
    if source.family != plan.spec.family:
        raise InvalidInputError(
            f"package {plan.init.path} holds a {source.family} model; the {plan.spec.family} "
            "qat strategy cannot compress it"
        )
    train, validation = parts.train, parts.validation
    task = plan.init.manifest.task
    if task != "classification" or train.task != "classification":
        raise InvalidInputError(
            f"qat compresses classifiers; package {plan.init.path} is {task} and the data "
            f"{train.task}"
        )
    labels = plan.init.manifest.label_names
    if list(train.label_names or ()) != list(labels or ()):
        raise InvalidInputError(
            f"qat fine-tunes the package's own output layer for classes {labels}; the data's "
            f"classes are {list(train.label_names or ())}. Hint: compress with the data the "
            "package was trained on"
        )
    config = plan.config if isinstance(plan.config, QATConfig) else QATConfig()
    torch.manual_seed(config.seed)
    pre = source.preprocessor
    x_train = torch.from_numpy(pre.transform(train.X)["input"])
    x_val = torch.from_numpy(pre.transform(validation.X)["input"])
    prepared = prepare_qat(source.model, x_train[:TRACE_ROWS])
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    if config.augment and source.family == "cnn":
        augment = ImageAugment()
    result = fit(
        prepared,
        ((x_train,), torch.from_numpy(train.y)),
        ((x_val,), torch.from_numpy(validation.y)),
        config,
        augment=augment,
        checkpoint_dir=run.checkpoint_dir,
        resume=run.resume,
        # the source package too: a resumed run must continue the same package's training
        data_fingerprint=f"{train.fingerprint}|{plan.init.id if plan.init else ''}",
        description=f"qat {source.family}",
    )
    converted = convert_qat(prepared)
    proto = qdq_onnx(converted, x_val[:TRACE_ROWS].numpy(), task)
    graph = proto.SerializeToString()
    diff, agree = parity(converted, graph, pre, validation.X, task)
    check_qat_parity(diff)
    parent_graph = plan.init.path / plan.init.manifest.graph.file
    details = {
        **_graph_facts(proto),
        "ort_kernels": ort_kernels(graph),
        "graph_bytes": len(graph),
        "parent_graph_bytes": parent_graph.stat().st_size if parent_graph.is_file() else None,
        "parity_max_abs_diff": diff,
        "parity_label_agreement": agree,
        "parity_rows": len(validation),
        "quantizer": "torchao X86InductorQuantizer (qat): uint8 activations per tensor, int8 "
        "weights per channel",
    }
    settings = plan.settings()
    return QATModel(
        model=converted,
        preprocessor=pre,
        task=task,
        label_names=train.label_names,
        data_fingerprint=train.fingerprint,
        lineage=Lineage(
            trainer="qat",
            backbone=Backbone(
                name=plan.backbone,
                strategy=METHOD,
                model_arguments=source.backbone.model_arguments,
            ),
            config=settings,
            history=result.history,
            best_epoch=result.best_epoch,
            parent=plan.init.id,
            compression=next_compression(
                plan.init.id, plan.init.manifest.lineage, METHOD, settings, details
            ),
        ),
        metrics=result.val_metrics,
        graph=graph,
        source_class=str(source.backbone.model_class),
        source_arguments=dict(source.backbone.model_arguments),
    )


_DEFAULTS = {"epochs": 3, "learning_rate": 1e-4, "weight_decay": 0.0, "patience": None}

for _family in ("cnn", "mlp"):
    register_strategy(
        Strategy(
            _family,
            METHOD,
            fit_qat,
            stage="compress",
            config_class=QATConfig,
            defaults=_DEFAULTS,
            description="quantization-aware training: fine-tune with int8 fake quantization, "
            "export an int8 QDQ graph (no weights.pt: not trainable further)",
        )
    )

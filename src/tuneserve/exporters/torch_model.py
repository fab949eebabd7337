"""Export a PyTorch classifier or regressor to a package (ONNX), and to TorchScript."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from tuneserve.backbones import config_json
from tuneserve.exceptions import ExportError, InvalidInputError
from tuneserve.lineage import Lineage
from tuneserve.package import Graph, Package
from tuneserve.preprocessing import Preprocessor

from ._common import (
    OUTPUT_KINDS,
    check_parity,
    check_task,
    graph_opset,
    lineage_of,
    write_package,
)

WEIGHTS_FILE = "weights.pt"
#: The Hugging Face config of a model's ``encoder``, stored beside its weights so that
#: ``train --from`` can rebuild it without the original model folder.
ENCODER_CONFIG_FILE = "encoder_config.json"
#: Rows traced during ONNX export; the graph is exported with a dynamic batch axis.
TRACE_ROWS = 4
PARITY_BATCH = 256


class _ServingHead(nn.Module):
    """Wrap a model so the graph outputs what the runtime reads: softmax probabilities,
    values, or (task ``embedding``) the model's ``embed`` features."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.task == "embedding":
            return self.model.embed(*inputs).float()  # type: ignore[operator]
        out = self.model(*inputs)  # (batch, classes) logits or (batch,) / (batch, 1) values
        if self.task == "classification":
            return torch.softmax(out.float(), dim=-1)
        return out.float().reshape(out.shape[0])


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress prints, warnings and torchvision notices."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _tensors(feed: Mapping[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in feed.values())


def _rename_dims(model: onnx.ModelProto, axes: Mapping[str, Mapping[int, str]]) -> None:
    """Give dynamic axes readable names (batch, sequence) instead of the tracer's s0, s1."""
    renames: dict[str, str] = {}
    for value in model.graph.input:
        for axis, name in axes.get(value.name, {}).items():
            dim = value.type.tensor_type.shape.dim[axis]
            if dim.dim_param:
                renames[dim.dim_param] = name
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]


def _to_onnx(
    head: nn.Module, feed: Mapping[str, np.ndarray], axes: Mapping[str, Mapping[int, str]]
) -> onnx.ModelProto:
    names = list(feed)
    dynamic = tuple({axis: torch.export.Dim.DYNAMIC for axis in axes.get(n, {})} for n in names)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                head,
                _tensors(feed),
                None,
                input_names=names,
                output_names=["output"],
                dynamo=True,
                verbose=False,
                dynamic_shapes=(dynamic,),  # one entry: the *inputs tuple of forward
            )
    except Exception as exc:  # the exporter raises many unrelated types
        raise ExportError(
            f"torch.onnx.export failed for {type(head.model).__name__}: {exc}"
        ) from exc
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        program.save(path)
        model = onnx.load(path)
    _rename_dims(model, axes)
    return model


def _max_abs_diff(
    head: nn.Module,
    model: onnx.ModelProto,
    preprocessor: Preprocessor,
    samples: Sequence[Any],
) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    worst = 0.0
    for start in range(0, len(samples), PARITY_BATCH):
        feed = preprocessor.transform(samples[start : start + PARITY_BATCH])
        with torch.no_grad():
            expected = head(*_tensors(feed)).numpy()
        (actual,) = session.run(["output"], dict(feed))
        worst = max(worst, float(np.max(np.abs(expected - actual))))
    return worst


def export_torch(
    model: nn.Module,
    preprocessor: Preprocessor,
    out: str | Path,
    *,
    task: str,
    sample_inputs: Sequence[Any],
    label_names: Sequence[str] | None = None,
    name: str | None = None,
    metrics: Mapping[str, float] | None = None,
    data_fingerprint: str | None = None,
    lineage: Lineage | None = None,
    parent: str | None = None,
    torchscript: bool = False,
    weights: bool = True,
    overwrite: bool = False,
) -> Package:
    """Export a torch model with its fitted preprocessor to a package.

    The model takes the preprocessor's feed as positional tensors (``input`` for images and
    tables; ``input_ids, attention_mask`` for text) and returns logits (classification) or
    values (regression). The graph outputs softmax probabilities or values.

    Args:
        model: The trained module (put in eval mode here).
        preprocessor: Fitted; its spec and assets go into the package.
        out: Package directory to write.
        task: ``classification``, ``regression``, or ``embedding`` (the graph outputs
            ``model.embed(...)``: a feature extractor, e.g. from ``tuneserve pretrain``).
        sample_inputs: Raw inputs (at least 2) used to trace and to check parity; every one
            is checked, so pass a held-out split to check parity on it.
        label_names: Class names in logit order (classification).
        name, metrics: recorded in the manifest.
        data_fingerprint, parent, lineage: where the model came from (``lineage`` holds
            what the trainer knows; the model class and configuration are filled in here).
        torchscript: Also store a TorchScript trace under ``extras/model.torchscript.pt``.
        weights: Store the trained ``state_dict`` under ``extras/weights.pt``, so that
            ``train --from`` can fine-tune this model further (read back with
            :func:`load_weights`).
        overwrite: Replace an existing package at ``out``.

    Raises:
        ExportError: export failed, or ONNX outputs differ from torch's by more than 1e-4.
    """
    check_task(task, label_names)
    if len(sample_inputs) < 2:
        raise InvalidInputError("sample_inputs needs at least 2 inputs to trace a dynamic batch")
    model.eval()
    if task == "embedding" and not callable(getattr(model, "embed", None)):
        raise InvalidInputError(
            f"task 'embedding' exports model.embed(), and {type(model).__name__} has none"
        )
    head = _ServingHead(model, task).eval()
    trace_feed = preprocessor.transform(sample_inputs[:TRACE_ROWS])
    onnx_model = _to_onnx(head, trace_feed, preprocessor.dynamic_axes())
    diff = _max_abs_diff(head, onnx_model, preprocessor, sample_inputs)
    check_parity(diff, "ONNX graph")
    extras: dict[str, bytes | Path] = {}
    if weights:
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        extras[WEIGHTS_FILE] = buffer.getvalue()
        encoder_config = config_json(getattr(model, "encoder", None))
        if encoder_config is not None:
            extras[ENCODER_CONFIG_FILE] = encoder_config.encode()
    if torchscript:
        buffer = io.BytesIO()
        torch.jit.save(trace_torchscript(model, sample_inputs[:TRACE_ROWS], preprocessor), buffer)
        extras["model.torchscript.pt"] = buffer.getvalue()
    graph = Graph(
        inputs=list(trace_feed),
        output="output",
        output_kind=OUTPUT_KINDS[task],  # type: ignore[arg-type]
        opset=graph_opset(onnx_model),
        parity_max_abs_diff=diff,
    )
    model_class = type(model).__qualname__
    model_config = getattr(model, "config", None)
    model_config = model_config if isinstance(model_config, dict) else {}
    return write_package(
        out,
        name=name,
        task=task,
        label_names=label_names,
        preprocessor=preprocessor,
        graph_bytes=onnx_model.SerializeToString(),
        graph=graph,
        metrics=metrics,
        lineage=lineage_of(lineage, data_fingerprint, parent, model_class, model_config),
        extras=extras,
        overwrite=overwrite,
    )


def trace_torchscript(
    model: nn.Module, sample_inputs: Sequence[Any], preprocessor: Preprocessor
) -> torch.jit.ScriptModule:
    """Trace ``model`` (its raw outputs: logits or values) to TorchScript."""
    model.eval()
    feed = preprocessor.transform(sample_inputs)
    with warnings.catch_warnings(), torch.no_grad():
        # torch.jit.trace is deprecated upstream, but TorchScript is what C++/LibTorch users load.
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, _tensors(feed))
    return traced


def export_torchscript(
    model: nn.Module, preprocessor: Preprocessor, sample_inputs: Sequence[Any], path: str | Path
) -> Path:
    """Write a TorchScript trace of ``model`` to ``path`` atomically; return the path.

    Load it with ``torch.jit.load(path)`` (or LibTorch in C++); it takes the preprocessor's
    feed as tensors and returns logits or values.
    """
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    traced = trace_torchscript(model, sample_inputs, preprocessor)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        torch.jit.save(traced, str(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def load_weights(package: Package) -> dict[str, torch.Tensor]:
    """The ``state_dict`` a package stored at export (``weights=True``).

    Raises:
        NotFoundError: the package carries no torch weights.
    """
    from tuneserve.exceptions import NotFoundError

    path = package.path / "extras" / WEIGHTS_FILE
    if f"extras/{WEIGHTS_FILE}" not in package.manifest.files or not path.is_file():
        raise NotFoundError(
            f"package {package.path} carries no torch weights, so it cannot be fine-tuned "
            "further. Hint: it was exported without weights, or by scikit-learn"
        )
    return torch.load(path, map_location="cpu", weights_only=True)

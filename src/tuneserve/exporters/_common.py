"""What every exporter shares: build the manifest and write the package."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuneserve.exceptions import ExportError, InvalidInputError
from tuneserve.lineage import Backbone, Lineage
from tuneserve.package import Graph, Manifest, Package
from tuneserve.preprocessing import Preprocessor

#: Largest |original - exported| difference an export may show; the parity promise.
PARITY_TOLERANCE = 1e-4


def graph_opset(model: Any) -> int | None:
    """The default-domain opset of an ONNX ModelProto."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


#: What the graph of each task outputs.
OUTPUT_KINDS = {
    "classification": "probabilities",
    "regression": "prediction",
    "embedding": "embedding",
}


def check_task(task: str, label_names: Sequence[str] | None) -> None:
    if task not in OUTPUT_KINDS:
        raise InvalidInputError(
            f"task must be classification, regression or embedding, got {task!r}"
        )
    if task == "classification" and (not label_names or len(label_names) < 2):
        raise InvalidInputError("a classifier needs label_names with at least 2 classes")
    if task == "embedding" and label_names:
        raise InvalidInputError("an embedding package has no labels; pass label_names=None")


def check_parity(max_diff: float, what: str) -> None:
    if not max_diff <= PARITY_TOLERANCE:  # also catches NaN
        raise ExportError(
            f"exported {what} disagrees with the original model: max |difference| {max_diff:.3g} "
            f"> {PARITY_TOLERANCE}. The graph is not written. Hint: report this with the model "
            "class; layers with data-dependent control flow may not trace"
        )


def lineage_of(
    lineage: Lineage | None,
    data_fingerprint: str | None,
    parent: str | None,
    model_class: str,
    model_config: Mapping[str, Any],
) -> Lineage:
    """``lineage`` (or an empty one) with the exported model's class and configuration, and
    the data fingerprint and parent where given."""
    lineage = lineage or Lineage()
    backbone = lineage.backbone or Backbone()
    backbone = backbone.model_copy(
        update={
            "model_class": model_class,
            "model_arguments": dict(backbone.model_arguments or model_config),
        }
    )
    update: dict[str, Any] = {"backbone": backbone}
    if data_fingerprint is not None:
        update["data_fingerprint"] = data_fingerprint
    if parent is not None:
        update["parent"] = parent
    return lineage.model_copy(update=update)


def write_package(
    out: str | Path,
    *,
    name: str | None,
    task: str,
    label_names: Sequence[str] | None,
    preprocessor: Preprocessor,
    graph_bytes: bytes,
    graph: Graph,
    metrics: Mapping[str, float] | None,
    lineage: Lineage,
    extras: Mapping[str, bytes | Path] | None,
    overwrite: bool,
) -> Package:
    manifest = Manifest(
        name=name or Path(out).name,
        task=task,  # type: ignore[arg-type]
        modality=preprocessor.modality,  # type: ignore[arg-type]
        label_names=list(label_names) if label_names is not None else None,
        input_schema=preprocessor.input_schema(),
        preprocessing=preprocessor.spec(),
        graph=graph,
        metrics={k: float(v) for k, v in (metrics or {}).items()},
        lineage=lineage,
    )
    files: dict[str, bytes | Path] = {graph.file: graph_bytes}
    files.update({f"assets/{k}": v for k, v in preprocessor.assets().items()})
    files.update({f"extras/{k}": v for k, v in (extras or {}).items()})
    return Package.write(out, manifest, files, overwrite=overwrite)

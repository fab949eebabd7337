"""Write an ensemble as one package: the members inside, and a small ONNX graph that
combines their probabilities. The runtime and the server run it like any other package."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tuneserve.ensemble_package import INPUT, EnsembleSpec, member_files
from tuneserve.evaluation import in_label_order, scored_output
from tuneserve.exceptions import ExportError, InvalidInputError
from tuneserve.lineage import Ensemble, EnsembleMember, HeldOut, Lineage
from tuneserve.package import Graph, Manifest, Package
from tuneserve.runtime import EnsembleMembers, Predictor

from ._combiner import OPSET, OUTPUT, Combiner


def member_probabilities(
    members: Sequence[Predictor], labels: list[str], inputs: Any
) -> np.ndarray:
    """``(members, rows, classes)``: each member's probabilities, columns in ``labels``."""
    return np.stack(
        [in_label_order(scored_output(m, inputs), m.labels or [], labels) for m in members]
    )


def check_members(members: Sequence[Predictor]) -> list[str]:
    """The shared label set (in the first member's order); refuse members that do not
    share their input, classes or task."""
    first = members[0].manifest
    for member in members:
        m = member.manifest
        if m.task != "classification":
            raise InvalidInputError(f"ensembles combine classifiers; {m.name!r} does {m.task}")
        if m.modality != first.modality or (
            m.modality == "table" and m.input_schema != first.input_schema
        ):
            raise InvalidInputError(
                f"members must take the same input: {first.name!r} takes {first.modality} "
                f"inputs ({_columns(first)}), {m.name!r} takes {m.modality} ({_columns(m)}). "
                "Members may differ in preprocessing, not in what a caller sends"
            )
        if set(m.label_names or []) != set(first.label_names or []):
            raise InvalidInputError(
                f"members must share their classes: {first.name!r} has "
                f"{', '.join(first.label_names or [])}; {m.name!r} has "
                f"{', '.join(m.label_names or [])}"
            )
    return list(first.label_names or [])


def _columns(manifest: Any) -> str:
    columns = manifest.input_schema.get("columns")
    return f"{len(columns)} columns" if columns else manifest.input_schema.get("type", "")


def export_ensemble(
    members: Sequence[str | Path | Package | Predictor],
    combiner: Combiner,
    out: str | Path,
    *,
    sample_inputs: Any,
    name: str | None = None,
    metrics: dict[str, float] | None = None,
    config: dict[str, Any] | None = None,
    overwrite: bool = False,
    probabilities: np.ndarray | None = None,
) -> Package:
    """Write the ensemble of ``members`` as one package (see
    :mod:`tuneserve.ensemble_package`). The combiner graph is checked against
    :meth:`Combiner.combine` on ``sample_inputs`` before anything is written.
    ``probabilities``: the members' probabilities of ``sample_inputs`` if the caller has
    them already (:func:`member_probabilities` with the first member's label order)."""
    import onnxruntime as ort

    from tuneserve.exporters import PARITY_TOLERANCE  # loads torch: not at import time

    predictors = [m if isinstance(m, Predictor) else Predictor(m) for m in members]
    labels = check_members(predictors)
    if combiner.kind != "stack" and len(combiner.weights) != len(predictors):
        raise InvalidInputError(f"{len(combiner.weights)} weights for {len(predictors)} members")
    spec = EnsembleSpec.for_members(predictors[0].manifest.modality, labels, len(predictors))
    graph_bytes = combiner.onnx(len(predictors), len(labels)).SerializeToString()
    files: dict[str, bytes | Path] = {}
    for folder, member in zip(spec.members, predictors, strict=True):
        files.update(member_files(member.package, folder))
    session = ort.InferenceSession(graph_bytes, providers=["CPUExecutionProvider"])
    feed = EnsembleMembers(predictors, labels).transform(sample_inputs)
    (packaged,) = session.run([OUTPUT], feed)
    if probabilities is None:
        probabilities = member_probabilities(predictors, labels, sample_inputs)
    expected = combiner.combine(probabilities)
    diff = float(np.max(np.abs(packaged - expected)))
    if not diff <= PARITY_TOLERANCE:  # also catches NaN
        raise ExportError(
            f"the ensemble graph disagrees with the in-memory ensemble on the sample inputs: "
            f"max |difference| {diff:.3g} > {PARITY_TOLERANCE}; the package is not written. "
            "Hint: report this with the members"
        )
    if not np.array_equal(packaged.argmax(axis=1), expected.argmax(axis=1)):
        raise ExportError(
            "the ensemble graph picks other classes than the in-memory ensemble on the "
            "sample inputs; the package is not written. Hint: report this with the members"
        )
    graph = Graph(
        inputs=[INPUT],
        output=OUTPUT,
        output_kind="probabilities",
        opset=OPSET,
        parity_max_abs_diff=diff,
    )
    files[graph.file] = graph_bytes
    manifest = Manifest(
        name=name or Path(out).name,
        task="classification",
        modality=spec.modality,
        label_names=labels,
        input_schema=dict(predictors[0].manifest.input_schema),
        preprocessing=spec.model_dump(),
        graph=graph,
        metrics={k: float(v) for k, v in (metrics or {}).items()},
        lineage=_lineage(combiner, predictors, config or {}),
    )
    return Package.write(out, manifest, files, overwrite=overwrite)


def _lineage(combiner: Combiner, members: Sequence[Predictor], config: dict[str, Any]) -> Lineage:
    """The members and the combiner, with ``config`` (how they were selected, the rows
    held out of fitting)."""
    held = config.get("held_out")
    return Lineage(
        ensemble=Ensemble(
            combiner=combiner.to_dict(),
            members=[
                EnsembleMember(name=p.manifest.name, package_id=p.package.id) for p in members
            ],
            selection=config.get("selection") or {},
        ),
        held_out=HeldOut(**held) if held else None,
    )

"""An ensemble as one package: the members inside, and a small ONNX graph that combines
their probabilities. The runtime and the server run it like any other package."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuneserve.evaluation._evaluate import in_label_order, scored_output
from tuneserve.exceptions import ExportError, InvalidInputError
from tuneserve.package import Graph, Package
from tuneserve.preprocessing.members import INPUT, MembersPreprocessor
from tuneserve.runtime import Predictor

from ._ensemble import weighted

OPSET = 17
OUTPUT = "probabilities"
#: How members are combined: a weighted mean (soft vote, fitted weights, greedy
#: selection), a (weighted) hard vote, or a logistic-regression stacker.
KINDS = ("mean", "vote", "stack")


def vote_tiebreak(members: int) -> float:
    """Weight of the mean probability in a hard vote: it breaks ties between classes with
    equal votes, and is too small (under one vote of ``1 / members``) to overturn a vote.
    Large enough to survive float32 in the graph."""
    return 0.1 / members


@dataclass
class Combiner:
    """The combination rule of an ensemble, in numpy (:meth:`combine`) and as an ONNX
    graph (:meth:`onnx`) that computes the same.

    Attributes:
        kind: ``mean`` (weighted mean of probabilities), ``vote`` (hard vote, weighted by
            ``weights``; ties go to the larger mean probability) or ``stack`` (softmax of a
            linear model on the members' probabilities side by side).
        weights: One per member (``mean``, ``vote``), summing to 1.
        coef, intercept: The stacker's ``(classes or 1, members * classes)`` weights and
            biases (scikit-learn ``LogisticRegression`` layout).
    """

    kind: str
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    coef: np.ndarray | None = None
    intercept: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInputError(f"combiner kind must be one of {KINDS}; got {self.kind!r}")
        self.weights = np.asarray(self.weights, dtype=np.float64)

    def combine(self, P: np.ndarray) -> np.ndarray:
        """``(members, rows, classes)`` probabilities -> ``(rows, classes)``."""
        if self.kind == "mean":
            return weighted(P, self.weights)
        if self.kind == "vote":
            votes = np.zeros(P.shape[1:])
            rows = np.arange(P.shape[1])
            for w, member in zip(self.weights, P, strict=True):
                votes[rows, member.argmax(axis=1)] += w
            tie = vote_tiebreak(len(P))
            return (votes + tie * P.mean(axis=0)) / (1 + tie)
        assert self.coef is not None and self.intercept is not None
        z = np.concatenate(list(P), axis=1) @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:
            p = 1 / (1 + np.exp(-z[:, 0]))
            return np.stack([1 - p, p], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "weights": self.weights.tolist()}
        if self.coef is not None and self.intercept is not None:
            out["coef"], out["intercept"] = self.coef.tolist(), self.intercept.tolist()
        return out

    def onnx(self, members: int, classes: int) -> Any:
        """The combiner as an ONNX model: ``member_probabilities`` -> ``probabilities``."""
        from onnx import TensorProto, helper, numpy_helper

        width = members * classes
        nodes: list[Any] = []
        inits: list[Any] = []

        def const(name: str, value: np.ndarray) -> str:
            inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
            return name

        def block_matrix(scales: np.ndarray) -> np.ndarray:
            return np.vstack([s * np.eye(classes) for s in scales])

        if self.kind == "mean":
            w = const("W", block_matrix(self.weights))
            nodes.append(helper.make_node("MatMul", [INPUT, w], [OUTPUT]))
        elif self.kind == "vote":
            inits.append(numpy_helper.from_array(np.array([classes], np.int64), "depth"))
            const("onehot_values", np.array([0.0, 1.0]))
            parts = []
            tie = vote_tiebreak(members)
            for i, w in enumerate(self.weights / (1 + tie)):
                for name, value in (("start", i * classes), ("end", (i + 1) * classes)):
                    inits.append(numpy_helper.from_array(np.array([value], np.int64), f"{name}{i}"))
                inits.append(numpy_helper.from_array(np.array([1], np.int64), f"axis{i}"))
                nodes += [
                    helper.make_node(
                        "Slice", [INPUT, f"start{i}", f"end{i}", f"axis{i}"], [f"block{i}"]
                    ),
                    helper.make_node("ArgMax", [f"block{i}"], [f"top{i}"], axis=1, keepdims=0),
                    helper.make_node(
                        "OneHot", [f"top{i}", "depth", "onehot_values"], [f"hot{i}"], axis=-1
                    ),
                    helper.make_node("Mul", [f"hot{i}", const(f"w{i}", np.array(w))], [f"vote{i}"]),
                ]
                parts.append(f"vote{i}")
            mean = const("Wtie", block_matrix(np.full(members, tie / members / (1 + tie))))
            nodes += [
                helper.make_node("MatMul", [INPUT, mean], ["tiebreak"]),
                helper.make_node("Sum", [*parts, "tiebreak"], [OUTPUT]),
            ]
        else:
            assert self.coef is not None and self.intercept is not None
            nodes += [
                helper.make_node("MatMul", [INPUT, const("coefT", self.coef.T)], ["z0"]),
                helper.make_node("Add", ["z0", const("bias", self.intercept)], ["z"]),
            ]
            if self.coef.shape[0] == 1:
                nodes += [
                    helper.make_node("Sigmoid", ["z"], ["p1"]),
                    helper.make_node("Sub", [const("one", np.array([1.0])), "p1"], ["p0"]),
                    helper.make_node("Concat", ["p0", "p1"], [OUTPUT], axis=1),
                ]
            else:
                nodes.append(helper.make_node("Softmax", ["z"], [OUTPUT], axis=1))
        graph = helper.make_graph(
            nodes,
            "tuneserve_ensemble",
            [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", width])],
            [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", classes])],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8  # readable by ONNX Runtime 1.14 and later
        return model


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
    """Write the ensemble of ``members`` as one package. The combiner graph is checked
    against :meth:`Combiner.combine` on ``sample_inputs`` before anything is written.
    ``probabilities``: the members' probabilities of ``sample_inputs`` if the caller has
    them already (:func:`member_probabilities` with the first member's label order)."""
    import onnxruntime as ort

    from tuneserve.exporters._common import check_parity, write_package

    predictors = [m if isinstance(m, Predictor) else Predictor(m) for m in members]
    labels = check_members(predictors)
    if combiner.kind != "stack" and len(combiner.weights) != len(predictors):
        raise InvalidInputError(f"{len(combiner.weights)} weights for {len(predictors)} members")
    pre = MembersPreprocessor(predictors, labels)
    model = combiner.onnx(len(predictors), len(labels))
    graph_bytes = model.SerializeToString()
    session = ort.InferenceSession(graph_bytes, providers=["CPUExecutionProvider"])
    feed = pre.transform(sample_inputs)
    (packaged,) = session.run([OUTPUT], feed)
    if probabilities is None:
        probabilities = member_probabilities(predictors, labels, sample_inputs)
    expected = combiner.combine(probabilities)
    diff = float(np.max(np.abs(packaged - expected)))
    check_parity(diff, "ensemble")  # raises: the package is not written
    if not np.array_equal(packaged.argmax(axis=1), expected.argmax(axis=1)):
        raise ExportError(
            "the ensemble graph picks other classes than the in-memory ensemble on the "
            "sample inputs; the package is not written. Hint: report this with the members"
        )
    return write_package(
        out,
        name=name,
        task="classification",
        label_names=labels,
        preprocessor=pre,
        graph_bytes=graph_bytes,
        graph=Graph(
            inputs=[INPUT],
            output=OUTPUT,
            output_kind="probabilities",
            opset=OPSET,
            parity_max_abs_diff=diff,
        ),
        metrics=metrics,
        data_fingerprint=None,
        training_config={
            "ensemble": {
                **combiner.to_dict(),
                "members": [
                    {"name": p.manifest.name, "package_id": p.package.id} for p in predictors
                ],
            },
            **(config or {}),
        },
        parent=None,
        extras=None,
        overwrite=overwrite,
    )

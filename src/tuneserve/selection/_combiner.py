"""How an ensemble combines its members' probabilities: the rule in numpy, and the same
rule as the ONNX graph of an ensemble package."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuneserve.ensemble_package import INPUT
from tuneserve.exceptions import InvalidInputError

from ._ensemble import hard_vote, vote_tiebreak, weighted

OPSET = 17
OUTPUT = "probabilities"
#: How members are combined: a weighted mean (soft vote, fitted weights, greedy
#: selection), a (weighted) hard vote, or a logistic-regression stacker.
KINDS = ("mean", "vote", "stack")


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
            return hard_vote(P, self.weights)
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

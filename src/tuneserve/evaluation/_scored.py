"""What scoring a package produces, and the helpers every evaluation shares: the
:class:`Evaluation` result, reading data, running a package under a progress bar, putting
probability columns in label order, and writing a report file atomically."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from tuneserve.data import DataLike, Dataset, load
from tuneserve.progress import with_progress
from tuneserve.runtime import Predictor

from ._metrics import Estimate


@dataclass
class Evaluation:
    """How a package did on a data set.

    Attributes:
        package: The package's folder.
        name: The package's name.
        data: The data set's name.
        rows: Which rows were scored, in words.
        task: ``classification`` or ``regression``.
        metrics: Headline metrics, each with its bootstrap 95% interval.
        labels: Class names in the package's output order (classification).
        details: Per-class precision/recall/F1/support and the confusion matrix.
        y: True class indices (in ``labels`` order) or values, one per row.
        output: The package's probabilities ``(n, classes)`` or values ``(n,)``.
    """

    package: str
    name: str
    data: str
    rows: str
    task: str
    metrics: dict[str, Estimate]
    labels: list[str] | None
    details: dict[str, Any] = field(default_factory=dict)
    y: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    output: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "name": self.name,
            "data": self.data,
            "rows": self.rows,
            "n": len(self.y),
            "task": self.task,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "labels": self.labels,
            **self.details,
        }


def as_dataset(
    data: DataLike, label_column: str | None = None, text_column: str | None = None
) -> Dataset:
    """``data`` itself, or the data set it names (built-in name, folder or file)."""
    if isinstance(data, Dataset):
        return data
    return load(data, label_column=label_column, text_column=text_column)


def scored_output(predictor: Predictor, inputs: Any) -> np.ndarray:
    """:meth:`Predictor.run` on ``inputs`` under a progress bar."""
    return with_progress(
        f"scoring {predictor.manifest.name}", len(inputs), partial(predictor.run, inputs)
    )


def in_label_order(proba: Any, columns: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Probabilities whose columns are the classes ``columns``, as float64 with the columns
    in ``labels`` order."""
    order = [list(columns).index(n) for n in labels]
    return np.asarray(proba, dtype=np.float64)[:, order]

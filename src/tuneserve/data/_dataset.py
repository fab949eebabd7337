"""The in-memory labeled data set every stage consumes."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

Modality = Literal["image", "table", "text"]
Task = Literal["classification", "regression"]

#: Column names taken as the label when the user names none, in this order (case-insensitive).
LABEL_COLUMN_CANDIDATES = ("label", "target", "class", "y")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labeled data set with everything later stages need to know about it.

    Attributes:
        name: Short name for reports (``digits``, the file name, ...).
        modality: ``image``, ``table`` or ``text``.
        task: ``classification`` or ``regression``.
        X: The raw inputs. ``image``: a list of float32 arrays ``(height, width, channels)``
            scaled to [0, 1] (sizes may differ). ``table``: a ``pandas.DataFrame`` of feature
            columns. ``text``: a list of strings.
        y: ``int64`` class codes indexing ``label_names`` (classification) or ``float64``
            targets (regression).
        label_names: Class names in code order; None for regression.
        source: Where the data came from (built-in name or path).
        label_column: The label column of a file source, if any.
        text_column: The text column of a text data set from a file, if any.
    """

    name: str
    modality: Modality
    task: Task
    X: Any
    y: np.ndarray
    label_names: tuple[str, ...] | None
    source: str
    label_column: str | None = None
    text_column: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        """Number of classes (0 for regression)."""
        return len(self.label_names) if self.label_names is not None else 0

    @functools.cached_property
    def fingerprint(self) -> str:
        """A content hash of inputs, labels and label names, for lineage.

        Two data sets with the same rows in the same order have the same fingerprint,
        wherever they were loaded from.
        """
        h = hashlib.sha256()
        h.update(f"{self.modality}|{self.task}|{self.label_names}".encode())
        h.update(np.ascontiguousarray(self.y).tobytes())
        if self.modality == "image":
            for img in self.X:
                h.update(str(img.shape).encode())
                h.update(np.ascontiguousarray(img, dtype=np.float32).tobytes())
        elif self.modality == "table":
            h.update("|".join(map(str, self.X.columns)).encode())
            h.update(pd.util.hash_pandas_object(self.X, index=False).to_numpy().tobytes())
        else:
            for text in self.X:
                h.update(text.encode())
                h.update(b"\0")
        return "sha256:" + h.hexdigest()

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> Dataset:
        """Return the rows at ``indices`` as a new data set (labels keep their codes)."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.modality == "table":
            X: Any = self.X.iloc[idx].reset_index(drop=True)
        else:
            X = [self.X[i] for i in idx]
        return replace(self, X=X, y=self.y[idx], name=name or self.name)

    def select_classes(self, names: Sequence[str], name: str | None = None) -> Dataset:
        """Keep only the rows of the classes ``names``, recoded ``0..len(names)-1``.

        Raises:
            DataError: a name is not a class of this data set, or fewer than 2 are given.
        """
        from tuneserve.exceptions import DataError

        labels = list(self.label_names or ())
        unknown = [n for n in names if n not in labels]
        if self.label_names is None or unknown or len(names) < 2:
            raise DataError(
                f"select_classes needs 2 or more of the classes {labels}; got {list(names)}"
            )
        old = [labels.index(n) for n in names]
        keep = np.flatnonzero(np.isin(self.y, old))
        recode = np.full(len(labels), -1, dtype=np.int64)
        recode[old] = np.arange(len(old))
        part = self.subset(keep, name=name or f"{self.name}[{','.join(names)}]")
        return replace(part, y=recode[part.y], label_names=tuple(names))

    def sample_per_class(self, k: int, seed: int = 0) -> tuple[Dataset, Dataset]:
        """``k`` random rows of each class, and the rest (few-shot experiments).

        Raises:
            DataError: a class has ``k`` rows or fewer.
        """
        from tuneserve.exceptions import DataError

        rng = np.random.default_rng(seed)
        chosen = []
        for code, (label, count) in enumerate(self.class_counts().items()):
            if count <= k:
                raise DataError(f"class {label!r} has {count} rows; cannot take {k} and keep some")
            chosen.append(rng.choice(np.flatnonzero(self.y == code), size=k, replace=False))
        picked = np.sort(np.concatenate(chosen))
        rest = np.setdiff1d(np.arange(len(self)), picked)
        return (
            self.subset(picked, name=f"{self.name}[{k} per class]"),
            self.subset(rest, name=f"{self.name}[rest]"),
        )

    def class_counts(self) -> dict[str, int]:
        """Examples per class, in label order (empty for regression)."""
        if self.label_names is None:
            return {}
        counts = np.bincount(self.y, minlength=len(self.label_names))
        return {name: int(c) for name, c in zip(self.label_names, counts, strict=True)}

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description: rows, task, classes and balance, inputs, fingerprint."""
        out: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "modality": self.modality,
            "task": self.task,
            "rows": len(self),
            "fingerprint": self.fingerprint,
        }
        if self.task == "classification":
            counts = self.class_counts()
            out["classes"] = len(counts)
            out["class_counts"] = counts
            smallest, largest = min(counts.values()), max(counts.values())
            out["imbalance_ratio"] = round(largest / smallest, 3) if smallest else None
        else:
            out["target"] = {
                "mean": float(np.mean(self.y)),
                "std": float(np.std(self.y)),
                "min": float(np.min(self.y)),
                "max": float(np.max(self.y)),
            }
        if self.label_column is not None:
            out["label_column"] = self.label_column
        if self.modality == "table":
            out["features"] = {str(c): str(self.X[c].dtype) for c in self.X.columns}
        elif self.modality == "image":
            shapes = pd.Series([f"{a.shape[0]}x{a.shape[1]}x{a.shape[2]}" for a in self.X])
            out["image_shapes"] = {k: int(v) for k, v in shapes.value_counts().head(5).items()}
        else:
            lengths = np.array([len(t.split()) for t in self.X])
            out["text_column"] = self.text_column
            if self.meta.get("ignored_columns"):
                out["ignored_columns"] = list(self.meta["ignored_columns"])
            out["words_per_text"] = {
                "mean": round(float(lengths.mean()), 1),
                "max": int(lengths.max()),
            }
        return out

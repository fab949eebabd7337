"""Table preprocessing in numpy: column order, imputation, scaling, one-hot categories."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from tuneserve.exceptions import InvalidInputError

from ._base import Preprocessor, as_batch, register_preprocessor

#: A categorical column with more distinct values than this is refused at fit time.
MAX_CATEGORIES = 256


@register_preprocessor
class TablePreprocessor(Preprocessor):
    """Map table rows to one float32 matrix ``{"input": (batch, features)}``.

    Numeric columns are standardized with the training mean and standard deviation, and a
    missing value becomes the training mean (so 0 after scaling). Text-valued columns are
    one-hot encoded over the training categories; an unseen category encodes as all zeros.
    Rows may come as a DataFrame, dicts keyed by column name, or lists in column order.
    """

    kind: ClassVar[str] = "table"
    modality: ClassVar[str] = "table"

    def __init__(self, columns: list[dict[str, Any]] | None = None) -> None:
        self.columns = columns

    @property
    def feature_names(self) -> list[str]:
        """Names of the output features, in matrix column order."""
        names: list[str] = []
        for col in self._fitted():
            if col["kind"] == "numeric":
                names.append(col["name"])
            else:
                names.extend(f"{col['name']}={cat}" for cat in col["categories"])
        return names

    def _fitted(self) -> list[dict[str, Any]]:
        if self.columns is None:
            raise RuntimeError("TablePreprocessor used before fit")
        return self.columns

    def fit(self, inputs: Any) -> Self:
        frame = self._frame(inputs, fitting=True)
        columns: list[dict[str, Any]] = []
        for name in frame.columns:
            series = frame[name]
            if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
                values = series.astype(np.float64)
                mean = float(values.mean()) if values.notna().any() else 0.0
                std = float(values.std(ddof=0)) if values.notna().sum() > 1 else 1.0
                columns.append(
                    {"name": str(name), "kind": "numeric", "mean": mean, "std": std or 1.0}
                )
            else:
                cats = sorted({str(v) for v in series.dropna()})
                if len(cats) > MAX_CATEGORIES:
                    raise InvalidInputError(
                        f"column {name!r} holds {len(cats)} distinct text values; one-hot "
                        f"encoding allows at most {MAX_CATEGORIES}. Hint: drop the column, or "
                        "if it is free text, load the file as a text data set with --text-column"
                    )
                columns.append({"name": str(name), "kind": "categorical", "categories": cats})
        self.columns = columns
        return self

    def _frame(self, inputs: Any, fitting: bool = False) -> pd.DataFrame:
        if isinstance(inputs, pd.DataFrame):
            if len(inputs) == 0:
                raise InvalidInputError("inputs is empty; send at least one row")
            return inputs
        rows = as_batch(inputs, "rows")
        if fitting:
            return pd.DataFrame(list(rows))
        names = [c["name"] for c in self._fitted()]
        records: list[Mapping[str, Any]] = []
        for i, row in enumerate(rows):
            if isinstance(row, Mapping):
                records.append(row)
            elif isinstance(row, list | tuple | np.ndarray):
                if len(row) != len(names):
                    raise InvalidInputError(
                        f"row {i} has {len(row)} values; the model takes {len(names)} columns "
                        f"in this order: {names}. Hint: send a dict keyed by column name"
                    )
                records.append(dict(zip(names, row, strict=True)))
            else:
                raise InvalidInputError(
                    f"row {i} is a {type(row).__name__}; send a dict keyed by column name or a "
                    f"list of {len(names)} values in the order {names}"
                )
        return pd.DataFrame.from_records(records)

    def transform(self, inputs: Any) -> dict[str, np.ndarray]:
        columns = self._fitted()
        frame = self._frame(inputs)
        missing = [c["name"] for c in columns if c["name"] not in frame.columns]
        if missing:
            hints = []
            for name in missing:
                close = difflib.get_close_matches(name, [str(c) for c in frame.columns], n=1)
                if close:
                    hints.append(f"{close[0]!r} -> {name!r}")
            hint = f" Did you mean: {', '.join(hints)}?" if hints else ""
            raise InvalidInputError(
                f"input is missing column(s) {missing}; the model needs "
                f"{[c['name'] for c in columns]}.{hint}"
            )
        blocks: list[np.ndarray] = []
        for col in columns:
            series = frame[col["name"]]
            if col["kind"] == "numeric":
                values = pd.to_numeric(series, errors="coerce")
                bad = values.isna() & series.notna()
                if bad.any():
                    row = int(np.flatnonzero(bad.to_numpy())[0])
                    raise InvalidInputError(
                        f"column {col['name']!r} row {row} holds {series.iloc[row]!r}, which is "
                        "not a number; send a number or null for a missing value"
                    )
                arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
                arr = np.where(np.isnan(arr), col["mean"], arr)
                blocks.append(((arr - col["mean"]) / col["std"])[:, None])
            else:
                cats = col["categories"]
                index = {c: j for j, c in enumerate(cats)}
                onehot = np.zeros((len(frame), len(cats)), dtype=np.float64)
                for i, v in enumerate(series):
                    j = (
                        None
                        if v is None or (isinstance(v, float) and np.isnan(v))
                        else index.get(str(v))
                    )
                    if j is not None:
                        onehot[i, j] = 1.0
                blocks.append(onehot)
        matrix = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(frame), 0))
        return {"input": matrix.astype(np.float32)}

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "columns": self._fitted()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], assets: Path | None = None) -> Self:
        return cls(columns=list(spec["columns"]))

    def input_schema(self) -> dict[str, Any]:
        return {
            "type": "table",
            "columns": [
                {"name": c["name"], "type": "number" if c["kind"] == "numeric" else "string"}
                | ({"categories": c["categories"]} if c["kind"] == "categorical" else {})
                for c in self._fitted()
            ],
            "accepts": "rows as dicts keyed by column name, or lists in column order; "
            "null for a missing value",
        }

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"input": {0: "batch"}}

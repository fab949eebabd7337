"""Table preprocessing in numpy: column order, imputation, scaling, one-hot categories."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, NoReturn, Self

import numpy as np
import pandas as pd

from tuneserve.exceptions import InputItemError, InvalidInputError, NotFittedError

from ._base import Preprocessor, as_batch, register_preprocessor

#: A categorical column with more distinct values than this is refused at fit time.
MAX_CATEGORIES = 256


def category_key(value: Any, column: str, row: int) -> str | None:
    """The category a cell stands for: ``1``, ``1.0`` and ``"1"`` are the same; None if
    missing. CSV readers turn ``1`` into ``1.0`` when a column has gaps, so this matters."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() else str(float(value))
    raise InputItemError(
        "row",
        row,
        f"column {column!r} holds a {type(value).__name__} ({value!r:.40}); "
        "send a string or a number",
    )


class _Plan:
    """Column positions and constants precomputed once, so transform is vectorized."""

    def __init__(self, columns: list[dict[str, Any]]) -> None:
        self.columns = columns
        numeric = [(j, c) for j, c in enumerate(columns) if c["kind"] == "numeric"]
        cats = [(j, c) for j, c in enumerate(columns) if c["kind"] != "numeric"]
        self.numeric_index = [j for j, _ in numeric]
        self.numeric_names = [c["name"] for _, c in numeric]
        self.mean = np.array([c["mean"] for _, c in numeric], dtype=np.float64)
        self.std = np.array([c["std"] for _, c in numeric], dtype=np.float64)
        self.categorical_index = [j for j, _ in cats]
        self.categorical = [
            {**c, "index": {v: k for k, v in enumerate(c["categories"])}} for _, c in cats
        ]
        positions, pos = [], 0
        for c in columns:
            positions.append(pos)
            pos += 1 if c["kind"] == "numeric" else len(c["categories"])
        self.width = pos
        self.numeric_positions = [positions[j] for j in self.numeric_index]
        self.categorical_positions = [positions[j] for j in self.categorical_index]


@register_preprocessor
class TablePreprocessor(Preprocessor):
    """Map table rows to one float32 matrix ``{"input": (batch, features)}``.

    Numeric columns are standardized with the training mean and standard deviation, and a
    missing value becomes the training mean (so 0 after scaling). Text-valued columns are
    one-hot encoded over the training categories; an unseen category encodes as all zeros.
    Rows may come as a DataFrame, dicts keyed by column name, lists in column order, or
    one 2-D array of rows in column order.
    """

    kind: ClassVar[str] = "table"
    modality: ClassVar[str] = "table"

    def __init__(self, columns: list[dict[str, Any]] | None = None) -> None:
        self.columns = columns
        self._cached_plan: _Plan | None = None

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
            raise NotFittedError("TablePreprocessor used before fit")
        return self.columns

    def fit(self, inputs: Any) -> Self:
        frame = self._fit_frame(inputs)
        columns: list[dict[str, Any]] = []
        for name in frame.columns:
            series = frame[name]
            if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
                values = series.astype(np.float64)
                if np.isinf(values).any():
                    row = int(np.flatnonzero(np.isinf(values.to_numpy()))[0])
                    raise InvalidInputError(
                        f"column {name!r} row {row} is infinite; training data must be finite. "
                        "Hint: replace it with a real value or leave it empty (missing)"
                    )
                mean = float(values.mean()) if values.notna().any() else 0.0
                std = float(values.std(ddof=0)) if values.notna().sum() > 1 else 1.0
                columns.append(
                    {"name": str(name), "kind": "numeric", "mean": mean, "std": std or 1.0}
                )
            else:
                keys = (category_key(v, name, i) for i, v in enumerate(series))
                cats = sorted({k for k in keys if k is not None})
                if len(cats) > MAX_CATEGORIES:
                    raise InvalidInputError(
                        f"column {name!r} holds {len(cats)} distinct text values; one-hot "
                        f"encoding allows at most {MAX_CATEGORIES}. Hint: drop the column, or "
                        "if it is free text, load the file as a text data set with --text-column"
                    )
                columns.append({"name": str(name), "kind": "categorical", "categories": cats})
        self.columns = columns
        return self

    def _fit_frame(self, inputs: Any) -> pd.DataFrame:
        if isinstance(inputs, pd.DataFrame):
            if len(inputs) == 0:
                raise InvalidInputError("inputs is empty; send at least one row")
            return inputs
        return pd.DataFrame(list(as_batch(inputs, "rows")))

    def _missing_error(self, missing: list[str], present: list[str], row: int | None) -> NoReturn:
        names = [c["name"] for c in self._fitted()]
        hints = []
        for name in missing:
            close = difflib.get_close_matches(name, [p for p in present if p not in names], n=1)
            if close:
                hints.append(f"{close[0]!r} -> {name!r}")
        hint = f" Did you mean: {', '.join(hints)}?" if hints else ""
        problem = f"is missing column(s) {missing}; the model needs {names}.{hint}"
        if row is None:
            raise InvalidInputError(f"input {problem}")
        raise InputItemError("row", row, problem)

    def _plan(self) -> _Plan:
        columns = self._fitted()
        if self._cached_plan is None or self._cached_plan.columns is not columns:
            self._cached_plan = _Plan(columns)
        return self._cached_plan

    def _records(self, inputs: Any) -> list[Any]:
        """Rows as value lists in model column order (dict rows are checked for keys)."""
        names = [c["name"] for c in self._fitted()]
        records: list[Any] = []
        for i, row in enumerate(as_batch(inputs, "rows")):
            if isinstance(row, Mapping):
                try:
                    records.append([row[n] for n in names])
                except KeyError:
                    missing = [n for n in names if n not in row]
                    self._missing_error(missing, [str(k) for k in row], i)
            elif isinstance(row, list | tuple | np.ndarray):
                if len(row) != len(names):
                    raise InputItemError(
                        "row",
                        i,
                        f"has {len(row)} values; the model takes {len(names)} columns "
                        f"in this order: {names}. Hint: send a dict keyed by column name",
                    )
                records.append(row)
            else:
                raise InputItemError(
                    "row",
                    i,
                    f"is a {type(row).__name__}; send a dict keyed by column name or a "
                    f"list of {len(names)} values in the order {names}",
                )
        return records

    @staticmethod
    def _numbers(values: Any, names: list[str]) -> np.ndarray:
        """``(n, len(names))`` finite float64 or NaN (missing); a bad value names its cell."""
        try:
            # None becomes NaN; numeric strings such as "1.5" are accepted
            numbers = np.asarray(values, dtype=np.float64).reshape(-1, len(names))
        except (ValueError, TypeError, OverflowError):
            numbers = None
        if numbers is None:
            try:  # pd.NA (nullable dtypes) is a missing value too
                cleaned = [[np.nan if v is pd.NA else v for v in r] for r in values]
                numbers = np.asarray(cleaned, dtype=np.float64).reshape(-1, len(names))
            except (ValueError, TypeError, OverflowError):
                numbers = None
        if numbers is not None:
            infinite = np.isinf(numbers)
            if not infinite.any():
                return numbers
            row, col = (int(i) for i in np.argwhere(infinite)[0])
            raise InputItemError(
                "row",
                row,
                f"column {names[col]!r} is infinite; send a finite number or null for a missing "
                "value",
            )
        for row, record in enumerate(values):
            for name, value in zip(names, record, strict=True):
                try:
                    float(value if value is not None and value is not pd.NA else "nan")
                except (ValueError, TypeError, OverflowError):
                    raise InputItemError(
                        "row",
                        row,
                        f"column {name!r} holds {value!r:.40}, which is not a number; "
                        "send a number or null for a missing value",
                    ) from None
        raise InvalidInputError(f"columns {names} hold values that are not numbers")

    def transform(self, inputs: Any) -> dict[str, np.ndarray]:
        plan = self._plan()
        if isinstance(inputs, pd.DataFrame):
            if len(inputs) == 0:
                raise InvalidInputError("inputs is empty; send at least one row")
            missing = [c["name"] for c in plan.columns if c["name"] not in inputs.columns]
            if missing:
                self._missing_error(missing, [str(c) for c in inputs.columns], None)
            needed = {c["name"] for c in plan.columns}
            repeated = sorted({c for c in inputs.columns[inputs.columns.duplicated()]} & needed)
            if repeated:
                raise InvalidInputError(
                    f"input has more than one column named {', '.join(map(repr, repeated))}; "
                    "the model cannot tell which to use. Hint: drop or rename the repeats"
                )
            n = len(inputs)
            numeric_frame = inputs[plan.numeric_names]
            for name, dtype in numeric_frame.dtypes.items():
                inner = dtype.categories.dtype if isinstance(dtype, pd.CategoricalDtype) else dtype
                if inner.kind in "mM" or isinstance(inner, pd.PeriodDtype):  # dates, durations
                    raise InvalidInputError(
                        f"column {name!r} holds {dtype} values; the model takes numbers there. "
                        "Hint: convert it to the number the model was trained on"
                    )
            try:  # nullable dtypes (Int64, boolean) turn pd.NA into NaN here
                numeric_raw: Any = numeric_frame.to_numpy(dtype=np.float64, na_value=np.nan)
            except (ValueError, TypeError):
                numeric_raw = numeric_frame.to_numpy()
            categorical = {c["name"]: inputs[c["name"]].to_numpy() for c in plan.categorical}
        elif isinstance(inputs, np.ndarray) and inputs.ndim == 2:
            # rows already in model column order (the server's OIP tables): sliced by
            # column, no per-row work
            n, width = inputs.shape
            if n == 0:
                raise InvalidInputError("inputs is empty; send at least one row")
            if width != len(plan.columns):
                raise InvalidInputError(
                    f"rows have {width} values; the model takes {len(plan.columns)} columns in "
                    f"this order: {[c['name'] for c in plan.columns]}"
                )
            numeric_raw = inputs[:, plan.numeric_index]  # (n, numeric)
            categorical = {
                c["name"]: inputs[:, j]
                for c, j in zip(plan.categorical, plan.categorical_index, strict=True)
            }
        else:
            records = self._records(inputs)
            n = len(records)
            numeric_raw = [[r[j] for j in plan.numeric_index] for r in records]
            categorical = {
                c["name"]: [r[j] for r in records]
                for c, j in zip(plan.categorical, plan.categorical_index, strict=True)
            }
        matrix = np.zeros((n, plan.width), dtype=np.float32)
        if plan.numeric_names:
            numbers = self._numbers(numeric_raw, plan.numeric_names)  # (n, numeric)
            numbers = np.where(np.isnan(numbers), plan.mean, numbers)  # impute the train mean
            matrix[:, plan.numeric_positions] = (numbers - plan.mean) / plan.std
        for col, start in zip(plan.categorical, plan.categorical_positions, strict=True):
            index, name = col["index"], col["name"]
            for i, v in enumerate(categorical[name]):
                key = v if isinstance(v, str) else category_key(v, name, i)
                k = index.get(key) if key is not None else None
                if k is not None:  # unseen and missing categories stay all zeros
                    matrix[i, start + k] = 1.0
        return {"input": matrix}

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

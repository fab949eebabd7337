"""Reading CSV files: the dialect (semicolons, decimal commas), telling a table from text
beside long category names, and targets that cannot be learned."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tuneserve.data import load
from tuneserve.exceptions import DataError


def _csv(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


def test_long_category_names_beside_a_measurement_stay_a_table(tmp_path):
    titles = ["Senior Software Engineer", "Junior Data Analyst", "Head of Product Design"]
    frame = pd.DataFrame(
        {
            "price": np.linspace(1.5, 99.5, 30),
            "job_title": [titles[i % 3] for i in range(30)],
            "label": ["a", "b"] * 15,
        }
    )
    data = load(_csv(tmp_path, frame))
    assert data.modality == "table"
    assert list(data.X.columns) == ["price", "job_title"]
    data = load(_csv(tmp_path, frame.assign(price=range(30))))  # an id column, low-variety text
    assert data.modality == "table"


def test_infinite_regression_target_is_refused(tmp_path):
    frame = pd.DataFrame({"x": np.arange(10.0), "target": [0.5 * i for i in range(9)] + [math.inf]})
    with pytest.raises(DataError, match=r"infinite regression target .* rows 9"):
        load(_csv(tmp_path, frame))


def test_semicolon_csv_with_decimal_commas_is_numeric(tmp_path):
    path = tmp_path / "euro.csv"
    path.write_text("a;b;label\n1,5;2,25;x\n3,0;4,5;y\n5,5;6,0;x\n")
    data = load(path)
    assert data.X["a"].dtype == np.float64
    assert data.X["a"].tolist() == [1.5, 3.0, 5.5]

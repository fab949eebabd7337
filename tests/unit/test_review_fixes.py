"""Edge cases found in review: nullable dtypes, detection, bad numbers, transparency, config."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tuneserve.data import load
from tuneserve.exceptions import DataError, InvalidInputError, NotFoundError
from tuneserve.preprocessing import TablePreprocessor, read_image
from tuneserve.training import TrainConfig


def test_nullable_columns_with_missing_values_are_missing_not_bad():
    frame = pd.DataFrame(
        {
            "age": pd.Series([30, pd.NA, 40, 50], dtype="Int64"),
            "member": pd.Series([True, pd.NA, False, True], dtype="boolean"),
            "score": [0.1, 0.2, 0.3, 0.4],
        }
    )
    pre = TablePreprocessor().fit(frame)
    out = pre.transform(frame)["input"]
    assert np.isfinite(out).all()
    assert out[1, 0] == 0.0  # missing age -> the mean -> 0 after scaling
    rows = frame.to_dict("records")  # dict rows carry pd.NA too
    np.testing.assert_allclose(pre.transform(rows)["input"], out)


def test_huge_number_is_an_item_error_not_a_crash():
    pre = TablePreprocessor().fit(pd.DataFrame({"x": [1.0, 2.0]}))
    with pytest.raises(InvalidInputError, match=r"row 0 column 'x'"):
        pre.transform([{"x": int("9" * 400)}])


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


def test_grayscale_with_a_transparent_colour_is_white_and_one_channel(tmp_path):
    pixels = np.zeros((4, 4), dtype=np.uint8)
    pixels[1, 1] = 200
    Image.fromarray(pixels, mode="L").save(tmp_path / "t.png", transparency=0)
    img = read_image(tmp_path / "t.png")
    assert img.shape == (4, 4, 1)
    assert img[0, 0, 0] == pytest.approx(1.0)  # transparent -> white
    assert img[1, 1, 0] == pytest.approx(200 / 255, abs=1 / 255)


def test_unknown_home_directory_is_not_found():
    with pytest.raises(NotFoundError, match="not found"):
        load("~no_such_user_xyz/data.csv")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"learning_rate": math.nan}, "learning_rate must be a number > 0"),
        ({"learning_rate": math.inf}, "learning_rate must be a number > 0"),
        ({"seed": -1}, r"seed must be in \[0, 2\*\*32\)"),
        ({"warmup_epochs": math.nan}, "warmup_epochs must be in"),
        ({"clip_grad_norm": math.nan}, "clip_grad_norm must be > 0"),
    ],
)
def test_non_finite_settings_are_refused(settings, message):
    with pytest.raises(InvalidInputError, match=message):
        TrainConfig(**settings)

"""TablePreprocessor (scaling, imputation, one-hot, row forms, errors, spec) and the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import pytest

from tuneserve.data import load
from tuneserve.exceptions import InvalidInputError, PackageFormatError
from tuneserve.preprocessing import (
    Preprocessor,
    TablePreprocessor,
    preprocessor_from_spec,
    register_preprocessor,
    registered_kinds,
)


@pytest.fixture
def train() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [20.0, 30.0, np.nan, 50.0, 40.0],
            "color": ["red", "blue", "red", None, "green"],
            "rooms": [1, 2, 3, 4, 5],
        }
    )


@pytest.fixture
def fitted(train: pd.DataFrame) -> TablePreprocessor:
    return TablePreprocessor().fit(train)


def test_fit_learns_columns(fitted: TablePreprocessor) -> None:
    cols = fitted.spec()["columns"]
    assert [c["name"] for c in cols] == ["age", "color", "rooms"]
    assert cols[0]["kind"] == "numeric"
    assert cols[0]["mean"] == pytest.approx(35.0)  # NaN ignored
    assert cols[0]["std"] == pytest.approx(np.std([20.0, 30.0, 50.0, 40.0]))
    assert cols[1] == {
        "name": "color",
        "kind": "categorical",
        "categories": ["blue", "green", "red"],
    }
    assert cols[2]["mean"] == pytest.approx(3.0)
    assert cols[2]["std"] == pytest.approx(np.sqrt(2.0))
    assert fitted.feature_names == ["age", "color=blue", "color=green", "color=red", "rooms"]


def test_numeric_columns_are_standardized(fitted: TablePreprocessor) -> None:
    out = fitted.transform(
        [{"age": 35.0 + 2 * np.std([20, 30, 50, 40]), "color": "red", "rooms": 1}]
    )
    matrix = out["input"]
    assert matrix.dtype == np.float32
    assert matrix.shape == (1, 5)
    assert matrix[0, 0] == pytest.approx(2.0, abs=1e-5)
    assert matrix[0, 4] == pytest.approx((1 - 3) / np.sqrt(2.0), abs=1e-6)


def test_scaled_training_columns_have_zero_mean_unit_std() -> None:
    iris = load("iris").X
    matrix = TablePreprocessor().fit(iris).transform(iris)["input"]
    assert matrix.shape == (150, 4)
    np.testing.assert_allclose(matrix.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(matrix.std(axis=0), 1.0, atol=1e-5)


def test_missing_numeric_value_becomes_the_mean(fitted: TablePreprocessor) -> None:
    rows = [
        {"age": None, "color": "red", "rooms": np.nan},
        {"age": float("nan"), "color": "red", "rooms": 3},
    ]
    matrix = fitted.transform(rows)["input"]
    np.testing.assert_array_equal(matrix[:, 0], [0.0, 0.0])  # mean -> 0 after scaling
    np.testing.assert_array_equal(matrix[:, 4], [0.0, 0.0])


def test_training_nan_is_imputed_too(train: pd.DataFrame, fitted: TablePreprocessor) -> None:
    matrix = fitted.transform(train)["input"]
    assert np.isfinite(matrix).all()
    assert matrix[2, 0] == 0.0


def test_one_hot_and_unseen_category(fitted: TablePreprocessor) -> None:
    rows = [
        {"age": 35, "color": "blue", "rooms": 3},
        {"age": 35, "color": "green", "rooms": 3},
        {"age": 35, "color": "red", "rooms": 3},
        {"age": 35, "color": "purple", "rooms": 3},  # unseen
        {"age": 35, "color": None, "rooms": 3},  # missing
    ]
    onehot = fitted.transform(rows)["input"][:, 1:4]
    np.testing.assert_array_equal(
        onehot,
        [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]],
    )


def test_dicts_lists_and_dataframe_give_identical_output(fitted: TablePreprocessor) -> None:
    dicts = [
        {"age": 25, "color": "red", "rooms": 2},
        {"age": None, "color": "mauve", "rooms": 4},
        {"age": 61.5, "color": "blue", "rooms": None},
    ]
    lists = [[r["age"], r["color"], r["rooms"]] for r in dicts]
    tuples = [tuple(r) for r in lists]
    frame = pd.DataFrame(dicts)
    reordered = frame[["rooms", "color", "age"]].assign(extra=[1, 2, 3])  # order and extras ignored

    expected = fitted.transform(dicts)["input"]
    for form in (lists, tuples, frame, reordered):
        np.testing.assert_array_equal(fitted.transform(form)["input"], expected)
    # dict key order does not matter either
    shuffled = [{"rooms": r["rooms"], "age": r["age"], "color": r["color"]} for r in dicts]
    np.testing.assert_array_equal(fitted.transform(shuffled)["input"], expected)
    assert expected[0, 0] == pytest.approx((25 - 35) / np.std([20, 30, 50, 40]), abs=1e-6)


def test_fit_on_list_of_dicts_equals_fit_on_dataframe(train: pd.DataFrame) -> None:
    records = train.replace({np.nan: None}).to_dict(orient="records")
    a = TablePreprocessor().fit(records).spec()
    b = TablePreprocessor().fit(train).spec()
    assert a == b


def test_boolean_column_is_numeric() -> None:
    pre = TablePreprocessor().fit(pd.DataFrame({"flag": [True, False, True, True]}))
    assert pre.spec()["columns"][0]["kind"] == "numeric"
    assert pre.spec()["columns"][0]["mean"] == pytest.approx(0.75)
    out = pre.transform([{"flag": True}, {"flag": False}])["input"][:, 0]
    np.testing.assert_allclose(
        out, [(1 - 0.75) / np.sqrt(0.1875), (0 - 0.75) / np.sqrt(0.1875)], rtol=1e-6
    )


def test_constant_column_does_not_divide_by_zero() -> None:
    pre = TablePreprocessor().fit(pd.DataFrame({"k": [3.0, 3.0, 3.0]}))
    assert pre.spec()["columns"][0]["std"] == 1.0
    np.testing.assert_array_equal(pre.transform([[3.0], [5.0]])["input"][:, 0], [0.0, 2.0])


def test_numeric_strings_are_accepted(fitted: TablePreprocessor) -> None:
    a = fitted.transform([{"age": "42.5", "color": "red", "rooms": "2"}])["input"]
    b = fitted.transform([{"age": 42.5, "color": "red", "rooms": 2}])["input"]
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------- errors


def test_missing_column_is_named_with_close_match(fitted: TablePreprocessor) -> None:
    with pytest.raises(InvalidInputError) as info:
        fitted.transform([{"agee": 30, "color": "red", "rooms": 1}])
    message = str(info.value)
    assert "missing column(s) ['age']" in message
    assert "the model needs ['age', 'color', 'rooms']" in message
    assert "Did you mean: 'agee' -> 'age'?" in message


def test_missing_column_without_close_match(fitted: TablePreprocessor) -> None:
    with pytest.raises(InvalidInputError, match=r"missing column\(s\) \['rooms'\]") as info:
        fitted.transform([{"age": 30, "color": "red"}])
    assert "Did you mean" not in str(info.value)


def test_repeated_columns_and_dates_in_a_frame_are_refused(
    fitted: TablePreprocessor, train: pd.DataFrame
) -> None:
    repeated = pd.concat([train, train[["age"]]], axis=1)
    with pytest.raises(InvalidInputError, match="more than one column named 'age'"):
        fitted.transform(repeated)
    note = train[["age"]].set_axis(["note"], axis=1)
    unused = pd.concat([train, note, note], axis=1)
    assert fitted.transform(unused)["input"].shape[0] == 5  # a repeated column it does not use
    for value in (
        pd.Timestamp("2020-01-01"),
        pd.Timestamp("2020-01-01", tz="UTC"),
        pd.Timedelta("1D"),
    ):
        with pytest.raises(InvalidInputError, match=r"column 'rooms' holds (datetime|timedelta)"):
            fitted.transform(train.assign(rooms=value))  # a number of ns would come out
    dates = pd.Series(pd.to_datetime(["2020-01-01"] * 5), dtype="category")
    with pytest.raises(InvalidInputError, match="column 'rooms' holds category"):
        fitted.transform(train.assign(rooms=dates))


def test_non_numeric_value_names_column_and_row(fitted: TablePreprocessor) -> None:
    rows = [
        {"age": 30, "color": "red", "rooms": 1},
        {"age": 31, "color": "red", "rooms": 2},
        {"age": "thirty", "color": "red", "rooms": 3},
    ]
    with pytest.raises(
        InvalidInputError,
        match=r"row 2 column 'age' holds 'thirty', which is not a number; send a number or null",
    ):
        fitted.transform(rows)


def test_non_numeric_value_in_dataframe_names_position() -> None:
    pre = TablePreprocessor().fit(pd.DataFrame({"x": [1.0, 2.0]}))
    frame = pd.DataFrame({"x": ["1", "2", "oops"]}, index=[10, 11, 12])
    with pytest.raises(InvalidInputError, match=r"row 2 column 'x' holds 'oops'"):
        pre.transform(frame)


@pytest.mark.parametrize(
    ("inputs", "pattern"),
    [
        (
            [[1, 2]],
            r"row 0 has 2 values; the model takes 3 columns in this order: "
            r"\['age', 'color', 'rooms'\]",
        ),
        ([{"age": 1, "color": "red", "rooms": 1}, "abc"], r"row 1 is a str; send a dict"),
        ({"age": 1}, r"inputs must be a list of rows, got a single dict"),
        ([], r"inputs is empty; send at least one row"),
        (pd.DataFrame(), r"inputs is empty; send at least one row"),
    ],
)
def test_row_shape_errors(fitted: TablePreprocessor, inputs: Any, pattern: str) -> None:
    with pytest.raises(InvalidInputError, match=pattern):
        fitted.transform(inputs)


def test_too_many_categories_is_refused() -> None:
    frame = pd.DataFrame({"sku": [f"item-{i}" for i in range(300)]})
    with pytest.raises(
        InvalidInputError, match=r"column 'sku' holds 300 distinct text values.*256"
    ):
        TablePreprocessor().fit(frame)


def test_use_before_fit_is_refused() -> None:
    with pytest.raises(RuntimeError, match="before fit"):
        TablePreprocessor().transform([[1.0]])


# ----------------------------------------------------------------- spec


def test_spec_round_trip_gives_identical_output(fitted: TablePreprocessor, tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(fitted.spec()))
    spec = json.loads(path.read_text())
    rows = [
        {"age": 25, "color": "red", "rooms": 2},
        {"age": None, "color": "teal", "rooms": 9},
    ]
    for rebuilt in (TablePreprocessor.from_spec(spec), preprocessor_from_spec(spec)):
        assert isinstance(rebuilt, TablePreprocessor)
        assert rebuilt.spec() == fitted.spec()
        np.testing.assert_array_equal(
            rebuilt.transform(rows)["input"], fitted.transform(rows)["input"]
        )


def test_input_schema(fitted: TablePreprocessor) -> None:
    schema = fitted.input_schema()
    assert schema["type"] == "table"
    assert schema["columns"] == [
        {"name": "age", "type": "number"},
        {"name": "color", "type": "string", "categories": ["blue", "green", "red"]},
        {"name": "rooms", "type": "number"},
    ]
    assert fitted.dynamic_axes() == {"input": {0: "batch"}}


# ----------------------------------------------------------------- registry


def test_builtin_kinds_are_registered() -> None:
    assert {"image", "table", "text"} <= set(registered_kinds())


def test_register_preprocessor_refuses_a_duplicate_kind() -> None:
    class OtherTable(TablePreprocessor):
        kind: ClassVar[str] = "table"

    with pytest.raises(
        ValueError, match=r"kind 'table' is already registered \(TablePreprocessor\)"
    ):
        register_preprocessor(OtherTable)
    # the original class is still the one the registry builds
    rebuilt = preprocessor_from_spec({"kind": "table", "columns": []})
    assert type(rebuilt) is TablePreprocessor


def test_register_preprocessor_refuses_duplicate_of_a_fresh_class() -> None:
    class Dummy(Preprocessor):
        kind: ClassVar[str] = "image"
        modality: ClassVar[str] = "image"

        def fit(self, inputs: Any) -> Self:
            return self

        def transform(self, inputs: Any) -> dict[str, np.ndarray]:
            return {}

        def spec(self) -> dict[str, Any]:
            return {"kind": self.kind}

        @classmethod
        def from_spec(cls, spec: dict[str, Any], assets: Path | None = None) -> Self:
            return cls()

        def input_schema(self) -> dict[str, Any]:
            return {}

        def dynamic_axes(self) -> dict[str, dict[int, str]]:
            return {}

    kinds_before = registered_kinds()
    with pytest.raises(ValueError, match=r"'image' is already registered.*pick another kind name"):
        register_preprocessor(Dummy)
    assert registered_kinds() == kinds_before


def test_unknown_kind_in_spec_asks_for_upgrade() -> None:
    with pytest.raises(PackageFormatError, match=r"unknown preprocessing kind 'audio'.*upgrade"):
        preprocessor_from_spec({"kind": "audio"})


def test_numeric_looking_categories_match_after_a_csv_round_trip(tmp_path: Path) -> None:
    pre = TablePreprocessor().fit(pd.DataFrame({"code": ["1", "2", "x", "2"]}))
    assert pre.spec()["columns"][0]["categories"] == ["1", "2", "x"]
    # a CSV column with a gap is read as floats: 1 -> 1.0; it must still be category "1"
    path = tmp_path / "rows.csv"
    path.write_text("code,note\n1,a\n,b\n2,c\n")
    frame = pd.read_csv(path)
    assert frame["code"].dtype == np.float64
    out = pre.transform(frame)["input"]
    np.testing.assert_array_equal(out, [[1, 0, 0], [0, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(pre.transform([{"code": 2}])["input"], [[0, 1, 0]])


def test_unhashable_category_value_is_refused() -> None:
    pre = TablePreprocessor().fit(pd.DataFrame({"color": ["red", "blue"]}))
    with pytest.raises(InvalidInputError, match=r"row 1 column 'color' holds a list"):
        pre.transform([{"color": "red"}, {"color": ["red"]}])


def test_infinite_training_value_is_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"column 'x' row 1 is infinite"):
        TablePreprocessor().fit(pd.DataFrame({"x": [1.0, np.inf]}))

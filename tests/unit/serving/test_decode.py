"""Decoding a request's tensors into what the Predictor takes: tables column by column or
as one ``[n, n_columns]`` tensor, and how the model metadata describes both forms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tuneserve.exceptions import InvalidInputError
from tuneserve.preprocessing import TablePreprocessor
from tuneserve.serving.batcher import join
from tuneserve.serving.decode import InputSchema, from_tensors, metadata_inputs
from tuneserve.serving.oip import Tensor

NUMBERS = InputSchema("table", ("a", "b", "c"), (True, True, True))
MIXED = InputSchema("table", ("size", "color"), (True, False))
ROWS = np.array([[1.5, -2.0, 3.25], [0.1, 7.0, -1.0]])  # (2 rows, 3 columns)


def _tensor(name: str, datatype: str, values: np.ndarray) -> Tensor:
    return Tensor(name, datatype, list(values.shape), values)


def _columns(rows: np.ndarray, datatype: str, dtype: type) -> list[Tensor]:
    return [_tensor(c, datatype, rows[:, j].astype(dtype)) for j, c in enumerate(NUMBERS.columns)]


def _bytes(values: list[str]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = [v.encode() for v in values]
    return out


@pytest.mark.parametrize(("datatype", "dtype"), [("FP32", np.float32), ("FP64", np.float64)])
def test_one_matrix_tensor_gives_the_rows_one_tensor_per_column_gives(datatype, dtype):
    per_column = from_tensors(NUMBERS, _columns(ROWS, datatype, dtype))
    matrix = from_tensors(NUMBERS, [_tensor("input-0", datatype, ROWS.astype(dtype))])
    assert isinstance(per_column, np.ndarray) and isinstance(matrix, np.ndarray)
    assert per_column.dtype == matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix, per_column)
    np.testing.assert_array_equal(matrix, ROWS.astype(dtype).astype(np.float64))


def test_column_tensors_of_a_mixed_table_become_python_values_in_column_order():
    tensors = [
        _tensor("color", "BYTES", _bytes(["red", "blue"])),
        _tensor("size", "INT64", np.array([[3], [4]])),  # [n, 1] is a column too
    ]
    rows = from_tensors(MIXED, tensors)
    assert isinstance(rows, np.ndarray) and rows.shape == (2, 2)
    assert rows.tolist() == [[3, "red"], [4, "blue"]]
    assert [type(v) for v in rows[0]] == [int, str]


@pytest.mark.parametrize(
    ("schema", "tensor", "message"),
    [
        (
            NUMBERS,
            _tensor("input-0", "FP32", np.zeros((2, 4), np.float32)),
            r"shape \[2, 4\]: 4 features per row, but this model takes 3 .*send shape \[n, 3\]",
        ),
        (
            NUMBERS,
            _tensor("input-0", "INT64", np.zeros((2, 3), np.int64)),
            r"'input-0' is INT64; .* must be FP32 or FP64. Hint: cast it to floats",
        ),
        (
            NUMBERS,
            _tensor("input-0", "FP32", np.zeros(3, np.float32)),
            r"one tensor per column; missing \['a', 'b', 'c'\]. Or, .* tensor of shape \[n, 3\]",
        ),
        (
            NUMBERS,
            _tensor("input-0", "FP64", np.zeros((0, 3))),
            r"shape \[0, 3\]: no rows",
        ),
        (
            MIXED,
            _tensor("input-0", "FP64", np.zeros((2, 2))),
            r"columns are all numbers: \['color'\] hold strings. Send one tensor per column",
        ),
    ],
)
def test_a_bad_matrix_tensor_is_refused_with_the_rule_and_the_fix(schema, tensor, message):
    with pytest.raises(InvalidInputError, match=message):
        from_tensors(schema, [tensor])


def test_bad_column_tensors_are_refused_by_name():
    tensors = _columns(ROWS, "FP64", np.float64)
    with pytest.raises(InvalidInputError, match=r"missing \['c'\].*\[n, 3\]"):
        from_tensors(NUMBERS, tensors[:2])
    with pytest.raises(InvalidInputError, match=r"unknown input tensors \['d'\]"):
        from_tensors(NUMBERS, [*tensors, _tensor("d", "FP64", ROWS[:, 0])])
    tensors[2] = _tensor("c", "FP64", np.zeros(5))
    with pytest.raises(
        InvalidInputError, match=r"same number of rows; got \{'a': 2, 'b': 2, 'c': 5"
    ):
        from_tensors(NUMBERS, tensors)
    with pytest.raises(InvalidInputError, match=r"missing \['size', 'color'\]; got one") as caught:
        from_tensors(MIXED, [_tensor("x", "FP64", ROWS[:, 0])])
    assert "[n," not in str(caught.value)  # no one-tensor form to offer: a string column
    empty = [_tensor(c, "FP64", np.zeros(0)) for c in NUMBERS.columns]
    with pytest.raises(InvalidInputError, match="hold no rows"):
        from_tensors(NUMBERS, empty)
    with pytest.raises(InvalidInputError, match="no inputs"):
        from_tensors(InputSchema("text"), [_tensor("text", "BYTES", _bytes([]))])


def test_decoded_rows_preprocess_like_json_rows():
    """What the server hands the Predictor gives the features that row dicts give."""
    frame = pd.DataFrame({"size": [1.0, 2.5, 4.0, 8.0], "color": ["red", "blue", "red", "green"]})
    pre = TablePreprocessor().fit(frame)
    tensors = [
        _tensor("size", "FP32", np.array([2.5, 9.0], np.float32)),
        _tensor("color", "BYTES", _bytes(["green", "unseen"])),
    ]
    rows = from_tensors(MIXED, tensors)
    want = pre.transform([{"size": 2.5, "color": "green"}, {"size": 9.0, "color": "unseen"}])
    np.testing.assert_array_equal(pre.transform(rows)["input"], want["input"])

    numbers = pd.DataFrame(ROWS, columns=list(NUMBERS.columns))
    pre = TablePreprocessor().fit(numbers)
    matrix = from_tensors(NUMBERS, [_tensor("x", "FP64", ROWS)])
    want = pre.transform(numbers.to_dict("records"))
    np.testing.assert_array_equal(pre.transform(matrix)["input"], want["input"])
    with pytest.raises(InvalidInputError, match=r"rows have 2 values; the model takes 3"):
        pre.transform(ROWS[:, :2])


def test_the_metadata_describes_both_table_forms():
    inputs, parameters = metadata_inputs(NUMBERS)
    assert [i["name"] for i in inputs] == ["a", "b", "c"]
    assert {i["datatype"] for i in inputs} == {"FP64"}
    assert parameters["matrix_input"] == {"name": "input", "datatype": "FP64", "shape": [-1, 3]}
    doc = parameters["inputs_doc"]
    assert "one tensor per column" in doc and "one FP32 or FP64 tensor [n, 3]" in doc

    inputs, parameters = metadata_inputs(MIXED)
    assert [(i["name"], i["datatype"]) for i in inputs] == [("size", "FP64"), ("color", "BYTES")]
    assert "matrix_input" not in parameters and "[n," not in parameters["inputs_doc"]


def test_a_batch_joins_arrays_of_rows_without_a_list_per_row():
    a, b = ROWS, ROWS[:1] * 2
    joined = join([a, b])
    assert isinstance(joined, np.ndarray)
    np.testing.assert_array_equal(joined, np.concatenate([a, b]))
    assert join([a]) is a
    mixed = join([[{"a": 1.0, "b": 2.0, "c": 3.0}], a])  # a simple JSON row and OIP rows
    assert isinstance(mixed, list) and len(mixed) == 3
    np.testing.assert_array_equal(mixed[2], a[1])
    assert join([["x"], ["y", "z"]]) == ["x", "y", "z"]

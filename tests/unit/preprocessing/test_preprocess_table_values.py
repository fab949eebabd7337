"""TablePreprocessor on awkward values: nullable dtypes with missing values, numbers too
large for a float."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tuneserve.exceptions import InvalidInputError
from tuneserve.preprocessing import TablePreprocessor


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

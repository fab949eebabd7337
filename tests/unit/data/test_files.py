"""Tables and text from CSV / TSV / Parquet / JSONL / JSON files, with column detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tuneserve.data import load

IRIS_NAMES = ("setosa", "versicolor", "virginica")


def _iris_frame(label: str = "label") -> pd.DataFrame:
    """Iris as a user would have it in a file: 4 feature columns and a class-name column."""
    data = load("iris")
    frame = data.X.copy()
    frame[label] = [IRIS_NAMES[code] for code in data.y]
    return frame


def _write(frame: pd.DataFrame, path: Path) -> Path:
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    elif suffix in (".jsonl", ".ndjson"):
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".json":
        frame.to_json(path, orient="records")
    else:  # pragma: no cover - test helper misuse
        raise AssertionError(suffix)
    return path


SUFFIXES = [".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson", ".json"]

REVIEWS = [
    ("An absolute joy from start to finish, I laughed a lot", "pos"),
    ("Dull, slow and far too long for what it says", "neg"),
    ("The cast is wonderful and the music even better", "pos"),
    ("I walked out after forty minutes", "neg"),
    ("A warm, clever film that I will watch again", "pos"),
    ("Nothing happens and nobody seems to care", "neg"),
    ("Best thing I have seen this year", "pos"),
    ("The plot makes no sense at all", "neg"),
]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_iris_table_loads_from_every_format(tmp_path: Path, suffix: str) -> None:
    frame = _iris_frame()
    path = _write(frame, tmp_path / f"flowers{suffix}")

    data = load(path)

    assert data.modality == "table"
    assert data.task == "classification"
    assert data.name == "flowers"
    assert data.source == str(path)
    assert data.label_column == "label"
    assert len(data) == 150
    assert data.label_names == IRIS_NAMES
    assert list(data.X.columns) == list(frame.columns[:-1])
    assert "label" not in data.X.columns
    # codes follow the sorted class names, row by row
    np.testing.assert_array_equal(data.y, load("iris").y)
    np.testing.assert_allclose(data.X.to_numpy(), frame.iloc[:, :4].to_numpy(), rtol=1e-9)


def test_same_rows_in_csv_tsv_parquet_give_same_fingerprint(tmp_path: Path) -> None:
    frame = _iris_frame()
    prints = {
        load(_write(frame, tmp_path / f"iris{suffix}")).fingerprint
        for suffix in (".csv", ".tsv", ".parquet")
    }
    assert len(prints) == 1


@pytest.mark.parametrize(
    "label", ["label", "Label", "TARGET", "target", "Class", "class", "y", "Y"]
)
def test_label_column_is_detected_case_insensitively(tmp_path: Path, label: str) -> None:
    path = _write(_iris_frame(label), tmp_path / "iris.csv")
    data = load(path)
    assert data.label_column == label
    assert label not in data.X.columns
    assert data.X.shape == (150, 4)
    assert data.label_names == IRIS_NAMES


def test_label_candidates_are_taken_in_documented_order(tmp_path: Path) -> None:
    # "class" comes before "y" in LABEL_COLUMN_CANDIDATES, wherever the columns are
    frame = pd.DataFrame(
        {"y": [0.5, 1.5, 2.5, 3.5], "a": [1, 2, 3, 4], "class": ["x", "z", "x", "z"]}
    )
    data = load(_write(frame, tmp_path / "t.csv"))
    assert data.label_column == "class"
    assert list(data.X.columns) == ["y", "a"]
    assert data.label_names == ("x", "z")


def test_breast_cancer_rows_with_integer_target_column(tmp_path: Path) -> None:
    bc = load("breast_cancer")
    frame = bc.X.iloc[:120].copy()
    frame["target"] = bc.y[:120]
    data = load(_write(frame, tmp_path / "bc.parquet"))
    assert data.modality == "table"
    assert data.task == "classification"
    assert data.label_names == ("0", "1")
    np.testing.assert_array_equal(data.y, bc.y[:120])
    assert data.X.shape == (120, 30)


def test_free_text_column_plus_label_loads_as_text(tmp_path: Path) -> None:
    frame = pd.DataFrame({"review": [t for t, _ in REVIEWS], "label": [s for _, s in REVIEWS]})
    data = load(_write(frame, tmp_path / "reviews.csv"))

    assert data.modality == "text"
    assert data.task == "classification"
    assert data.text_column == "review"
    assert data.label_column == "label"
    assert [t for t, _ in REVIEWS] == data.X
    assert data.label_names == ("neg", "pos")
    assert data.y.tolist() == [1, 0, 1, 0, 1, 0, 1, 0]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".tsv"])
def test_text_is_detected_in_other_formats(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame({"text": [t for t, _ in REVIEWS], "label": [s for _, s in REVIEWS]})
    data = load(_write(frame, tmp_path / f"reviews{suffix}"))
    assert data.modality == "text"
    assert data.X[3] == "I walked out after forty minutes"


def test_single_short_category_column_is_a_table_not_text(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"color": ["red", "blue", "red", "green", "blue", "red"], "label": [1, 0, 1, 0, 0, 1]}
    )
    data = load(_write(frame, tmp_path / "colors.csv"))
    assert data.modality == "table"
    assert data.text_column is None
    assert list(data.X.columns) == ["color"]


def _reviews_with_extras() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "review": [t for t, _ in REVIEWS],
            "stars": [5, 1, 4, 1, 5, 2, 5, 1],
            "sentiment": [s for _, s in REVIEWS],
        }
    )


def test_label_column_override(tmp_path: Path) -> None:
    path = _write(_reviews_with_extras(), tmp_path / "r.csv")
    data = load(path, label_column="sentiment")
    # a free-text column named like text ("review") makes a text data set; others are noted
    assert data.modality == "text"
    assert data.text_column == "review"
    assert data.label_column == "sentiment"
    assert data.meta["ignored_columns"] == ["stars"]
    assert data.summary()["ignored_columns"] == ["stars"]
    assert data.label_names == ("neg", "pos")


def test_free_text_beside_other_features_with_a_neutral_name_is_a_table(tmp_path: Path) -> None:
    frame = _reviews_with_extras().rename(columns={"review": "notes"})
    data = load(_write(frame, tmp_path / "r.csv"), label_column="sentiment")
    assert data.modality == "table"
    assert list(data.X.columns) == ["notes", "stars"]


def test_text_beside_an_id_column_is_text(tmp_path: Path) -> None:
    frame = _reviews_with_extras().rename(columns={"review": "notes"}).drop(columns="stars")
    frame.insert(0, "id", range(len(frame)))
    data = load(_write(frame, tmp_path / "r.csv"), label_column="sentiment")
    assert data.modality == "text"
    assert data.text_column == "notes"


def test_label_column_override_beats_detected_name(tmp_path: Path) -> None:
    frame = _iris_frame("species")
    frame["label"] = np.arange(150) % 2  # a decoy that detection would pick
    data = load(_write(frame, tmp_path / "iris.csv"), label_column="species")
    assert data.label_column == "species"
    assert data.label_names == IRIS_NAMES
    assert "label" in data.X.columns


def test_text_column_override(tmp_path: Path) -> None:
    path = _write(_reviews_with_extras(), tmp_path / "r.csv")
    data = load(path, label_column="sentiment", text_column="review")
    assert data.modality == "text"
    assert data.text_column == "review"
    assert [t for t, _ in REVIEWS] == data.X
    assert data.summary()["text_column"] == "review"


def test_integer_labels_with_few_values_are_classification(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    frame["label"] = np.arange(60) % 4 + 1  # 1..4
    data = load(_write(frame, tmp_path / "t.csv"))
    assert data.task == "classification"
    assert data.label_names == ("1", "2", "3", "4")
    np.testing.assert_array_equal(data.y, np.arange(60) % 4)


def test_integer_class_names_sort_numerically(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": np.arange(30.0), "label": [2, 10, 1] * 10})
    data = load(_write(frame, tmp_path / "t.csv"))
    assert data.label_names == ("1", "2", "10")
    assert data.y[:3].tolist() == [1, 2, 0]


def test_float_labels_are_regression(tmp_path: Path) -> None:
    diabetes = load("diabetes")
    frame = diabetes.X.iloc[:80].copy()
    frame["target"] = diabetes.y[:80] + 0.25
    data = load(_write(frame, tmp_path / "diabetes.csv"))
    assert data.task == "regression"
    assert data.label_names is None
    assert data.num_classes == 0
    assert data.y.dtype == np.float64
    np.testing.assert_allclose(data.y, diabetes.y[:80] + 0.25)


def test_many_distinct_integer_labels_are_regression(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": np.arange(200.0), "y": np.arange(200) * 3})
    assert load(_write(frame, tmp_path / "t.csv")).task == "regression"


def test_task_override_to_regression(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": np.arange(40.0), "label": np.arange(40) % 3})
    path = _write(frame, tmp_path / "t.csv")
    assert load(path).task == "classification"
    data = load(path, task="regression")
    assert data.task == "regression"
    assert data.label_names is None
    assert data.y.dtype == np.float64
    np.testing.assert_array_equal(data.y, (np.arange(40) % 3).astype(float))


def test_task_override_to_classification(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": np.arange(40.0), "label": np.arange(40) * 1.0})
    path = _write(frame, tmp_path / "t.csv")
    assert load(path).task == "regression"
    data = load(path, task="classification")
    assert data.task == "classification"
    assert data.num_classes == 40
    assert data.label_names is not None and data.label_names[:3] == ("0", "1", "2")


def test_boolean_labels_are_classification(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": np.arange(10.0), "label": [True, False] * 5})
    data = load(_write(frame, tmp_path / "t.parquet"))
    assert data.task == "classification"
    assert data.label_names == ("False", "True")
    assert data.y.tolist() == [1, 0] * 5


def test_tiny_file_with_integer_classes_is_classification(tmp_path: Path) -> None:
    path = tmp_path / "tiny.csv"
    pd.DataFrame({"x": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "label": [0, 1, 2, 0, 1, 2]}).to_csv(
        path, index=False
    )
    data = load(path)
    assert data.task == "classification"
    assert data.label_names == ("0", "1", "2")


def test_semicolon_separated_csv(tmp_path: Path) -> None:
    path = tmp_path / "euro.csv"
    path.write_text("a;b;label\n1,5;2;x\n3;4;y\n5;6;x\n")
    data = load(path)
    assert list(data.X.columns) == ["a", "b"]
    assert data.label_names == ("x", "y")


def test_a_dataframe_loads_like_the_same_rows_in_a_file(tmp_path: Path) -> None:
    frame = _iris_frame()
    from_frame = load(frame)
    assert from_frame.modality == "table" and from_frame.label_names == IRIS_NAMES
    assert from_frame.fingerprint == load(_write(frame, tmp_path / "iris.parquet")).fingerprint
    assert "label" in frame.columns and len(frame.columns) == 5  # the user's frame is untouched
    reviews = pd.DataFrame(REVIEWS, columns=["review", "sentiment"]).set_index(
        pd.Index(range(100, 108))
    )
    text = load(reviews, label_column="sentiment")
    assert text.modality == "text" and text.X[0] == REVIEWS[0][0]

    class PathLike:  # e.g. pytest's tmpdir: os.PathLike, but no str or Path
        def __fspath__(self) -> str:
            return str(tmp_path / "iris.parquet")

    assert load(PathLike()).fingerprint == from_frame.fingerprint
    numbered = pd.DataFrame({0: [1.0, 2.0, 3.0, 4.0], 1: [0, 1, 0, 1]})  # int column names
    assert list(load(numbered, label_column="1").X.columns) == ["0"]
    assert list(numbered.columns) == [0, 1]


def test_bad_dataframes_say_what_to_fix() -> None:
    from tuneserve.exceptions import DataError, InvalidInputError

    repeated = _iris_frame()
    repeated.columns = ["a", "a", "b", "c", "label"]
    with pytest.raises(DataError, match=r"more than one column named 'a'.*rename or drop"):
        load(repeated)
    with pytest.raises(DataError, match="the DataFrame has no rows"):
        load(_iris_frame().iloc[:0])
    with pytest.raises(DataError, match="no label column in the DataFrame"):
        load(_iris_frame(label="species"))
    with pytest.raises(InvalidInputError, match=r"got ndarray\. Hint: for arrays, build a Data"):
        load(np.zeros((3, 3)))  # type: ignore[arg-type]

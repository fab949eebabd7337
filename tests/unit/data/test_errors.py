"""Every bad data input raises DataError / NotFoundError naming the problem and a fix."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tuneserve.data import Dataset, kfold, load, split
from tuneserve.exceptions import DataError, InvalidInputError, NotFoundError, TuneserveError


def _png(path: Path, value: int = 0, size: tuple[int, int] = (4, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(path)
    return path


def _csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


# ----------------------------------------------------------------- sources


def test_missing_path_is_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.csv"
    with pytest.raises(NotFoundError, match=r"nowhere\.csv.* not found") as info:
        load(missing)
    # the message lists the built-in names as the alternative
    assert "digits, breast_cancer, wine, iris, diabetes" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, TuneserveError)


def test_misspelled_builtin_name_is_not_found() -> None:
    with pytest.raises(NotFoundError, match=r"'irs' not found.*built-in data set \(digits"):
        load("irs")


@pytest.mark.parametrize("suffix", [".xlsx", ".txt", ".feather"])
def test_unreadable_file_type(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    path.write_text("a,label\n1,0\n2,1\n")
    with pytest.raises(DataError, match=rf"cannot read .*data\{suffix}: unknown file type") as info:
        load(path)
    assert ".csv, .tsv, .parquet" in str(info.value)


def test_corrupt_parquet_names_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not a parquet file")
    with pytest.raises(DataError, match=r"cannot read .*broken\.parquet.*Hint: check the file"):
        load(path)


def test_empty_csv_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match=r"empty\.csv is empty; it needs a header line and rows"):
        load(path)


def test_csv_with_header_only_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("a,b,label\n")
    with pytest.raises(DataError, match=r"header\.csv has a header but no rows"):
        load(path)


def test_malformed_jsonl_names_file(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1, "label": 0}\n{"a": 2, "label": \n')
    with pytest.raises(DataError, match=r"cannot read .*rows\.jsonl"):
        load(path)


# ----------------------------------------------------------------- image folders


def test_image_folder_without_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    _png(root / "loose.png")  # images directly in the root are not classes
    with pytest.raises(
        DataError, match=r"image folder .*photos has no class sub-folders.*Hint: put each class"
    ):
        load(root)


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    _png(root / "cat" / "1.png")
    (root / "dog").mkdir()
    (root / "dog" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"class folder .*dog has no images.*Hint: add images"):
        load(root)


def test_single_class_image_folder(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    _png(root / "cat" / "1.png")
    _png(root / "cat" / "2.png")
    with pytest.raises(
        DataError, match=r"holds a single class \('cat'\).*at least 2.*Hint: add a sub-folder"
    ):
        load(root)


@pytest.mark.parametrize(
    "content",
    [b"\x89PNG\r\n\x1a\n this is garbage", b"", b"GIF89a nonsense"],
    ids=["bad-png", "empty", "not-an-image"],
)
def test_corrupt_image_names_the_file(tmp_path: Path, content: bytes) -> None:
    root = tmp_path / "photos"
    _png(root / "cat" / "1.png")
    _png(root / "dog" / "1.png")
    (root / "dog" / "2_broken.png").write_bytes(content)
    with pytest.raises(DataError, match=r"cannot read image .*dog/2_broken\.png.*Hint: remove"):
        load(root)


def test_truncated_image_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    _png(root / "cat" / "1.png")
    rng = np.random.default_rng(0)
    good = _png(root / "dog" / "big.png", size=(64, 64))
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    good.write_bytes(good.read_bytes()[:200])  # header intact, pixel data cut
    with pytest.raises(DataError, match=r"cannot read image .*dog/big\.png"):
        load(root)


# ----------------------------------------------------------------- columns and labels


def test_single_class_csv(tmp_path: Path) -> None:
    path = _csv(tmp_path / "one.csv", pd.DataFrame({"a": [1, 2, 3, 4], "label": ["spam"] * 4}))
    with pytest.raises(
        DataError,
        match=r"label column 'label' of .*one\.csv holds a single class \('spam'\).*Hint: add",
    ):
        load(path)


def test_missing_label_column_lists_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame({"height": [1.0, 2.0], "weight": [3.0, 4.0], "species": ["a", "b"]})
    path = _csv(tmp_path / "animals.csv", frame)
    with pytest.raises(DataError) as info:
        load(path)
    message = str(info.value)
    assert "no label column in" in message and "animals.csv" in message
    assert "['height', 'weight', 'species']" in message
    assert "label / target / class / y" in message
    assert "--label-column" in message


def test_misspelled_label_column_suggests_close_match(tmp_path: Path) -> None:
    frame = pd.DataFrame({"height": [1.0, 2.0], "species": ["a", "b"]})
    path = _csv(tmp_path / "animals.csv", frame)
    with pytest.raises(DataError) as info:
        load(path, label_column="speceis")
    message = str(info.value)
    assert "label column 'speceis' not found in" in message
    assert "['height', 'species']" in message
    assert "Did you mean 'species'?" in message
    assert "--label-column" in message


def test_label_column_without_close_match_gives_no_guess(tmp_path: Path) -> None:
    path = _csv(tmp_path / "a.csv", pd.DataFrame({"height": [1.0, 2.0], "species": ["a", "b"]}))
    with pytest.raises(DataError, match=r"'zzz' not found") as info:
        load(path, label_column="zzz")
    assert "Did you mean" not in str(info.value)


def test_misspelled_text_column_suggests_close_match(tmp_path: Path) -> None:
    frame = pd.DataFrame({"review": ["good film indeed", "bad film indeed"], "label": [1, 0]})
    path = _csv(tmp_path / "r.csv", frame)
    with pytest.raises(
        DataError, match=r"text column 'reviw' not found.*Did you mean 'review'\?.*--text-column"
    ):
        load(path, text_column="reviw")


def test_text_column_cannot_be_the_label(tmp_path: Path) -> None:
    frame = pd.DataFrame({"review": ["good film indeed", "bad film indeed"], "label": [1, 0]})
    with pytest.raises(DataError, match=r"'label' cannot be both the text and the label"):
        load(_csv(tmp_path / "r.csv", frame), text_column="label")


def test_label_only_file(tmp_path: Path) -> None:
    path = _csv(tmp_path / "labels.csv", pd.DataFrame({"label": [0, 1, 0, 1]}))
    with pytest.raises(DataError, match=r"has only the label column 'label'; add feature columns"):
        load(path)


def test_nan_labels_name_the_rows(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": np.arange(8.0), "target": [0, 1, None, 1, 0, None, 1, 0]})
    path = _csv(tmp_path / "gaps.csv", frame)
    with pytest.raises(
        DataError,
        match=r"2 row\(s\) of .*gaps\.csv have no value in label column 'target' "
        r"\(0-based rows 2, 5\)\. Hint: drop those rows",
    ):
        load(path)


def test_blank_string_labels_count_as_missing(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    pd.DataFrame({"a": [1, 2, 3], "label": ["x", "  ", "y"]}).to_json(
        path, orient="records", lines=True
    )
    with pytest.raises(DataError, match=r"1 row\(s\) .*\(0-based rows 1\)"):
        load(path)


def test_many_nan_label_rows_are_abbreviated(tmp_path: Path) -> None:
    labels = [0.0, 1.0] + [np.nan] * 12
    path = _csv(tmp_path / "holes.csv", pd.DataFrame({"a": range(14), "label": labels}))
    with pytest.raises(
        DataError, match=r"12 row\(s\).*rows 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 \.\.\.\)"
    ):
        load(path)


def test_empty_texts_name_the_rows(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "review": [
                "an absolute joy from start to finish",
                "",
                "dull, slow and far too long",
                "   ",
                "the cast is wonderful",
            ],
            "label": ["pos", "pos", "neg", "neg", "pos"],
        }
    )
    path = _csv(tmp_path / "reviews.csv", frame)
    with pytest.raises(
        DataError,
        match=r"2 row\(s\) of .*reviews\.csv have empty text in column 'review' "
        r"\(0-based rows 1, 3\)\. Hint: drop those rows",
    ):
        load(path)


def test_regression_on_text_labels_is_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path / "t.csv", pd.DataFrame({"a": [1, 2, 3], "label": ["x", "y", "x"]}))
    with pytest.raises(
        DataError, match=r"label column 'label' of .*t\.csv is not numeric.*drop --task regression"
    ):
        load(path, task="regression")


# ----------------------------------------------------------------- splits


def _small_iris(per_class: tuple[int, int, int]) -> Dataset:
    iris = load("iris")
    idx = np.concatenate([np.flatnonzero(iris.y == c)[:n] for c, n in enumerate(per_class)])
    return iris.subset(idx)


@pytest.mark.parametrize("count", [1, 2])
def test_split_needs_three_examples_per_class(count: int) -> None:
    data = _small_iris((40, 40, count))
    with pytest.raises(
        DataError,
        match=rf"class 'virginica' of iris has {count} example\(s\); a stratified "
        r"train/validation/test split needs at least 3 per class\. Hint: add examples of "
        r"'virginica'",
    ):
        split(data)


def test_split_with_exactly_three_per_class_passes_the_class_check() -> None:
    data = _small_iris((40, 40, 3))
    parts = split(data)
    assert sum(len(p) for p in (parts.train, parts.validation, parts.test)) == 83


def test_split_with_a_tiny_fraction_still_puts_every_class_in_every_part() -> None:
    parts = split(load("iris"), validation=0.01)
    assert parts.validation.class_counts() == {"setosa": 1, "versicolor": 1, "virginica": 1}


@pytest.mark.parametrize(
    ("validation", "test", "pattern"),
    [
        (0.0, 0.2, r"validation fraction must be in \(0, 1\), got 0\.0"),
        (0.1, 1.0, r"test fraction must be in \(0, 1\), got 1\.0"),
        (0.5, 0.5, r"must leave rows for training, got 0\.5 \+ 0\.5"),
    ],
)
def test_split_fraction_errors(validation: float, test: float, pattern: str) -> None:
    with pytest.raises(InvalidInputError, match=pattern):
        split(load("iris"), validation=validation, test=test)


def test_kfold_class_smaller_than_k() -> None:
    data = _small_iris((10, 10, 4))
    with pytest.raises(
        DataError,
        match=r"class 'virginica' of iris has 4 example\(s\); 5-fold cross-validation needs at "
        r"least 5 per class",
    ):
        next(kfold(data, k=5))
    # the same data is fine for k=4
    assert len(list(kfold(data, k=4))) == 4


def test_kfold_needs_k_at_least_two() -> None:
    with pytest.raises(InvalidInputError, match=re.escape("K-fold needs k >= 2, got 1")):
        next(kfold(load("iris"), k=1))


def test_kfold_more_folds_than_rows() -> None:
    data = load("diabetes").subset(range(6))
    with pytest.raises(DataError, match=r"k=10 needs at least 10 rows; diabetes has 6"):
        next(kfold(data, k=10))


@pytest.mark.parametrize("source", ["iris", "digits"])
def test_file_only_options_are_refused_for_builtins(source: str) -> None:
    with pytest.raises(InvalidInputError, match=r"--label-column apply only to .* files"):
        load(source, label_column="foo")


def test_empty_source_is_refused() -> None:
    with pytest.raises(NotFoundError, match=r"data source is empty"):
        load("")

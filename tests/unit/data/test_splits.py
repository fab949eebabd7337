"""Seeded, stratified train/validation/test splits and K-fold."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tuneserve.data import Dataset, kfold, load, split


def _with_row_ids(data: Dataset) -> Dataset:
    """Add a ``row`` feature holding each row's original index, to trace it through splits."""
    return replace(data, X=data.X.assign(row=np.arange(len(data))))


def _rows(part: Dataset) -> np.ndarray:
    return part.X["row"].to_numpy()


@pytest.fixture(scope="module")
def wine() -> Dataset:
    return _with_row_ids(load("wine"))


@pytest.fixture(scope="module")
def diabetes() -> Dataset:
    return _with_row_ids(load("diabetes"))


def test_same_seed_gives_same_split(wine: Dataset) -> None:
    a, b = split(wine, seed=7), split(wine, seed=7)
    for name in ("train", "validation", "test"):
        np.testing.assert_array_equal(_rows(getattr(a, name)), _rows(getattr(b, name)))
        assert getattr(a, name).fingerprint == getattr(b, name).fingerprint


def test_different_seed_gives_different_split(wine: Dataset) -> None:
    a, b = split(wine, seed=0), split(wine, seed=1)
    assert set(_rows(a.test)) != set(_rows(b.test))
    assert set(_rows(a.validation)) != set(_rows(b.validation))


def test_parts_are_disjoint_and_cover_all_rows(wine: Dataset) -> None:
    parts = split(wine, validation=0.15, test=0.25, seed=3)
    train, val, test = _rows(parts.train), _rows(parts.validation), _rows(parts.test)
    assert not set(train) & set(val)
    assert not set(train) & set(test)
    assert not set(val) & set(test)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val, test])), np.arange(178))
    # rows keep their labels and stay in original order inside each part
    for part, rows in ((parts.train, train), (parts.validation, val), (parts.test, test)):
        np.testing.assert_array_equal(part.y, wine.y[rows])
        assert np.all(np.diff(rows) > 0)
        assert part.label_names == wine.label_names


def test_part_sizes_follow_fractions(wine: Dataset) -> None:
    parts = split(wine, validation=0.1, test=0.2, seed=0)
    assert abs(len(parts.test) - 0.2 * 178) <= 1
    assert abs(len(parts.validation) - 0.1 * 178) <= 1
    assert len(parts.train) == 178 - len(parts.test) - len(parts.validation)
    assert parts.train.name == "wine[train]"
    assert parts.validation.name == "wine[validation]"
    assert parts.test.name == "wine[test]"


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_is_stratified(name: str, seed: int) -> None:
    data = load(name)
    parts = split(data, validation=0.1, test=0.2, seed=seed)
    totals = data.class_counts()
    for part, fraction in ((parts.train, 0.7), (parts.validation, 0.1), (parts.test, 0.2)):
        counts = part.class_counts()
        for cls, total in totals.items():
            assert abs(counts[cls] - total * fraction) <= 1, (part.name, cls, counts[cls])
            assert counts[cls] > 0


def test_split_of_image_data_keeps_arrays() -> None:
    digits = load("digits")
    parts = split(digits, seed=0)
    assert isinstance(parts.test.X, list)
    assert all(img.shape == (8, 8, 1) for img in parts.test.X)
    assert len(parts.train) + len(parts.validation) + len(parts.test) == 1797
    # every class in every part
    assert all(v > 0 for v in parts.validation.class_counts().values())


def test_regression_splits_without_stratification(diabetes: Dataset) -> None:
    # nearly every target value is unique, so a stratified split would be impossible
    parts = split(diabetes, seed=0)
    train, val, test = _rows(parts.train), _rows(parts.validation), _rows(parts.test)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val, test])), np.arange(442))
    assert abs(len(test) - 0.2 * 442) <= 1
    assert abs(len(val) - 0.1 * 442) <= 1
    assert parts.test.label_names is None
    assert parts.test.task == "regression"
    np.testing.assert_array_equal(parts.test.y, diabetes.y[test])


def test_tiny_regression_data_splits(diabetes: Dataset) -> None:
    tiny = diabetes.subset(range(10))
    parts = split(tiny, validation=0.2, test=0.2, seed=0)
    assert sorted([len(parts.train), len(parts.validation), len(parts.test)]) == [2, 2, 6]


# ----------------------------------------------------------------- K-fold


@pytest.mark.parametrize("k", [2, 5, 10])
def test_kfold_holds_every_row_out_exactly_once(wine: Dataset, k: int) -> None:
    folds = list(kfold(wine, k=k, seed=0))
    assert len(folds) == k
    held = np.concatenate([_rows(h) for _, h in folds])
    np.testing.assert_array_equal(np.sort(held), np.arange(178))
    for train, held_out in folds:
        tr, ho = set(_rows(train)), set(_rows(held_out))
        assert not tr & ho
        assert len(tr) + len(ho) == 178
        np.testing.assert_array_equal(held_out.y, wine.y[_rows(held_out)])


def test_kfold_folds_are_stratified(wine: Dataset) -> None:
    k = 5
    totals = wine.class_counts()
    for train, held_out in kfold(wine, k=k, seed=0):
        counts = held_out.class_counts()
        for cls, total in totals.items():
            assert abs(counts[cls] - total / k) <= 1, (held_out.name, cls, counts[cls])
        train_counts = train.class_counts()
        for cls, total in totals.items():
            assert abs(train_counts[cls] - total * (k - 1) / k) <= 1


def test_kfold_is_seeded(wine: Dataset) -> None:
    a = [_rows(h) for _, h in kfold(wine, k=4, seed=11)]
    b = [_rows(h) for _, h in kfold(wine, k=4, seed=11)]
    c = [_rows(h) for _, h in kfold(wine, k=4, seed=12)]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(set(x) != set(z) for x, z in zip(a, c, strict=True))


def test_kfold_names_folds(wine: Dataset) -> None:
    names = [(t.name, h.name) for t, h in kfold(wine, k=3)]
    assert names[1] == ("wine[fold 1 train]", "wine[fold 1 held out]")


def test_kfold_regression(diabetes: Dataset) -> None:
    folds = list(kfold(diabetes, k=4, seed=0))
    held = np.concatenate([_rows(h) for _, h in folds])
    np.testing.assert_array_equal(np.sort(held), np.arange(442))
    assert sorted({len(h) for _, h in folds}) == [110, 111]


@pytest.mark.parametrize("seed", range(5))
def test_rare_class_is_in_every_part(seed: int) -> None:
    import pandas as pd

    y = np.array([0] * 100 + [1] * 3)
    data = Dataset(
        name="rare",
        modality="table",
        task="classification",
        X=pd.DataFrame({"x": np.arange(103, dtype=float)}),
        y=y,
        label_names=("big", "tiny"),
        source="test",
    )
    parts = split(data, validation=0.1, test=0.2, seed=seed)
    for part in (parts.train, parts.validation, parts.test):
        assert part.class_counts()["tiny"] == 1, part.name
    assert len(parts.test) == round(103 * 0.2)
    assert len(parts.validation) == round(103 * 0.1)

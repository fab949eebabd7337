"""Built-in data sets: shape, task, classes, pixel scaling, and fingerprint stability."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tuneserve.data import BUILTIN_DATASETS, load

# name -> (modality, task, rows, classes, feature columns)
EXPECTED = {
    "digits": ("image", "classification", 1797, 10, None),
    "breast_cancer": ("table", "classification", 569, 2, 30),
    "wine": ("table", "classification", 178, 3, 13),
    "iris": ("table", "classification", 150, 3, 4),
    "diabetes": ("table", "regression", 442, 0, 10),
}


def test_every_builtin_is_covered() -> None:
    assert set(BUILTIN_DATASETS) == set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_builtin_loads_with_expected_shape(name: str) -> None:
    modality, task, rows, classes, features = EXPECTED[name]
    data = load(name)

    assert data.name == name
    assert data.source == name
    assert data.modality == modality
    assert data.task == task
    assert len(data) == rows
    assert data.num_classes == classes
    if task == "classification":
        assert data.y.dtype == np.int64
        assert data.label_names is not None and len(data.label_names) == classes
        # every class code is used and indexes label_names
        assert sorted(np.unique(data.y).tolist()) == list(range(classes))
        assert sum(data.class_counts().values()) == rows
    else:
        assert data.y.dtype == np.float64
        assert data.label_names is None
        assert data.class_counts() == {}
    if modality == "table":
        assert data.X.shape == (rows, features)
        assert all(isinstance(c, str) for c in data.X.columns)
    else:
        assert len(data.X) == rows


def test_class_names_are_the_real_names() -> None:
    assert load("iris").label_names == ("setosa", "versicolor", "virginica")
    assert load("breast_cancer").label_names == ("malignant", "benign")
    assert load("wine").label_names == ("class_0", "class_1", "class_2")
    assert load("digits").label_names == tuple(str(d) for d in range(10))


def test_iris_class_balance() -> None:
    assert load("iris").class_counts() == {"setosa": 50, "versicolor": 50, "virginica": 50}


def test_digits_pixels_are_scaled_8x8_grayscale() -> None:
    data = load("digits")
    stacked = np.stack(data.X)
    assert stacked.shape == (1797, 8, 8, 1)
    assert stacked.dtype == np.float32
    assert float(stacked.min()) == 0.0
    assert float(stacked.max()) == 1.0
    # raw pixel values are 0..16, so every scaled value is a multiple of 1/16
    np.testing.assert_allclose(stacked * 16, np.round(stacked * 16), atol=1e-5)
    assert all(img.shape == (8, 8, 1) for img in data.X)


def test_diabetes_targets_are_continuous() -> None:
    y = load("diabetes").y
    assert len(np.unique(y)) > 50
    assert 25.0 <= y.min() < y.max() <= 346.0


@pytest.mark.parametrize("name", ["iris", "diabetes", "digits"])
def test_fingerprint_is_stable_across_loads(name: str) -> None:
    first, second = load(name), load(name)
    assert first.fingerprint == second.fingerprint
    assert first.fingerprint.startswith("sha256:")
    assert len(first.fingerprint) == len("sha256:") + 64


def test_fingerprints_differ_between_datasets() -> None:
    prints = {load(name).fingerprint for name in BUILTIN_DATASETS}
    assert len(prints) == len(BUILTIN_DATASETS)


def test_fingerprint_changes_when_one_table_value_changes() -> None:
    data = load("wine")
    changed = data.X.copy()
    changed.iloc[17, 3] = changed.iloc[17, 3] + 0.5
    assert replace(data, X=changed).fingerprint != data.fingerprint
    # an unchanged copy keeps the fingerprint (it hashes content, not identity)
    assert replace(data, X=data.X.copy()).fingerprint == data.fingerprint


def test_fingerprint_changes_when_one_label_changes() -> None:
    data = load("iris")
    y = data.y.copy()
    y[0] = (y[0] + 1) % 3
    assert replace(data, y=y).fingerprint != data.fingerprint


def test_fingerprint_changes_when_one_image_pixel_changes() -> None:
    data = load("digits")
    images = [img.copy() for img in data.X]
    images[100][3, 4, 0] = 1.0 - images[100][3, 4, 0]
    assert replace(data, X=images).fingerprint != data.fingerprint
    assert replace(data, X=[img.copy() for img in data.X]).fingerprint == data.fingerprint

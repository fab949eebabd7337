"""Supervised transfer: train on a source task, continue from its package on a target."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tuneserve.data import load
from tuneserve.exceptions import InvalidInputError, NotFoundError
from tuneserve.exporters import load_weights
from tuneserve.package import Package
from tuneserve.training import CNNConfig, train, train_cnn


@pytest.fixture(scope="module")
def source_package(tmp_path_factory):
    digits = load("digits").select_classes(["0", "1", "2", "3", "4"])
    result = train(digits, tmp_path_factory.mktemp("src") / "source", config=CNNConfig(epochs=5))
    return result.package


def test_from_package_starts_from_its_weights(source_package):
    target = load("digits").select_classes(["5", "6", "7", "8", "9"])
    few, rest = target.sample_per_class(10, seed=0)
    val, _ = rest.sample_per_class(10, seed=1)
    tuned = train_cnn(
        few, val, CNNConfig(epochs=1, learning_rate=1e-9, augment=False), init=source_package
    )
    source = load_weights(source_package)
    # with a negligible learning rate, the body is still the source's; the head is new
    for key, value in tuned.model.state_dict().items():
        if key.startswith("head.4"):
            assert value.shape[0] == 5
        else:
            torch.testing.assert_close(value, source[key], atol=1e-6, rtol=0)
    assert tuned.lineage.parent == source_package.id
    assert tuned.preprocessor.spec() == source_package.manifest.preprocessing


def test_train_from_records_the_parent_and_learns(source_package, tmp_path):
    target = load("digits").select_classes(["5", "6", "7", "8", "9"])
    result = train(
        target,
        tmp_path / "target",
        init=source_package.path,
        config=CNNConfig(epochs=8),
        guard=False,
    )
    assert result.package.manifest.lineage.parent == source_package.id
    assert result.package.manifest.label_names == ["5", "6", "7", "8", "9"]
    assert result.test_metrics["test_accuracy"] > 0.9


def test_from_a_package_of_another_modality_is_refused(source_package, cancer_package, tmp_path):
    with pytest.raises(
        InvalidInputError, match=r"was trained on table data, but this data set is image"
    ):
        train("digits", tmp_path / "x", init=cancer_package)
    with pytest.raises(NotFoundError, match="carries no torch weights"):
        load_weights(Package.load(cancer_package))


def test_select_classes_and_sample_per_class():
    digits = load("digits")
    part = digits.select_classes(["7", "3"])
    assert part.label_names == ("7", "3")
    assert set(np.unique(part.y)) == {0, 1}
    assert part.class_counts() == {"7": 179, "3": 183}
    few, rest = part.sample_per_class(4, seed=0)
    assert few.class_counts() == {"7": 4, "3": 4}
    assert len(few) + len(rest) == len(part)
    again, _ = part.sample_per_class(4, seed=0)
    assert np.array_equal(again.y, few.y) and again.fingerprint == few.fingerprint
    with pytest.raises(Exception, match="select_classes needs 2 or more"):
        digits.select_classes(["7", "x"])

"""Incremental updates (``--update``): sgd with partial_fit, the MLP with the loop."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tuneserve.data import load
from tuneserve.exceptions import DataError, InvalidInputError, NotFoundError
from tuneserve.exporters import PARITY_TOLERANCE, load_estimator, load_weights
from tuneserve.package import Package
from tuneserve.runtime import Predictor
from tuneserve.training import TrainConfig, train, update


def _old_and_new(name: str, old_rows: int, seed: int = 0):
    data = load(name)
    order = np.random.default_rng(seed).permutation(len(data))
    return data.subset(order[:old_rows], "old"), data.subset(order[old_rows:], "new")


def _check_parity(result) -> None:
    test = result.splits.test
    served = Predictor(result.package)
    if result.trained.task == "classification":
        got = served.predict_proba(test.X)
    else:
        got = served.run(test.X)
    want = result.trained.predict_proba(test.X)
    assert np.max(np.abs(got - want)) <= PARITY_TOLERANCE * max(1.0, np.abs(want).max())


def test_sgd_update_learns_from_new_rows(tmp_path):
    old, new = _old_and_new("breast_cancer", 40)
    first = train(old, tmp_path / "v1", backbone="sgd")
    assert (first.package.path / "extras/estimator.skops").is_file()
    coef = load_estimator(first.package).coef_.copy()

    result = update(new, first.package.path, tmp_path / "v2")
    manifest = result.package.manifest
    assert manifest.lineage.parent == first.package.id
    assert manifest.label_names == first.package.manifest.label_names
    record = manifest.lineage.update
    assert record is not None and record.parent == first.package.id
    assert record.before == result.before
    before, after = record.before["test_accuracy"], result.test_metrics["test_accuracy"]
    old_probs = Predictor(first.package).predict_proba(result.splits.test.X)
    assert before == pytest.approx(np.mean(old_probs.argmax(1) == result.splits.test.y))
    assert after >= before and after > 0.9
    assert len(manifest.lineage.history) == 10  # passes over the new rows
    # the rows the update held out are recorded: evaluate scores exactly these
    assert manifest.lineage.held_out is not None
    assert manifest.lineage.held_out.data_fingerprint == new.fingerprint
    assert not np.allclose(load_estimator(result.package).coef_, coef)
    _check_parity(result)
    # the preprocessing is the package's: the same scaling as the first version
    assert manifest.preprocessing == first.package.manifest.preprocessing


def test_update_with_some_classes_keeps_all_of_them(tmp_path):
    wine = load("wine")
    first = train(wine, tmp_path / "v1", backbone="sgd")
    two = wine.select_classes(["class_0", "class_2"])
    result = update(two, first.package.path, tmp_path / "v2", passes=3)
    assert result.package.manifest.label_names == ["class_0", "class_1", "class_2"]
    assert set(np.unique(result.splits.test.y)) == {0, 2}  # recoded to the package's codes
    assert Predictor(result.package).predict_proba(two.X[:5]).shape == (5, 3)


def test_mlp_update_continues_its_weights(tmp_path):
    old, new = _old_and_new("breast_cancer", 100)
    config = TrainConfig(epochs=15, learning_rate=1e-3, patience=None)
    first = train(old, tmp_path / "v1", backbone="mlp", config=config)
    result = update(new, first.package.path, tmp_path / "v2", config=replace(config, epochs=5))
    assert result.package.manifest.lineage.parent == first.package.id
    assert result.test_metrics["test_accuracy"] > 0.9
    start, end = load_weights(first.package), load_weights(result.package)
    assert start.keys() == end.keys()
    assert not torch.equal(start["net.0.weight"], end["net.0.weight"])
    _check_parity(result)


def test_mlp_regression_update_keeps_the_target_scale(tmp_path):
    old, new = _old_and_new("diabetes", 150)
    config = TrainConfig(epochs=30, learning_rate=1e-3, patience=None)
    first = train(old, tmp_path / "v1", backbone="mlp", config=config)
    result = update(new, first.package.path, tmp_path / "v2", config=replace(config, epochs=5))
    model_config = result.package.manifest.lineage.backbone.model_arguments
    first_config = first.package.manifest.lineage.backbone.model_arguments
    assert model_config["target_mean"] == first_config["target_mean"]
    assert result.test_metrics["test_mse"] < np.var(result.splits.test.y)
    _check_parity(result)


def test_mlp_from_package_gets_a_new_head(tmp_path):
    wine = load("wine")
    source = train(
        wine.select_classes(["class_0", "class_1"]),
        tmp_path / "src",
        backbone="mlp",
        config=TrainConfig(epochs=10, patience=None),
    )
    target = train(
        wine,
        tmp_path / "dst",
        init=source.package.path,
        config=TrainConfig(epochs=10, patience=None),
        guard=False,
    )
    assert target.package.manifest.lineage.parent == source.package.id
    assert target.trained.model.net[-1].out_features == 3
    _check_parity(target)


def test_bad_updates_are_refused(tmp_path):
    wine = load("wine")
    logreg = train(wine, tmp_path / "logreg", backbone="logreg")
    with pytest.raises(InvalidInputError, match="continues sgd and mlp packages"):
        update(wine, logreg.package.path, tmp_path / "x")
    with pytest.raises(NotFoundError, match="keeps no scikit-learn estimator"):
        load_estimator(Package.load(logreg.package.path))
    sgd = train(wine, tmp_path / "sgd", backbone="sgd")
    with pytest.raises(InvalidInputError, match="table classification model, but"):
        update("diabetes", sgd.package.path, tmp_path / "x")
    renamed = wine.select_classes(["class_0", "class_1"])
    renamed = replace(renamed, label_names=("red", "white"))
    with pytest.raises(DataError, match=r"labels \['red', 'white'\] that package"):
        update(renamed, sgd.package.path, tmp_path / "x")
    with pytest.raises(InvalidInputError, match="passes must be >= 1"):
        update(wine, sgd.package.path, tmp_path / "x", passes=0)

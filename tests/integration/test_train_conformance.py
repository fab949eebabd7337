"""Every table backbone, trained through ``train``, gives a package with parity and skill.

One conformance suite over the registry: a backbone added later is tested here too.
"""

from __future__ import annotations

import numpy as np
import pytest

from tuneserve.backbones import list_backbones
from tuneserve.exporters import PARITY_TOLERANCE
from tuneserve.runtime import Predictor
from tuneserve.training import TrainConfig, default_config, train

TABLE_BACKBONES = [s.name for s in list_backbones("table")]


@pytest.mark.parametrize("backbone", TABLE_BACKBONES)
def test_table_backbone_classifies_breast_cancer(backbone, tmp_path):
    config = default_config(backbone, "full", epochs=30) if backbone == "mlp" else None
    result = train("breast_cancer", tmp_path / backbone, backbone=backbone, config=config)
    probs = Predictor(result.package).predict_proba(result.splits.test.X)
    assert (
        np.max(np.abs(probs - result.trained.predict_proba(result.splits.test.X)))
        <= PARITY_TOLERANCE
    )
    assert result.test_metrics["test_accuracy"] == pytest.approx(
        np.mean(probs.argmax(1) == result.splits.test.y)
    )
    assert result.test_metrics["test_accuracy"] > 0.9
    manifest = result.package.manifest
    assert manifest.metrics["test_accuracy"] == result.test_metrics["test_accuracy"]
    assert manifest.lineage.backbone.name == backbone
    assert manifest.lineage.data_fingerprint == result.splits.train.fingerprint


@pytest.mark.parametrize("backbone", TABLE_BACKBONES)
def test_table_backbone_regresses_diabetes(backbone, tmp_path):
    config = default_config(backbone, "full", epochs=60) if backbone == "mlp" else None
    result = train("diabetes", tmp_path / backbone, backbone=backbone, config=config)
    values = Predictor(result.package).run(result.splits.test.X)
    np.testing.assert_allclose(
        values, result.trained.predict_proba(result.splits.test.X), rtol=1e-4
    )
    baseline = float(np.var(result.splits.test.y))  # predicting the mean
    assert result.test_metrics["test_mse"] < 0.8 * baseline


def test_mlp_history_and_best_epoch_are_recorded(tmp_path):
    result = train(
        "wine",
        tmp_path / "mlp",
        backbone="mlp",
        config=TrainConfig(epochs=8, learning_rate=1e-3, patience=None),
    )
    lineage = result.package.manifest.lineage
    assert len(lineage.history) == 8
    assert lineage.best_epoch is not None and 1 <= lineage.best_epoch <= 8
    assert {"train_loss", "val_loss", "val_accuracy", "lr"} <= set(lineage.history[0])


def test_existing_out_is_refused_before_training(tmp_path):
    from tuneserve.exceptions import PackageError

    (tmp_path / "taken").mkdir()
    with pytest.raises(PackageError, match="already exists"):
        train("this-data-is-never-loaded", tmp_path / "taken")


def test_calibrated_svm_adapts_its_folds_to_small_classes(tmp_path):
    from tuneserve.training import train_sklearn

    iris = load_iris_small()
    trained = train_sklearn(iris, iris, backbone="linear-svm")
    assert trained.model.get_params()["cv"] == 3
    assert trained.metrics["val_accuracy"] > 0.5


def load_iris_small():
    from tuneserve.data import load

    iris = load("iris")
    keep = np.concatenate([np.flatnonzero(iris.y == c)[:3] for c in range(3)])
    return iris.subset(keep)

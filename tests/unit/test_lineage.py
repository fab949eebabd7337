"""Typed lineage: what stages tell each other travels in typed manifest fields, and
packages of the earlier format (everything in one ``training_config`` dict) still load.

tests/data/format2/ holds packages written by tuneserve before format 3 (commit be318f0):
``train iris -b logreg``, ``train wine -b mlp``, the folds of a 3-fold ``cv iris -b logreg``
and a soft-vote ensemble of a logreg and a random forest on iris.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tuneserve.lineage import Backbone, HeldOut, Lineage, Split
from tuneserve.package import FORMAT_VERSION, Package

OLD = Path(__file__).parents[1] / "data" / "format2"


def test_format_2_packages_load_verified_into_typed_fields():
    package = Package.load(OLD / "iris-logreg")  # checksums and id verified as stored
    assert package.manifest.format_version == 2
    lineage = package.manifest.lineage
    assert lineage.trainer == "train_sklearn"
    assert lineage.backbone is not None
    assert (lineage.backbone.name, lineage.backbone.strategy) == ("logreg", "fit")
    assert lineage.backbone.model_class == "LogisticRegression"
    assert lineage.backbone.model_arguments["max_iter"] == "2000"
    assert lineage.split == Split(seed=0, validation=0.1, test=0.2)
    assert lineage.held_out is None and lineage.fold is None
    assert lineage.config == {"seed": 0}  # only settings are left in config

    mlp = Package.load(OLD / "wine-mlp").manifest.lineage
    assert mlp.backbone is not None and mlp.backbone.model_class == "TableMLP"
    assert mlp.backbone.model_arguments["hidden"] == [128, 64]
    assert mlp.best_epoch is not None and len(mlp.history) >= mlp.best_epoch
    assert "history" not in mlp.config and mlp.config["epochs"] == 100

    fold = Package.load(OLD / "iris-cv" / "fold-1").manifest.lineage.fold
    assert fold is not None and (fold.fold, fold.folds, fold.seed) == (1, 3, 0)


def test_a_format_2_ensemble_loads_runs_and_keeps_its_held_out_rows():
    from tuneserve.data import load
    from tuneserve.evaluation import held_out_rows
    from tuneserve.runtime import Predictor

    raw = json.loads((OLD / "iris-ensemble" / "manifest.json").read_text())
    package = Package.load(OLD / "iris-ensemble")  # reading it must not alter what is hashed
    ensemble = package.manifest.lineage.ensemble
    assert ensemble is not None and len(ensemble.members) == 2
    assert ensemble.combiner == {"kind": "mean", "weights": [0.5, 0.5]}
    assert ensemble.selection["method"] == "soft-vote"
    assert raw["lineage"]["training_config"]["ensemble"]["members"]  # the stored dict intact
    iris = load("iris")
    rows, what = held_out_rows(package, iris, "auto")
    assert len(rows) == 15 and "held out" in what
    assert Predictor(package).predict_proba(iris.X[:3]).shape == (3, 3)


def test_rewriting_an_old_package_writes_the_current_format(tmp_path):
    old = Package.load(OLD / "iris-logreg")
    files = {name: old.path / name for name in old.manifest.files}
    new = Package.write(tmp_path / "copy", old.manifest, files)
    raw = json.loads((new.path / "manifest.json").read_text())
    assert raw["format_version"] == FORMAT_VERSION == 3
    assert "training_config" not in raw["lineage"]
    assert raw["lineage"]["backbone"]["name"] == "logreg"
    assert Package.load(new.path).manifest.lineage == old.manifest.lineage


def test_evaluate_finds_the_held_out_rows_of_old_packages():
    from tuneserve.data import load, split_indices
    from tuneserve.evaluation import held_out_rows

    iris = load("iris")
    rows, what = held_out_rows(Package.load(OLD / "iris-logreg"), iris, "auto")
    _, _, test_idx = split_indices(iris, seed=0, validation=0.1, test=0.2)
    assert np.array_equal(rows, test_idx) and "held-out test split" in what
    rows, what = held_out_rows(Package.load(OLD / "iris-cv" / "fold-1"), iris, "auto")
    assert len(rows) == 50 and what.startswith("fold 1 of 3")


def test_new_packages_record_their_held_out_rows(tmp_path, monkeypatch):
    from tuneserve.data import load, split_indices
    from tuneserve.evaluation import _evaluate
    from tuneserve.training import train

    iris = load("iris")
    result = train(iris, tmp_path / "p", backbone="logreg", seed=3, test=0.3)
    lineage = result.package.manifest.lineage
    _, _, test_idx = split_indices(iris, seed=3, validation=0.1, test=0.3)
    assert lineage.held_out == HeldOut(
        data_fingerprint=iris.fingerprint,
        rows=test_idx.tolist(),
        what="the held-out test split of the training run (30% of rows, seed 3)",
    )
    assert lineage.split == Split(seed=3, validation=0.1, test=0.3)

    def no_resplit(*args, **kwargs):
        raise AssertionError("evaluate must read the recorded rows, not split again")

    monkeypatch.setattr(_evaluate, "split_indices", no_resplit)
    rows, _ = _evaluate.held_out_rows(result.package, iris, "test")
    assert rows.tolist() == test_idx.tolist()


def test_train_from_an_old_mlp_package(tmp_path):
    from tuneserve.training import train

    result = train(
        "wine",
        tmp_path / "tuned",
        init=OLD / "wine-mlp",
        settings={"epochs": 2},
        seed=1,
        guard=False,
    )
    lineage = result.package.manifest.lineage
    assert lineage.parent == Package.load(OLD / "wine-mlp").id
    assert lineage.backbone is not None and lineage.backbone.name == "mlp"
    assert lineage.config["epochs"] == 2 and len(lineage.history) <= 2


def test_a_damaged_old_manifest_is_still_refused(tmp_path):
    from tuneserve.exceptions import ChecksumError

    copy = shutil.copytree(OLD / "iris-logreg", tmp_path / "p")
    raw = json.loads((copy / "manifest.json").read_text())
    raw["lineage"]["training_config"]["backbone"] = "random-forest"
    (copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ChecksumError, match="changed after the package was written"):
        Package.load(copy)


def test_lineage_ignores_keys_from_a_newer_writer():
    lineage = Lineage.model_validate({"backbone": {"name": "cnn", "future": 1}, "other": 2})
    assert lineage.backbone == Backbone(name="cnn")

"""K-fold cross-validation through the runtime: stratified folds, out-of-fold predictions,
resume, files and reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tuneserve.data import load
from tuneserve.evaluation import cross_validate, load_oof
from tuneserve.exceptions import DataError, InvalidInputError, PackageError
from tuneserve.runtime import Predictor


@pytest.fixture(scope="module")
def wine_cv(tmp_path_factory):
    out = tmp_path_factory.mktemp("cv") / "wine"
    return cross_validate("wine", backbone="logreg", folds=4, seed=3, out=out, bootstrap=50), out


def test_folds_are_stratified_and_every_row_is_held_out_once(wine_cv):
    result, _ = wine_cv
    data = load("wine")
    assert sorted(np.unique(result.fold_of)) == [0, 1, 2, 3]
    overall = np.bincount(data.y) / len(data)
    for k in range(4):
        held = data.y[result.fold_of == k]
        assert abs(len(held) - len(data) / 4) <= 1
        share = np.bincount(held, minlength=3) / len(held)
        assert np.abs(share - overall).max() < 0.05  # each fold keeps the class balance


def test_out_of_fold_predictions_come_from_the_fold_packages(wine_cv):
    result, out = wine_cv
    data = load("wine")
    for k, package in enumerate(result.packages):
        rows = np.flatnonzero(result.fold_of == k)
        held = data.subset(rows)
        want = Predictor(package).predict_proba(held.X)
        np.testing.assert_allclose(result.oof[rows], want, atol=1e-6)
        fold = result.fold_metrics[k]
        assert fold["accuracy"] == pytest.approx(np.mean(want.argmax(1) == held.y))
    accuracy = [m["accuracy"] for m in result.fold_metrics]
    summary = result.summary["accuracy"]
    assert summary["mean"] == pytest.approx(np.mean(accuracy))
    assert summary["std"] == pytest.approx(np.std(accuracy, ddof=1))
    assert summary["low"] <= summary["mean"] <= summary["high"] <= 1.0
    assert result.pooled["accuracy"].value == pytest.approx(
        np.mean(result.oof.argmax(1) == result.y)
    )
    saved = load_oof(out)
    np.testing.assert_array_equal(saved["oof"], result.oof)
    np.testing.assert_array_equal(saved["fold_of"], result.fold_of)
    assert list(saved["labels"]) == result.labels
    assert json.loads((out / "cv.json").read_text())["folds"] == 4
    assert (out / "report.html").read_text().count("data:image/png;base64") >= 5


def test_resume_reuses_finished_folds(wine_cv):
    result, out = wine_cv
    stamps = {p: (out / f"fold-{k}" / "manifest.json").stat().st_mtime_ns
              for k, p in enumerate(result.packages)}  # fmt: skip
    (out / "fold-2" / "manifest.json").unlink()  # as if killed while writing fold 2
    again = cross_validate(
        "wine", backbone="logreg", folds=4, seed=3, out=out, resume=True, bootstrap=50
    )
    for k, package in enumerate(result.packages):
        mtime = (out / f"fold-{k}" / "manifest.json").stat().st_mtime_ns
        assert (mtime == stamps[package]) == (k != 2)  # only fold 2 was trained again
    np.testing.assert_allclose(again.oof, result.oof, atol=1e-6)


def _stamps(out, folds):
    return [(out / f"fold-{k}" / "manifest.json").stat().st_mtime_ns for k in range(folds)]


def test_resume_reuses_folds_whose_loop_seed_differs_from_the_split_seed(tmp_path):
    from tuneserve.training import TrainConfig

    config = TrainConfig(epochs=2, seed=0, learning_rate=1e-3)
    options = {"backbone": "mlp", "folds": 3, "seed": 1, "config": config, "bootstrap": 0}
    cross_validate("iris", out=tmp_path / "cv", **options)
    before = _stamps(tmp_path / "cv", 3)
    cross_validate("iris", out=tmp_path / "cv", resume=True, **options)
    assert _stamps(tmp_path / "cv", 3) == before  # nothing trained again


def test_resume_reuses_the_folds_of_a_format_2_cross_validation(tmp_path):
    import shutil
    from pathlib import Path

    old = Path(__file__).parents[1] / "data" / "format2" / "iris-cv"
    out = shutil.copytree(old, tmp_path / "cv")
    ids = [Predictor(out / f"fold-{k}").package.id for k in range(3)]
    before = _stamps(out, 3)
    result = cross_validate("iris", backbone="logreg", folds=3, out=out, resume=True, bootstrap=0)
    assert _stamps(out, 3) == before
    assert [Predictor(p).package.id for p in result.packages] == ids


def test_bad_requests_are_refused(tmp_path, wine_cv):
    _, out = wine_cv
    with pytest.raises(DataError, match="6-fold cross-validation needs at least 6 per class"):
        cross_validate(load("iris").subset(np.arange(0, 150, 10)), backbone="logreg", folds=6)
    with pytest.raises(PackageError, match="already exists"):
        cross_validate("wine", backbone="logreg", folds=4, out=out)
    with pytest.raises(InvalidInputError, match="folds >= 2"):
        cross_validate("wine", backbone="logreg", folds=1)
    with pytest.raises(PackageError, match=r"oof\.npz not found"):
        load_oof(tmp_path)


def test_a_fold_package_is_evaluated_on_its_own_fold_and_force_is_careful(wine_cv, tmp_path):
    from tuneserve.evaluation import evaluate

    result, _ = wine_cv
    scored = evaluate(result.packages[1], "wine", bootstrap=0)
    assert scored.rows == "fold 1 of 4, held out by cross-validation"
    assert len(scored.y) == int(np.sum(result.fold_of == 1))
    assert scored.metrics["accuracy"].value == pytest.approx(result.fold_metrics[1]["accuracy"])
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(PackageError, match="refusing to replace"):
        cross_validate("wine", backbone="logreg", folds=2, out=tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").exists()

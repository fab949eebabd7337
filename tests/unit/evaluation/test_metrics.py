"""Our metrics equal scikit-learn's on fixed predictions; intervals are seeded and sane."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics

from tuneserve.evaluation import expected_calibration_error, point_metrics, with_intervals


def _fixed(classes: int, rows: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, rows)
    logits = rng.normal(size=(rows, classes)) + 1.5 * np.eye(classes)[y]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, proba


@pytest.mark.parametrize("classes", [2, 4])
def test_classification_metrics_equal_scikit_learn(classes):
    y, proba = _fixed(classes)
    pred = proba.argmax(1)
    ours = point_metrics("classification", y, proba)
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(y, pred))
    averages = ["macro", "micro", "weighted"] + (["binary"] if classes == 2 else [])
    for average in averages:
        for name, fn in (
            ("precision", metrics.precision_score),
            ("recall", metrics.recall_score),
            ("f1", metrics.f1_score),
        ):
            want = fn(y, pred, average=average, zero_division=0)
            assert ours[f"{name}_{average}"] == pytest.approx(want), (name, average)
    auc = (
        metrics.roc_auc_score(y, proba[:, 1])
        if classes == 2
        else metrics.roc_auc_score(y, proba, multi_class="ovr")
    )
    assert ours["roc_auc"] == pytest.approx(auc)
    assert ours["log_loss"] == pytest.approx(metrics.log_loss(y, proba))


def test_regression_metrics_equal_scikit_learn():
    rng = np.random.default_rng(1)
    y = rng.normal(size=200)
    pred = y + rng.normal(scale=0.3, size=200)
    ours = point_metrics("regression", y, pred)
    assert ours["mse"] == pytest.approx(metrics.mean_squared_error(y, pred))
    assert ours["mae"] == pytest.approx(metrics.mean_absolute_error(y, pred))
    assert ours["r2"] == pytest.approx(metrics.r2_score(y, pred))


def test_expected_calibration_error_by_hand():
    # two bins used: confidence 0.9 (4 rows, 3 right) and 0.6 (2 rows, both right)
    proba = np.array([[0.9, 0.1]] * 4 + [[0.4, 0.6]] * 2)
    y = np.array([0, 0, 0, 1, 1, 1])
    want = 4 / 6 * abs(0.75 - 0.9) + 2 / 6 * abs(1.0 - 0.6)
    assert expected_calibration_error(y, proba) == pytest.approx(want)
    perfect = np.eye(2)[y]
    assert expected_calibration_error(y, perfect) == pytest.approx(0.0)


def test_bootstrap_intervals_are_seeded_and_hold_the_value():
    y, proba = _fixed(3, rows=200)
    first = with_intervals("classification", y, proba, rounds=120, seed=7)
    again = with_intervals("classification", y, proba, rounds=120, seed=7)
    other = with_intervals("classification", y, proba, rounds=40, seed=8)
    assert first == again and first != other
    for name, e in first.items():
        assert e.low is not None and e.high is not None
        assert e.low <= e.value <= e.high, name
    width = first["accuracy"].high - first["accuracy"].low
    assert 0.05 < width < 0.3  # about 2 * 1.96 * sqrt(p(1-p)/n) for n=200
    assert with_intervals("classification", y, proba, rounds=0)["accuracy"].low is None


def test_resamples_in_worker_processes_give_the_same_intervals():
    y, proba = _fixed(4, rows=150)
    counted: dict[int, list[int]] = {1: [], 2: [], -1: []}
    alone, spread, every_core = (
        with_intervals(
            "classification", y, proba, rounds=30, seed=3, n_jobs=n, progress=counted[n].append
        )
        for n in (1, 2, -1)
    )
    assert alone == spread == every_core and alone["roc_auc"].low is not None
    assert sum(counted[1]) == sum(counted[2]) == sum(counted[-1]) == 30
    assert len(counted[2]) < len(counted[1])  # the workers report pieces of resamples


def test_expected_calibration_error_on_bin_edges_and_rounding_above_one():
    y = np.array([0, 1, 0, 1, 1])
    proba = np.array([[0.6, 0.4], [0.2, 0.8], [0.8, 0.2], [0.4, 0.6], [0.0, 1.0 + 1e-7]])
    value = expected_calibration_error(y, proba, bins=5)  # edges 0.2, 0.4, ... exactly hit
    # bins: 0.6 -> [0.6, 0.8): rows 0 (right), 3 (right); 0.8 -> [0.8, 1]: rows 1, 2, 4
    want = 2 / 5 * abs(1.0 - 0.6) + 3 / 5 * abs(1.0 - (0.8 + 0.8 + 1.0) / 3)
    assert value == pytest.approx(want, abs=1e-6)

"""Metrics of predictions, from scikit-learn, with bootstrap confidence intervals.

Classification metrics take the true class indices and the predicted probabilities
(columns in label order); regression metrics take true and predicted values. Every
headline metric gets a percentile bootstrap 95% interval: rows are resampled with
replacement ``bootstrap`` times (seeded) and the metric is recomputed on each resample.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import sklearn
from sklearn import metrics

from tuneserve.exceptions import InvalidInputError

ECE_BINS = 15


@dataclass(frozen=True)
class Estimate:
    """A metric's value on all rows and its bootstrap 95% interval."""

    value: float
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "low": self.low, "high": self.high}


def normalized(proba: np.ndarray) -> np.ndarray:
    """Probabilities in float64 whose rows sum to 1: an ONNX graph's float32 softmax is
    off by ~1e-7, which scikit-learn's log loss warns about."""
    p = np.clip(np.asarray(proba, dtype=np.float64), 1e-15, 1.0)
    return p / p.sum(axis=1, keepdims=True)


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE (Guo et al. 2017): rows go to ``bins`` equal-width bins of their top
    probability (a confidence of 1 to the last); the gap between mean confidence and
    accuracy in each bin, weighted by its share of rows. scikit-learn has no ECE; its
    ``calibration_curve`` gives the same per-bin means but no bin sizes."""
    confidence = np.clip(np.asarray(proba, dtype=np.float64).max(axis=1), 0.0, 1.0)
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    ids = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    counts = np.bincount(ids, minlength=bins)
    used = counts > 0
    mean_confidence = np.bincount(ids, confidence, bins)[used] / counts[used]
    accuracy = np.bincount(ids, correct, bins)[used] / counts[used]
    return float(np.sum(counts[used] / len(y) * np.abs(accuracy - mean_confidence)))


def _classification(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    classes = proba.shape[1]
    labels = list(range(classes))
    pred = proba.argmax(axis=1)
    accuracy = metrics.accuracy_score(y, pred)
    out: dict[str, float] = {"accuracy": accuracy}
    # per-class values from scikit-learn; the averages combine them as scikit-learn does
    # (macro: mean, weighted: by support; micro equals accuracy for single-label data)
    p, r, f, support = metrics.precision_recall_fscore_support(
        y, pred, labels=labels, average=None, zero_division=0
    )
    weights = support / support.sum()
    for name, values in (("precision", p), ("recall", r), ("f1", f)):
        out[f"{name}_macro"] = values.mean()
        out[f"{name}_micro"] = accuracy
        out[f"{name}_weighted"] = float(np.dot(values, weights))
        if classes == 2:
            out[f"{name}_binary"] = values[1]
    if len(np.unique(y)) == classes:  # ROC-AUC needs every class among the true labels
        if classes == 2:
            out["roc_auc"] = metrics.roc_auc_score(y, proba[:, 1])
        else:
            out["roc_auc"] = metrics.roc_auc_score(
                y, proba, multi_class="ovr", average="macro", labels=labels
            )
    out["log_loss"] = metrics.log_loss(y, normalized(proba), labels=labels)
    out["ece"] = expected_calibration_error(y, proba)
    return {k: float(v) for k, v in out.items()}


def _regression(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    out = {
        "mse": metrics.mean_squared_error(y, pred),
        "mae": metrics.mean_absolute_error(y, pred),
    }
    if len(y) > 1:
        out["r2"] = metrics.r2_score(y, pred)
    return {k: float(v) for k, v in out.items()}


#: Metrics where a smaller value is better; every other metric is better when larger.
LOWER_IS_BETTER = frozenset({"log_loss", "ece", "mse", "mae"})
_AVERAGED = {"precision": metrics.precision_score, "recall": metrics.recall_score,
             "f1": metrics.f1_score}  # fmt: skip


def oriented(metric: str, value: float) -> float:
    """``value`` turned so that larger is better (losses and errors change sign)."""
    return -value if metric in LOWER_IS_BETTER else value


def metric_names(task: str, classes: int = 0) -> list[str]:
    """The metric names :func:`point_metrics` gives for ``task`` (and class count)."""
    if task != "classification":
        return ["mse", "mae", "r2"]
    averages = ["macro", "micro", "weighted"] + (["binary"] if classes == 2 else [])
    return [
        "accuracy",
        *(f"{m}_{a}" for m in ("precision", "recall", "f1") for a in averages),
        "roc_auc",
        "log_loss",
        "ece",
    ]


def check_metric(name: str, task: str, classes: int = 0) -> str:
    known = metric_names(task, classes)
    if name not in known:
        raise InvalidInputError(
            f"unknown metric {name!r} for {task}"
            + (f" with {classes} classes" if task == "classification" else "")
            + f"; known: {', '.join(known)}"
        )
    return name


def single_metric(task: str, name: str, y: np.ndarray, output: np.ndarray) -> float:
    """One metric (a name from :func:`metric_names`), cheaper than all of them."""
    if task != "classification":
        fn = {
            "mse": metrics.mean_squared_error,
            "mae": metrics.mean_absolute_error,
            "r2": metrics.r2_score,
        }[name]
        return float(fn(y, output))
    labels = list(range(output.shape[1]))
    if name == "roc_auc":
        if len(labels) == 2:
            return float(metrics.roc_auc_score(y, output[:, 1]))
        return float(metrics.roc_auc_score(y, output, multi_class="ovr", labels=labels))
    if name == "log_loss":
        return float(metrics.log_loss(y, normalized(output), labels=labels))
    if name == "ece":
        return expected_calibration_error(y, output)
    pred = output.argmax(axis=1)
    if name == "accuracy":
        return float(metrics.accuracy_score(y, pred))
    kind, average = name.rsplit("_", 1)
    extra: dict[str, Any] = {} if average == "binary" else {"labels": labels}
    return float(_AVERAGED[kind](y, pred, average=average, zero_division=0, **extra))


def point_metrics(task: str, y: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """Headline metrics on all rows (no intervals)."""
    return _classification(y, output) if task == "classification" else _regression(y, output)


#: Resamples run in worker processes when one by one they would take longer than this
#: (a worker takes about a second to start).
PARALLEL_AFTER_S = 2.0
#: Fewest resamples worth a worker process.
RESAMPLES_PER_WORKER = 50


def bootstrap(
    score: Callable[[np.ndarray], dict[str, float]],
    rows: int,
    rounds: int,
    seed: int,
    progress: Callable[[int], Any] | None = None,
    n_jobs: int | None = None,
) -> dict[str, list[float]]:
    """``score(indices)`` on ``rounds`` resamples of ``rows`` rows; values per metric.

    Resample ``i`` is drawn from its own seeded stream, so the values do not depend on how
    the resamples are spread over processes. ``n_jobs``: worker processes, as joblib counts
    them (-1: every core); None: the cores this process may use (container limits and
    affinity counted), at most one per :data:`RESAMPLES_PER_WORKER` resamples, when the
    resamples would take over :data:`PARALLEL_AFTER_S` seconds one by one (timed on the
    second, the first being a warm-up), else this process. ``progress(n)`` is called as
    each ``n`` resamples finish.
    """
    import joblib

    step = progress or (lambda n: None)
    results = _score_range(score, rows, seed, 0, min(1, rounds))  # warm-up
    started = time.perf_counter()
    results += _score_range(score, rows, seed, len(results), min(2, rounds))
    step(len(results))
    done = len(results)
    if n_jobs is None:
        slow = (time.perf_counter() - started) * (rounds - done) > PARALLEL_AFTER_S
        useful = (rounds - done) // RESAMPLES_PER_WORKER
        n_jobs = max(1, min(joblib.cpu_count(), useful)) if slow else 1
    n_jobs = max(1, min(joblib.effective_n_jobs(n_jobs), rounds - done))
    if n_jobs == 1:
        for i in range(done, rounds):
            results += _score_range(score, rows, seed, i, i + 1)
            step(1)
    else:
        size = max(1, -(-(rounds - done) // (4 * n_jobs)))  # 4 pieces per worker: a live bar
        pieces = [(a, min(a + size, rounds)) for a in range(done, rounds, size)]
        parallel = joblib.Parallel(n_jobs=n_jobs, return_as="generator")
        work = (joblib.delayed(_score_range)(score, rows, seed, a, b) for a, b in pieces)
        for part in parallel(work):
            results += part
            step(len(part))
    values: dict[str, list[float]] = {}
    for result in results:
        for name, value in result.items():
            values.setdefault(name, []).append(value)
    return values


def _score_range(
    score: Callable[[np.ndarray], dict[str, float]], rows: int, seed: int, start: int, stop: int
) -> list[dict[str, float]]:
    # the inputs were checked once already; skip scikit-learn's per-call validation
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        return [
            score(np.random.default_rng([seed, i]).integers(0, rows, rows))
            for i in range(start, stop)
        ]


def with_intervals(
    task: str,
    y: np.ndarray,
    output: np.ndarray,
    rounds: int = 1000,
    seed: int = 0,
    progress: Callable[[int], Any] | None = None,
    n_jobs: int | None = None,
) -> dict[str, Estimate]:
    """Headline metrics with percentile bootstrap 95% intervals (``rounds=0``: none).

    A resample that lacks a class has no ROC-AUC; that interval uses the resamples that
    have one."""
    point = point_metrics(task, y, output)
    if rounds <= 0 or len(y) < 2:
        return {name: Estimate(value) for name, value in point.items()}
    samples = bootstrap(
        lambda idx: point_metrics(task, y[idx], output[idx]), len(y), rounds, seed, progress, n_jobs
    )
    out = {}
    for name, value in point.items():
        drawn = samples.get(name, [])
        if len(drawn) < 2:
            out[name] = Estimate(value)
            continue
        low, high = np.percentile(drawn, [2.5, 97.5])
        out[name] = Estimate(value, float(low), float(high))
    return out


def per_class(y: np.ndarray, proba: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """Precision, recall, F1 and support per class, and the confusion matrix."""
    labels = list(range(len(label_names)))
    pred = proba.argmax(axis=1)
    p, r, f, s = metrics.precision_recall_fscore_support(
        y, pred, labels=labels, average=None, zero_division=0
    )
    return {
        "per_class": {
            name: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": metrics.confusion_matrix(y, pred, labels=labels).tolist(),
    }

"""Compare packages on the same rows, and test whether the best is really better."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sklearn

from tuneserve.data import DataLike, Dataset
from tuneserve.exceptions import InvalidInputError
from tuneserve.package import Package

from ._cost import Cost, package_cost
from ._evaluate import evaluate, held_out_part
from ._metrics import check_metric, oriented, single_metric
from ._scored import Evaluation, as_dataset

ALPHA = 0.05


@dataclass(frozen=True)
class Significance:
    """Is the best package better than the runner-up on ``metric``?

    ``method`` is McNemar's exact test (accuracy: the rows exactly one of the two gets
    right) or a paired bootstrap (other metrics: the same resampled rows for both).
    ``difference`` is best minus runner-up, oriented so that positive means better, with
    its 95% interval (paired bootstrap) and a two-sided ``p_value``.
    """

    best: str
    runner_up: str
    metric: str
    method: str
    difference: float
    p_value: float
    low: float | None = None
    high: float | None = None
    only_best_right: int | None = None
    only_runner_up_right: int | None = None

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "significant": self.significant}

    def sentence(self) -> str:
        verdict = "significantly" if self.significant else "not significantly"
        return (
            f"{self.best} is {verdict} better than {self.runner_up} on {self.metric} "
            f"({self.method}, p = {self.p_value:.3g}, difference {self.difference:+.4f})"
        )


@dataclass
class Comparison:
    """Evaluations (and costs) of several packages on the same rows, best first."""

    metric: str
    evaluations: list[Evaluation]
    costs: list[Cost | None]
    significance: Significance | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "ranking": [
                {
                    **e.to_dict(),
                    "cost": c.to_dict() if c is not None else None,
                }
                for e, c in zip(self.evaluations, self.costs, strict=True)
            ],
            "significance": self.significance.to_dict() if self.significance else None,
        }


def mcnemar(best: Evaluation, other: Evaluation) -> Significance:
    """McNemar's exact test: under "equally accurate", the rows only one of the two gets
    right split 50/50 between them (a two-sided binomial test, scipy)."""
    from scipy.stats import binomtest

    right_best = best.output.argmax(1) == best.y
    right_other = other.output.argmax(1) == other.y
    b = int(np.sum(right_best & ~right_other))
    c = int(np.sum(~right_best & right_other))
    p = float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return Significance(
        best.name, other.name, "accuracy", "McNemar exact", (b - c) / len(best.y), p,
        only_best_right=b, only_runner_up_right=c,
    )  # fmt: skip


def paired_bootstrap(
    best: Evaluation, other: Evaluation, metric: str, rounds: int, seed: int
) -> Significance:
    """Resample rows ``rounds`` times (the same rows for both packages) and look at the
    difference of ``metric``; p = twice the share of resamples on the losing side
    (counted as (k + 1) / (n + 1))."""
    rng = np.random.default_rng(seed)
    n = len(best.y)
    diffs = []
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        for _ in range(rounds):
            idx = rng.integers(0, n, n)
            try:
                a = single_metric(best.task, metric, best.y[idx], best.output[idx])
                b = single_metric(other.task, metric, other.y[idx], other.output[idx])
            except ValueError:  # e.g. ROC-AUC on a resample that lacks a class
                continue
            if not (np.isfinite(a) and np.isfinite(b)):  # newer scikit-learn: NaN instead
                continue
            diffs.append(oriented(metric, a) - oriented(metric, b))
    point = oriented(metric, best.metrics[metric].value) - oriented(
        metric, other.metrics[metric].value
    )
    if len(diffs) < 2:
        return Significance(best.name, other.name, metric, "paired bootstrap", point, 1.0)
    drawn = np.asarray(diffs)
    # (k + 1) / (n + 1): a p-value a finite resampling can support, never 0
    losing = min(int(np.sum(drawn <= 0)), int(np.sum(drawn >= 0)))
    p = min(1.0, 2 * (losing + 1) / (len(drawn) + 1))
    low, high = np.percentile(drawn, [2.5, 97.5])
    return Significance(
        best.name, other.name, metric, f"paired bootstrap, {len(diffs)} resamples", point, p,
        float(low), float(high),
    )  # fmt: skip


def _same_rows(
    evaluations: list[Evaluation], packages: list[Package], data: Dataset, rows: str
) -> None:
    scored = [held_out_part(p, data, rows)[0].fingerprint for p in packages]
    if len(set(scored)) > 1:
        raise InvalidInputError(
            "the packages would be scored on different rows of "
            f"{data.name} (each is scored on the test split of its own training run, and "
            "those differ). Hint: compare on rows=all, or on data none was trained on"
        )
    names = [e.name for e in evaluations]
    if len(set(names)) < len(names):
        raise InvalidInputError(f"two packages share a name ({', '.join(names)}); rename one")


def compare(
    packages: Sequence[str | Path | Package],
    data: DataLike,
    *,
    metric: str | None = None,
    rows: str = "auto",
    bootstrap: int = 1000,
    seed: int = 0,
    cost: bool = True,
    label_column: str | None = None,
    text_column: str | None = None,
) -> Comparison:
    """Evaluate every package on the same rows of ``data``, rank them by ``metric``
    (default: accuracy, or mse for regression), and test the best against the runner-up.

    Args:
        rows: As in :func:`evaluate`; with ``auto`` every package must have the same
            held-out rows (trained on the same split of ``data``) or none.
        cost: Also measure each package's size and latency (:func:`package_cost`).
    """
    if len(packages) < 2:
        raise InvalidInputError(f"compare needs two or more packages; got {len(packages)}")
    loaded = [p if isinstance(p, Package) else Package.load(p) for p in packages]
    tasks = {p.manifest.task for p in loaded}
    if len(tasks) > 1:
        raise InvalidInputError(f"the packages do different tasks ({', '.join(sorted(tasks))})")
    (task,) = tasks
    label_sets = {frozenset(p.manifest.label_names or ()) for p in loaded}  # any order
    if len(label_sets) > 1:
        raise InvalidInputError(
            "the packages have different label sets: "
            + "; ".join(
                f"{p.manifest.name}: {', '.join(p.manifest.label_names or [])}" for p in loaded
            )
            + ". Hint: compare packages trained for the same classes"
        )
    default = "accuracy" if task == "classification" else "mse"
    chosen = check_metric(metric or default, task, len(next(iter(label_sets))))
    dataset = as_dataset(data, label_column, text_column)
    evaluations = [evaluate(p, dataset, rows=rows, bootstrap=bootstrap, seed=seed) for p in loaded]
    _same_rows(evaluations, loaded, dataset, rows)
    lacking = [e.name for e in evaluations if chosen not in e.metrics]
    if lacking:
        raise InvalidInputError(
            f"{chosen} cannot be computed on the scored rows of {dataset.name} for "
            f"{', '.join(lacking)} (ROC-AUC needs every class among them). Hint: rank by "
            "another metric, or score more rows"
        )
    order = sorted(
        range(len(evaluations)),
        key=lambda i: oriented(chosen, evaluations[i].metrics[chosen].value),
        reverse=True,
    )
    ranked = [evaluations[i] for i in order]
    costs: list[Cost | None] = [None] * len(ranked)
    if cost:
        scored = held_out_part(loaded[order[0]], dataset, rows)[0]
        inputs = scored.X.iloc[:64] if hasattr(scored.X, "iloc") else list(scored.X[:64])
        costs = [package_cost(loaded[i], inputs) for i in order]
    best, runner = ranked[0], ranked[1]
    significance = (
        mcnemar(best, runner)
        if chosen == "accuracy"
        else paired_bootstrap(best, runner, chosen, max(bootstrap, 200), seed)
    )
    return Comparison(chosen, ranked, costs, significance)

"""``compare`` and ``package_cost`` on real packages; the significance tests by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tuneserve.evaluation import Estimate, Evaluation, compare, package_cost
from tuneserve.evaluation._compare import mcnemar, paired_bootstrap
from tuneserve.exceptions import InvalidInputError


@pytest.fixture(scope="module")
def cancer_trio(tmp_path_factory):
    from tuneserve import train

    folder = tmp_path_factory.mktemp("compare")
    for backbone in ("logreg", "random-forest"):
        train("breast_cancer", out=folder / backbone, backbone=backbone)
    train("breast_cancer", out=folder / "other-split", backbone="logreg", seed=1)
    train("wine", out=folder / "wine", backbone="logreg")
    return folder


def _evaluation(name: str, y: np.ndarray, proba: np.ndarray) -> Evaluation:
    from tuneserve.evaluation import point_metrics

    point = point_metrics("classification", y, proba)
    return Evaluation(
        "p", name, "d", "all rows", "classification",
        {k: Estimate(v) for k, v in point.items()}, ["a", "b"], y=y, output=proba,
    )  # fmt: skip


def test_mcnemar_counts_the_rows_only_one_gets_right():
    y = np.zeros(40, dtype=np.int64)
    right, wrong = [0.9, 0.1], [0.1, 0.9]
    # best right where other wrong on 9 rows, the reverse on 2 rows, the rest agree
    best = np.array([right] * 9 + [wrong] * 2 + [right] * 29)
    other = np.array([wrong] * 9 + [right] * 2 + [right] * 29)
    result = mcnemar(_evaluation("best", y, best), _evaluation("other", y, other))
    assert (result.only_best_right, result.only_runner_up_right) == (9, 2)
    exact = min(1.0, 2 * sum(math.comb(11, k) for k in range(3)) / 2**11)
    assert result.p_value == pytest.approx(exact)
    assert result.difference == pytest.approx(7 / 40)
    same = mcnemar(_evaluation("a", y, best), _evaluation("b", y, best))
    assert same.p_value == 1.0 and not same.significant


def test_paired_bootstrap_finds_a_real_gap_and_no_gap_with_itself():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    good = np.clip(np.eye(2)[y] * 0.8 + 0.1 + rng.normal(0, 0.05, (300, 2)), 0.01, 1)
    good /= good.sum(1, keepdims=True)
    poor = np.full((300, 2), 0.5)
    a, b = _evaluation("good", y, good), _evaluation("poor", y, poor)
    result = paired_bootstrap(a, b, "log_loss", 300, seed=0)
    assert result.significant and result.difference > 0 and result.low > 0
    itself = paired_bootstrap(a, a, "log_loss", 300, seed=0)
    assert itself.p_value == 1.0 and itself.difference == 0


def test_compare_ranks_on_the_same_rows_with_costs(cancer_trio):
    result = compare(
        [cancer_trio / "random-forest", cancer_trio / "logreg"],
        "breast_cancer",
        metric="f1_macro",
        bootstrap=30,
    )
    values = [e.metrics["f1_macro"].value for e in result.evaluations]
    assert values == sorted(values, reverse=True)
    assert all(np.array_equal(e.y, result.evaluations[0].y) for e in result.evaluations)
    assert result.significance is not None and result.significance.metric == "f1_macro"
    assert "paired bootstrap" in result.significance.method
    for evaluation, cost in zip(result.evaluations, result.costs, strict=True):
        assert cost is not None and cost.latency_ms > 0 and cost.items_per_s > 0
        files = [p for p in Path(evaluation.package).rglob("*") if p.is_file()]
        assert cost.size_mb == pytest.approx(sum(p.stat().st_size for p in files) / 1e6, abs=1e-3)
    doc = result.to_dict()
    assert doc["ranking"][0]["cost"]["batch"] == 32 and "significant" in doc["significance"]


@pytest.mark.parametrize(
    ("packages", "data", "kwargs", "message"),
    [
        (["logreg"], "breast_cancer", {}, "two or more packages"),
        (["logreg", "random-forest"], "breast_cancer", {"metric": "f2"}, "unknown metric 'f2'"),
        (["logreg", "other-split"], "breast_cancer", {}, "different rows"),
        (["logreg", "wine"], "breast_cancer", {}, "different label sets: logreg: malignant"),
    ],
)
def test_compare_refuses_what_cannot_be_compared(cancer_trio, packages, data, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        compare([cancer_trio / p for p in packages], data, bootstrap=0, cost=False, **kwargs)


def test_package_cost_needs_inputs(cancer_trio):
    with pytest.raises(InvalidInputError, match="at least one input"):
        package_cost(cancer_trio / "logreg", [])

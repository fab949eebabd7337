"""Evaluation: metrics with confidence intervals through the runtime on the package,
K-fold cross-validation with out-of-fold predictions, comparisons with significance
tests, package cost, HTML reports."""

from ._compare import Comparison, Significance, compare
from ._cost import Cost, package_cost
from ._cv import CrossValidation, cross_validate, load_oof
from ._evaluate import Evaluation, evaluate
from ._metrics import (
    LOWER_IS_BETTER,
    Estimate,
    check_metric,
    expected_calibration_error,
    metric_names,
    oriented,
    point_metrics,
    single_metric,
    with_intervals,
)

__all__ = [
    "LOWER_IS_BETTER",
    "Comparison",
    "Cost",
    "CrossValidation",
    "Estimate",
    "Evaluation",
    "Significance",
    "check_metric",
    "compare",
    "cross_validate",
    "evaluate",
    "expected_calibration_error",
    "load_oof",
    "metric_names",
    "oriented",
    "package_cost",
    "point_metrics",
    "single_metric",
    "with_intervals",
]

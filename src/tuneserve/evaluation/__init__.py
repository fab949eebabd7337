"""Evaluation: metrics with confidence intervals through the runtime on the package,
comparisons with significance tests, package cost, HTML reports."""

from ._compare import Comparison, Significance, compare
from ._cost import Cost, package_cost
from ._evaluate import Evaluation, evaluate
from ._metrics import (
    LOWER_IS_BETTER,
    Estimate,
    expected_calibration_error,
    metric_names,
    point_metrics,
    single_metric,
    with_intervals,
)

__all__ = [
    "LOWER_IS_BETTER",
    "Comparison",
    "Cost",
    "Estimate",
    "Evaluation",
    "Significance",
    "compare",
    "evaluate",
    "expected_calibration_error",
    "metric_names",
    "package_cost",
    "point_metrics",
    "single_metric",
    "with_intervals",
]

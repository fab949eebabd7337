"""Evaluation: metrics with confidence intervals through the runtime on the package,
K-fold cross-validation with out-of-fold predictions, comparisons with significance
tests, package cost, HTML reports."""

from ._compare import Comparison, Significance, compare
from ._cost import Cost, package_cost
from ._cv import CrossValidation, cross_validate, load_oof
from ._evaluate import evaluate, held_out_part, held_out_rows, label_targets, report_page
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
from ._report import _png as plot_image
from ._report import _pyplot as pyplot
from ._report import cv_report, evaluation_report
from ._report import page as html_page
from ._scored import Evaluation, as_dataset, in_label_order, scored_output

__all__ = [
    "LOWER_IS_BETTER",
    "Comparison",
    "Cost",
    "CrossValidation",
    "Estimate",
    "Evaluation",
    "Significance",
    "as_dataset",
    "check_metric",
    "compare",
    "cross_validate",
    "cv_report",
    "evaluate",
    "evaluation_report",
    "expected_calibration_error",
    "held_out_part",
    "held_out_rows",
    "html_page",
    "in_label_order",
    "label_targets",
    "load_oof",
    "metric_names",
    "oriented",
    "package_cost",
    "plot_image",
    "point_metrics",
    "pyplot",
    "report_page",
    "scored_output",
    "single_metric",
    "with_intervals",
]

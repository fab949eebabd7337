"""Evaluation: metrics with confidence intervals, through the runtime on the package."""

from ._evaluate import Evaluation, evaluate
from ._metrics import Estimate, expected_calibration_error, point_metrics, with_intervals

__all__ = [
    "Estimate",
    "Evaluation",
    "evaluate",
    "expected_calibration_error",
    "point_metrics",
    "with_intervals",
]

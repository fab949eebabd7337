"""Hyperparameter search: Optuna studies whose trials build packages through the one seam
(``tuneserve tune``).

Samplers (grid, random, TPE, Gaussian process, CMA-ES) and pruners (median, successive
halving = ASHA, Hyperband) are Optuna's own; a study lives in SQLite under
``TUNESERVE_HOME`` or any database URL that several workers share, and resumes after a
crash or Ctrl-C.
"""

from ._objective import ROW_RUNGS, OutOfTime, Setup
from ._progress import study_progress, trial_line
from ._report import tune_report
from ._search import TuneResult, parse_duration, tune
from ._space import Branch, Choice, Range, Space, build_space, read_space_file
from ._study import PRUNERS, SAMPLERS, TuneError, default_storage, masked, open_storage

__all__ = [
    "PRUNERS",
    "ROW_RUNGS",
    "SAMPLERS",
    "Branch",
    "Choice",
    "OutOfTime",
    "Range",
    "Setup",
    "Space",
    "TuneError",
    "TuneResult",
    "build_space",
    "default_storage",
    "masked",
    "open_storage",
    "parse_duration",
    "read_space_file",
    "study_progress",
    "trial_line",
    "tune",
    "tune_report",
]

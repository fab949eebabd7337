"""The stages as users call them, ``tuneserve.train(...)`` or ``tuneserve train ...``: each
runs the stage's own function, then logs the result to MLflow.

Training and evaluation never track by themselves; this layer does, after the package or
the evaluation is complete, so a store that is down costs a warning, never the result.
Tracking is on by default (``TUNESERVE_TRACKING=0`` or ``track=False`` turns it off).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from tuneserve.compression import CompressionResult
    from tuneserve.evaluation import CrossValidation, Evaluation
    from tuneserve.package import Package
    from tuneserve.training import PretrainResult, TrainResult, Updated
    from tuneserve.tuning import TuneResult

__all__ = [
    "compress",
    "cross_validate",
    "evaluate",
    "pretrain",
    "registered",
    "train",
    "tune",
    "update",
]


def registered(ref: Any) -> tuple[Any, str | None]:
    """A package given as a registry reference (``models:/NAME@ALIAS``, ``models:/NAME/3``):
    its verified local copy and its ``name/version``; anything else as it is."""
    text = str(ref) if isinstance(ref, (str, Path)) else ""
    if not text.startswith("models:"):
        return ref, None
    from tuneserve.registry import Registry

    registry = Registry()
    # a CLI path option folds models:/ into models:/ or models: — take the reference itself
    version = registry.version(text.removeprefix("models:").lstrip("/"))
    pinned = f"{version.name}/{version.version}"
    return registry.resolve(pinned), pinned


def _track_option(track: bool | None, options: dict[str, Any]) -> bool | None:
    """``track``, or the ``tracked=`` these functions took before (deprecated)."""
    if "tracked" in options:
        warnings.warn(
            "tracked= is deprecated; pass track= instead", DeprecationWarning, stacklevel=3
        )
        tracked = options.pop("tracked")
        return tracked if track is None else track
    return track


def train(data: Any, out: str | Path, *, track: bool | None = None, **options: Any) -> TrainResult:
    """:func:`tuneserve.training.train`, then the package logged as an MLflow run
    (``result.run_id``). ``options`` are that function's; ``init`` may also be a registry
    reference (``models:/NAME@champion``), whose version the lineage records."""
    from tuneserve.registry.tracking import log_package
    from tuneserve.training import train as run

    track = _track_option(track, options)
    if options.get("init") is not None:
        options["init"], options["parent_version"] = registered(options["init"])
    result = run(data, out, **options)
    result.run_id = log_package(result.package, track, "train")
    return result


def update(
    data: Any,
    package: str | Path | Package,
    out: str | Path,
    *,
    track: bool | None = None,
    **options: Any,
) -> Updated:
    """:func:`tuneserve.training.update`, then the updated package logged as an MLflow run
    (``result.run_id``). ``package`` may be a registry reference (``models:/NAME@champion``),
    whose version the lineage records."""
    from tuneserve.registry.tracking import log_package
    from tuneserve.training import update as run

    track = _track_option(track, options)
    package, parent_version = registered(package)
    if parent_version is not None:
        options["parent_version"] = parent_version
    result = run(data, package, out, **options)
    result.run_id = log_package(result.package, track, "update")
    return result


def pretrain(
    data: Any, out: str | Path, *, track: bool | None = None, **options: Any
) -> PretrainResult:
    """:func:`tuneserve.training.pretrain`, then the package logged as an MLflow run."""
    from tuneserve.registry.tracking import log_package
    from tuneserve.training import pretrain as run

    track = _track_option(track, options)
    result = run(data, out, **options)
    result.run_id = log_package(result.package, track, "pretrain")
    return result


def evaluate(
    package: str | Path | Package, data: Any, *, track: bool | None = None, **options: Any
) -> Evaluation:
    """:func:`tuneserve.evaluation.evaluate`, then its metrics (with their intervals) and
    HTML report logged as an MLflow run that names the package's training run."""
    from tuneserve.evaluation import evaluate as run
    from tuneserve.evaluation import report_page
    from tuneserve.package import Package
    from tuneserve.registry.tracking import track_evaluation, tracking_enabled, warn_untracked

    evaluation = run(package, data, **options)
    if not tracking_enabled(track):
        return evaluation
    loaded = Package.load(evaluation.package, verify=False)
    flat: dict[str, float] = {}
    for name, estimate in evaluation.metrics.items():
        flat[f"eval_{name}"] = estimate.value
        if estimate.low is not None and estimate.high is not None:
            flat[f"eval_{name}_low"], flat[f"eval_{name}_high"] = estimate.low, estimate.high
    try:
        track_evaluation(loaded, flat, report_page(evaluation, loaded), data=evaluation.data)
    except Exception as exc:  # the store is down or refuses: the results still stand
        warn_untracked(exc, "the evaluation")
    return evaluation


def cross_validate(data: Any, *, track: bool | None = None, **options: Any) -> CrossValidation:
    """:func:`tuneserve.evaluation.cross_validate`, then the fold metrics (mean, spread,
    interval, and each fold as a step) and the HTML report logged as an MLflow run."""
    from tuneserve.evaluation import cross_validate as run
    from tuneserve.evaluation import cv_report
    from tuneserve.registry.tracking import track_evaluation, tracking_enabled, warn_untracked

    result = run(data, **options)
    if not tracking_enabled(track):
        return result
    metrics: dict[str, float] = {}
    for metric, values in result.summary.items():
        for key, value in values.items():
            metrics[f"cv_{metric}_{key}"] = value
    steps = [(f"fold/{m}", v, k) for k, fm in enumerate(result.fold_metrics) for m, v in fm.items()]
    try:
        track_evaluation(
            None,
            metrics,
            cv_report(result),
            data=result.data,
            kind="cv",
            steps=steps,
            name=f"cv {result.backbone} on {result.data}",
        )
    except Exception as exc:  # the store is down or refuses: the results still stand
        warn_untracked(exc, "the cross-validation")
    return result


def compress(
    package: Any,
    data: Any,
    out: str | Path,
    *,
    track: bool | None = None,
    register: str | None = None,
    **options: Any,
) -> CompressionResult:
    """:func:`tuneserve.compression.compress`, then each variant logged as an MLflow run
    (its measurements and the search's report) and, with ``register``, the chosen variant
    registered under that name. ``package`` may be a registry reference
    (``models:/NAME@champion``).

    Raises:
        CompressionError: no variant meets the rules; its ``result`` holds the measurements
            and its message the closest variants and what limited each (the report is
            written first).
    """
    from tuneserve.compression import CompressionError
    from tuneserve.compression import compress as run
    from tuneserve.registry.tracking import track_evaluation, tracking_enabled, warn_untracked

    package, _ = registered(package)
    result = run(package, data, out, **options)
    if tracking_enabled(track):
        from tuneserve.package import Package

        report = result.report.read_text(encoding="utf-8")
        for m in result.variants:
            metrics = {
                k: float(v)
                for k, v in m.to_dict().items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            try:
                result.run_ids[m.name] = track_evaluation(
                    Package.load(m.path, verify=False),
                    metrics,
                    report,
                    data=str(getattr(data, "name", data)),
                    kind="compress",
                    name=f"compress {result.name}: {m.name}",
                )
            except Exception as exc:  # the store is down or refuses: the variants stand
                warn_untracked(exc, f"the variant {m.name}")
                break
    if result.package is None:
        raise CompressionError(result.why, result)
    if register is not None:
        from tuneserve.registry import Registry

        Registry().register(result.package, register, f"compressed: {result.why}")
    return result


def tune(
    data: Any,
    out: str | Path,
    *,
    track: bool | None = None,
    register: str | None = None,
    print_trials: bool = False,
    **options: Any,
) -> TuneResult:
    """:func:`tuneserve.tuning.tune`, with the study logged to MLflow as a run and each
    trial as a run nested under it (parameters, the metric at every epoch, state), the best
    package logged under it too, and, with ``register``, the best package registered under
    that name. ``print_trials`` prints one line per finished trial when stdout is not a
    terminal (on a terminal the progress bar shows them)."""
    import sys

    from tuneserve.registry.study_runs import nest_run
    from tuneserve.registry.tracking import log_package, tracking_enabled, warn_untracked
    from tuneserve.tuning import tune as run

    callbacks = list(options.pop("callbacks", ()))
    tracker = _StudyTracker() if tracking_enabled(track) else None
    if tracker is not None:
        callbacks.append(tracker)
    if print_trials and not sys.stdout.isatty():
        from tuneserve.tuning import trial_line

        callbacks.append(
            lambda study, trial: print(
                trial_line(trial, study.user_attrs.get("metric", "")), flush=True
            )
        )
    result = run(data, out, callbacks=callbacks, **options)
    if tracker is not None:
        try:
            parent = tracker.parent(result.study, result.storage)
            result.run_ids["study"] = parent
            if result.package is not None:
                best = log_package(result.package, True, "tune")
                if best is not None:
                    result.run_ids["best"] = best
                    nest_run(best, parent)
            _finish_study(parent, result)
        except Exception as exc:  # the store is down or refuses: the study stands
            warn_untracked(exc, "the study")
    if register is not None and result.package is None:
        from tuneserve.exceptions import TuneserveError

        raise TuneserveError(
            f"--register {register}: the best trial's package was written by another worker "
            f"({result.best_package_at}); register it there, or rerun this command once that "
            "worker is done to copy it"
        )
    if register is not None and result.package is not None:
        from tuneserve.registry import Registry

        Registry().register(
            result.package,
            register,
            f"tuned: study {result.study}, trial {result.best_trial}, validation "
            f"{result.metric} {result.best_value:.4f}",
        )
    return result


class _StudyTracker:
    """An Optuna callback that logs each finished trial as a nested MLflow run; a store that
    fails costs one warning, and tracking stops for the rest of the study."""

    def __init__(self) -> None:
        self._parent: str | None = None
        self._broken = False

    def parent(self, study: str, storage: str) -> str:
        from tuneserve.registry.study_runs import study_run

        if self._parent is None:
            self._parent = study_run(study, storage)
        return self._parent

    def __call__(self, study: Any, trial: Any) -> None:
        from tuneserve.registry.study_runs import track_trial
        from tuneserve.registry.tracking import warn_untracked

        if self._broken:
            return
        try:
            parent = self.parent(study.study_name, study.user_attrs.get("storage", ""))
            track_trial(parent, trial, study.user_attrs.get("metric", "value"))
        except Exception as exc:
            self._broken = True
            warn_untracked(exc, f"trial {trial.number}")


def _finish_study(parent: str, result: Any) -> None:
    from tuneserve.registry.study_runs import finish_study_run

    metrics = {
        f"best_{result.metric}": result.best_value,
        "best_trial": result.best_trial,
        "compute": result.compute,
        **{f"trials_{k}": v for k, v in result.counts.items()},
    }
    finish_study_run(parent, metrics, result.report.read_text(encoding="utf-8"))

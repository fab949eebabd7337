"""Evaluate a package on labeled data through the runtime: what is served is what is
measured."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from tuneserve.data import DataLike, Dataset, holdout_indices, kfold_indices, load, split_indices
from tuneserve.exceptions import InvalidInputError, TuneserveError
from tuneserve.package import Package
from tuneserve.progress import progress_bar, with_progress
from tuneserve.runtime import Predictor

from ._metrics import Estimate, per_class, with_intervals

ROWS = ("auto", "test", "all")


@dataclass
class Evaluation:
    """How a package did on a data set.

    Attributes:
        package: The package's folder.
        name: The package's name.
        data: The data set's name.
        rows: Which rows were scored, in words.
        task: ``classification`` or ``regression``.
        metrics: Headline metrics, each with its bootstrap 95% interval.
        labels: Class names in the package's output order (classification).
        details: Per-class precision/recall/F1/support and the confusion matrix.
        y: True class indices (in ``labels`` order) or values, one per row.
        output: The package's probabilities ``(n, classes)`` or values ``(n,)``.
    """

    package: str
    name: str
    data: str
    rows: str
    task: str
    metrics: dict[str, Estimate]
    labels: list[str] | None
    details: dict[str, Any] = field(default_factory=dict)
    y: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    output: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "name": self.name,
            "data": self.data,
            "rows": self.rows,
            "n": len(self.y),
            "task": self.task,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "labels": self.labels,
            **self.details,
        }


def as_dataset(
    data: DataLike, label_column: str | None = None, text_column: str | None = None
) -> Dataset:
    """``data`` itself, or the data set it names (built-in name, folder or file)."""
    if isinstance(data, Dataset):
        return data
    return load(data, label_column=label_column, text_column=text_column)


def scored_output(predictor: Predictor, inputs: Any) -> np.ndarray:
    """:meth:`Predictor.run` on ``inputs`` under a progress bar."""
    return with_progress(
        f"scoring {predictor.manifest.name}", len(inputs), partial(predictor.run, inputs)
    )


def in_label_order(proba: Any, columns: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Probabilities whose columns are the classes ``columns``, as float64 with the columns
    in ``labels`` order."""
    order = [list(columns).index(n) for n in labels]
    return np.asarray(proba, dtype=np.float64)[:, order]


def held_out_rows(package: Package, data: Dataset, rows: str) -> tuple[np.ndarray, str]:
    """The indices of the rows to score, and what they are in words: the training run's
    test split when ``data`` is what the package was trained on (so no training row is
    scored), else every row."""
    if rows not in ROWS:
        raise InvalidInputError(f"rows must be one of {', '.join(ROWS)}; got {rows!r}")
    lineage = package.manifest.lineage
    settings = lineage.training_config.get("split")
    everything = np.arange(len(data))
    if rows == "all":
        return everything, "all rows"
    known = _recorded_rows(package, data)
    if known is not None:
        return known
    if isinstance(settings, dict):
        try:
            train_idx, _, test_idx = split_indices(data, **settings)
        except TuneserveError:  # data that cannot be split like that is other data
            test_idx = None
        if test_idx is not None and data.subset(train_idx).fingerprint == lineage.data_fingerprint:
            share = round(100 * float(settings.get("test", 0.2)))
            return test_idx, (
                f"the held-out test split of the training run ({share}% of rows, seed "
                f"{settings.get('seed', 0)})"
            )
    if rows == "test":
        raise InvalidInputError(
            f"{data.name} is not the data package {package.manifest.name!r} was trained on "
            "(its training split does not match the package's data fingerprint), so it has "
            "no held-out test split. Hint: use rows='all' to score every row"
        )
    return everything, "all rows (not the package's training data)"


def _recorded_rows(package: Package, data: Dataset) -> tuple[np.ndarray, str] | None:
    """Rows a package records as held out: those a selection did not fit an ensemble on,
    or the fold a cross-validation fold model never saw."""
    config = package.manifest.lineage.training_config
    held = config.get("held_out")
    if isinstance(held, dict) and held.get("data_fingerprint") == data.fingerprint:
        return np.asarray(held["rows"], dtype=np.int64), str(held.get("what", "held-out rows"))
    cv = config.get("cv")
    if not isinstance(cv, dict) or "validation" not in cv.get("settings", {}):
        return None
    try:
        train_idx, held_idx = list(kfold_indices(data, cv["folds"], cv["seed"]))[cv["fold"]]
        rest = data.subset(train_idx)
        kept, _ = holdout_indices(rest, cv["settings"]["validation"], seed=cv["seed"] + cv["fold"])
    except (TuneserveError, IndexError, KeyError, TypeError):
        return None
    if rest.subset(kept).fingerprint != package.manifest.lineage.data_fingerprint:
        return None
    return held_idx, f"fold {cv['fold']} of {cv['folds']}, held out by cross-validation"


def _held_out(package: Package, data: Dataset, rows: str) -> tuple[Dataset, str]:
    """The rows of :func:`held_out_rows` as a data set."""
    index, described = held_out_rows(package, data, rows)
    if len(index) == len(data):
        return data, described
    return data.subset(index, name=f"{data.name}[test]"), described


def _targets(package: Predictor, data: Dataset) -> np.ndarray:
    """``data.y`` as indices into the package's labels (classification) or values."""
    manifest = package.manifest
    if manifest.task != data.task:
        raise InvalidInputError(
            f"package {manifest.name!r} does {manifest.task} but {data.name} is {data.task} "
            "data. Hint: evaluate on data with the same kind of label"
        )
    if manifest.modality != data.modality:
        raise InvalidInputError(
            f"package {manifest.name!r} takes {manifest.modality} inputs but {data.name} holds "
            f"{data.modality} data"
        )
    if data.task != "classification":
        return np.asarray(data.y, dtype=np.float64)
    labels = list(package.labels or [])
    position = {name: i for i, name in enumerate(labels)}
    names = list(data.label_names or [])
    unknown = sorted({names[i] for i in np.unique(data.y)} - set(labels))
    if unknown:
        raise InvalidInputError(
            f"{data.name} has classes the package {manifest.name!r} does not know: "
            f"{', '.join(unknown[:10])}; the package knows {', '.join(labels[:20])}. Hint: "
            "evaluate on data with the package's label set"
        )
    return np.array([position[names[i]] for i in data.y], dtype=np.int64)


def evaluate(
    package: str | Path | Package,
    data: DataLike,
    *,
    rows: str = "auto",
    bootstrap: int = 1000,
    seed: int = 0,
    label_column: str | None = None,
    text_column: str | None = None,
    report: str | Path | None = None,
    track: bool | None = None,
) -> Evaluation:
    """Score ``package`` on labeled ``data`` through ONNX Runtime.

    Args:
        package: A package folder (or a loaded :class:`Package`).
        data: A data set (built-in name, folder, file) or a loaded :class:`Dataset`.
        rows: ``auto``: the training run's held-out test split when ``data`` is the data
            the package was trained on, else every row; ``test``: that split or an error;
            ``all``: every row.
        bootstrap: Resamples for the 95% intervals (0: no intervals).
        seed: Seed of the resampling.
        report: Write an HTML report with plots here (written whole or not at all).
        track: Log the metrics and the report as an MLflow run (default:
            ``TUNESERVE_TRACKING``, on unless set to 0).
    """
    predictor = Predictor(package if isinstance(package, Package) else Package.load(package))
    dataset = as_dataset(data, label_column, text_column)
    scored, described = _held_out(predictor.package, dataset, rows)
    y = _targets(predictor, scored)
    output = scored_output(predictor, scored.X)
    task = predictor.manifest.task
    with progress_bar(f"bootstrap {predictor.manifest.name}", total=bootstrap) as advance:
        estimates = with_intervals(task, y, output, rounds=bootstrap, seed=seed, progress=advance)
    labels = list(predictor.labels) if predictor.labels else None
    details = per_class(y, output, labels) if task == "classification" and labels else {}
    evaluation = Evaluation(
        package=str(predictor.package.path),
        name=predictor.manifest.name,
        data=dataset.name,
        rows=described,
        task=task,
        metrics=estimates,
        labels=labels,
        details=details,
        y=y,
        output=output,
    )
    publish(evaluation, predictor.package, report, track)
    return evaluation


def publish(
    evaluation: Evaluation, package: Package, report: str | Path | None, track: bool | None
) -> None:
    """Write the HTML report and log the evaluation to MLflow, as asked."""
    from tuneserve.registry.tracking import tracking_enabled

    if report is None and not tracking_enabled(track):
        return
    from ._report import evaluation_report

    history = package.manifest.lineage.training_config.get("history") or []
    page = evaluation_report(evaluation, history)
    if report is not None:
        write_text_atomic(Path(report), page)
    if tracking_enabled(track):
        from tuneserve.registry.tracking import track_evaluation, warn_untracked

        flat: dict[str, float] = {}
        for name, estimate in evaluation.metrics.items():
            flat[f"eval_{name}"] = estimate.value
            if estimate.low is not None and estimate.high is not None:
                flat[f"eval_{name}_low"], flat[f"eval_{name}_high"] = estimate.low, estimate.high
        try:
            track_evaluation(package, flat, page, data=evaluation.data)
        except Exception as exc:  # the store is down or refuses: the results still stand
            warn_untracked(exc, "the evaluation")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

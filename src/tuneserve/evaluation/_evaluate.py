"""Evaluate a package on labeled data through the runtime: what is served is what is
measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tuneserve.atomic import write_text
from tuneserve.data import DataLike, Dataset, holdout_indices, kfold_indices, split_indices
from tuneserve.exceptions import InvalidInputError, TuneserveError
from tuneserve.package import Package
from tuneserve.progress import progress_bar
from tuneserve.runtime import Predictor

from ._metrics import per_class, with_intervals
from ._report import evaluation_report
from ._scored import Evaluation, as_dataset, scored_output

ROWS = ("auto", "test", "all")


def held_out_rows(package: Package, data: Dataset, rows: str) -> tuple[np.ndarray, str]:
    """The indices of the rows to score, and what they are in words: the rows the package
    records as held out of its training when ``data`` is that data set (so no training row
    is scored), else every row."""
    if rows not in ROWS:
        raise InvalidInputError(f"rows must be one of {', '.join(ROWS)}; got {rows!r}")
    everything = np.arange(len(data))
    if rows == "all":
        return everything, "all rows"
    held = package.manifest.lineage.held_out
    if held is not None and held.data_fingerprint == data.fingerprint:
        return np.asarray(held.rows, dtype=np.int64), held.what
    known = _rows_of_older_package(package, data) if held is None else None
    if known is not None:
        return known
    if rows == "test":
        raise InvalidInputError(
            f"{data.name} is not the data package {package.manifest.name!r} was trained on "
            "(its held-out rows were recorded for other data), so it has no held-out test "
            "split. Hint: use rows='all' (--rows all) to score every row"
        )
    return everything, "all rows (not the package's training data)"


def _rows_of_older_package(package: Package, data: Dataset) -> tuple[np.ndarray, str] | None:
    """Format-1/2 packages recorded how they split, not which rows they held out: split
    ``data`` the same way and keep the rows when the training part matches the package's
    data fingerprint."""
    lineage = package.manifest.lineage
    try:
        if lineage.split is not None:
            s = lineage.split
            train_idx, _, test_idx = split_indices(
                data, seed=s.seed, validation=s.validation, test=s.test
            )
            if data.subset(train_idx).fingerprint == lineage.data_fingerprint:
                return test_idx, (
                    f"the held-out test split of the training run ({round(100 * s.test)}% of "
                    f"rows, seed {s.seed})"
                )
        if lineage.fold is not None:
            f = lineage.fold
            train_idx, held_idx = list(kfold_indices(data, f.folds, f.seed))[f.fold]
            rest = data.subset(train_idx)
            kept, _ = holdout_indices(rest, f.validation, seed=f.seed + f.fold)
            if rest.subset(kept).fingerprint == lineage.data_fingerprint:
                return held_idx, (f"fold {f.fold} of {f.folds}, held out by cross-validation")
    except (TuneserveError, IndexError):  # data that cannot be split so is other data
        return None
    return None


def held_out_part(package: Package, data: Dataset, rows: str) -> tuple[Dataset, str]:
    """The rows of :func:`held_out_rows` as a data set."""
    index, described = held_out_rows(package, data, rows)
    if len(index) == len(data):
        return data, described
    return data.subset(index, name=f"{data.name}[test]"), described


def label_targets(package: Predictor, data: Dataset) -> np.ndarray:
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

    :func:`tuneserve.evaluate` also logs the evaluation to MLflow.
    """
    predictor = Predictor(package if isinstance(package, Package) else Package.load(package))
    dataset = as_dataset(data, label_column, text_column)
    scored, described = held_out_part(predictor.package, dataset, rows)
    y = label_targets(predictor, scored)
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
    if report is not None:
        write_text(Path(report), report_page(evaluation, predictor.package))
    return evaluation


def report_page(evaluation: Evaluation, package: Package) -> str:
    """The evaluation's HTML report, with the package's learning curves."""
    return evaluation_report(evaluation, package.manifest.lineage.history)

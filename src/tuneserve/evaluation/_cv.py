"""K-fold cross-validation: one model per fold, scored through the runtime on the rows it
never saw; the out-of-fold predictions are kept for model selection."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tuneserve.atomic import write_text
from tuneserve.data import DataLike, Dataset, holdout_indices, kfold_indices
from tuneserve.exceptions import InvalidInputError, PackageError, TuneserveError
from tuneserve.package import Package
from tuneserve.progress import progress_bar
from tuneserve.runtime import Predictor

from ._metrics import Estimate, per_class, point_metrics, with_intervals
from ._report import cv_report
from ._scored import Evaluation, as_dataset, in_label_order, scored_output

if TYPE_CHECKING:  # pragma: no cover
    from tuneserve.training import Plan

OOF_FILE, SUMMARY_FILE, REPORT_FILE = "oof.npz", "cv.json", "report.html"
UNBOUNDED_BELOW = frozenset({"r2"})
UNBOUNDED_ABOVE = frozenset({"log_loss", "mse", "mae"})


@dataclass
class CrossValidation:
    """What K-fold cross-validation found.

    Attributes:
        fold_metrics: Each fold's metrics on its held-out rows.
        summary: Per metric: mean and standard deviation over folds, and a t-interval
            (``low``, ``high``) for the mean. Folds share training rows, so this interval
            is optimistic (Bengio & Grandvalet 2004); ``pooled`` is the other view.
        pooled: Metrics of all out-of-fold predictions together, with bootstrap 95%
            intervals.
        y: True class indices (in ``labels`` order) or values, in the data's row order.
        oof: Out-of-fold probabilities ``(n, classes)`` or values ``(n,)``: each row
            predicted by the fold model that did not train on it.
        fold_of: The fold that held each row out.
        packages: The fold packages (when written to ``out``).
    """

    data: str
    backbone: str
    strategy: str
    folds: int
    seed: int
    task: str
    labels: list[str] | None
    fold_metrics: list[dict[str, float]]
    summary: dict[str, dict[str, float]]
    pooled: dict[str, Estimate]
    y: np.ndarray = field(repr=False)
    oof: np.ndarray = field(repr=False)
    fold_of: np.ndarray = field(repr=False)
    packages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "backbone": self.backbone,
            "strategy": self.strategy,
            "folds": self.folds,
            "seed": self.seed,
            "task": self.task,
            "n": len(self.y),
            "labels": self.labels,
            "summary": self.summary,
            "pooled": {k: v.to_dict() for k, v in self.pooled.items()},
            "fold_metrics": self.fold_metrics,
            "packages": self.packages,
        }

    def as_evaluation(self) -> Evaluation:
        """The pooled out-of-fold predictions as an :class:`Evaluation` (for reports)."""
        details = (
            per_class(self.y, self.oof, self.labels)
            if self.task == "classification" and self.labels
            else {}
        )
        return Evaluation(
            package=", ".join(self.packages) or "(not kept)",
            name=f"{self.backbone} ({self.strategy}), {self.folds}-fold",
            data=self.data,
            rows="out-of-fold predictions of every row",
            task=self.task,
            metrics=self.pooled,
            labels=self.labels,
            details=details,
            y=self.y,
            output=self.oof,
        )


def summarize(fold_metrics: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation (ddof 1) and a 95% t-interval of the mean, per metric
    (cut to the metric's range: a rate's interval stops at 0 and 1)."""
    from scipy import stats

    out: dict[str, dict[str, float]] = {}
    for name in fold_metrics[0]:
        values = np.array([m[name] for m in fold_metrics if name in m], dtype=np.float64)
        mean = float(values.mean())
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        half = float(stats.t.ppf(0.975, len(values) - 1) * std / np.sqrt(len(values)))
        low, high = mean - half, mean + half
        if name not in UNBOUNDED_BELOW:
            low = max(low, 0.0)  # no metric here goes below 0 but R²
        if name not in UNBOUNDED_ABOVE:
            high = min(high, 1.0)  # scores and rates stop at 1
        out[name] = {"mean": mean, "std": std, "low": low, "high": high}
    return out


def _remove_cv_folder(folder: Path) -> None:
    """Delete an earlier cross-validation's folder, and nothing else."""
    ours = {SUMMARY_FILE, OOF_FILE, REPORT_FILE}
    entries = list(folder.iterdir()) if folder.is_dir() else [folder]
    if not all(e.name in ours or e.name.startswith(("fold-", ".")) for e in entries):
        raise PackageError(
            f"refusing to replace {folder}: it holds files that are not a cross-validation's "
            "(fold-N packages, cv.json, oof.npz, report.html). Hint: choose another --out"
        )
    shutil.rmtree(folder)


def _finished(path: Path, fold_plan: Plan, dataset: Dataset) -> Package | None:
    """The fold package at ``path`` when it is complete and was trained for this fold with
    these settings (a resume reuses only those)."""
    try:
        package = Package.load(path)
    except TuneserveError:
        return None
    lineage = package.manifest.lineage
    rows = fold_plan.split.rows
    assert rows is not None and fold_plan.fold is not None
    settings = json.loads(json.dumps(fold_plan.settings(), default=str))
    backbone = lineage.backbone
    same = (
        lineage.fold is not None
        and (lineage.fold.fold, lineage.fold.folds) == fold_plan.fold
        and lineage.fold.seed == fold_plan.seed
        and lineage.fold.validation == fold_plan.split.validation
        and backbone is not None
        and (backbone.name, backbone.strategy) == (fold_plan.backbone, fold_plan.strategy.name)
        and all(lineage.config.get(k) == v for k, v in settings.items())
        # format-2 folds recorded no held-out rows: their training rows' fingerprint tells
        and (
            lineage.held_out is None
            or (
                lineage.held_out.data_fingerprint == dataset.fingerprint
                and lineage.held_out.rows == rows[2].tolist()
            )
        )
        and lineage.data_fingerprint == dataset.subset(rows[0]).fingerprint
    )
    return package if same else None


def _fold_output(predictor: Predictor, dataset: Dataset, held: Dataset) -> np.ndarray:
    output = scored_output(predictor, held.X)
    if dataset.task != "classification":
        return np.asarray(output, dtype=np.float64)
    return in_label_order(output, predictor.labels or [], dataset.label_names or ())


def cross_validate(
    data: DataLike,
    *,
    backbone: str | None = None,
    strategy: str | None = None,
    folds: int = 5,
    seed: int = 0,
    validation: float = 0.1,
    config: Any = None,
    settings: dict[str, Any] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    bootstrap: int = 1000,
    max_length: int = 128,
    unfreeze: int = 2,
    label_column: str | None = None,
    text_column: str | None = None,
) -> CrossValidation:
    """Stratified, seeded K-fold cross-validation of a backbone on ``data``.

    For each fold, the other folds are split into train and ``validation`` (early
    stopping), a model is trained and exported as a package, and the package scores the
    held-out fold through ONNX Runtime. With ``out``, the fold packages, ``cv.json``,
    ``oof.npz`` (``y``, ``oof``, ``fold_of``, ``labels``) and ``report.html`` are written
    there; ``resume`` reuses the folds already finished in ``out``. ``config`` (a
    ``TrainConfig``) or ``settings`` (overrides of the default one, e.g. ``{"epochs": 5}``)
    set the training loop.
    """
    # training loads torch: only when a cross-validation runs, not on `import evaluation`
    from tuneserve.training import Options, SplitPlan, build, check_out, plan

    if folds < 2:
        raise InvalidInputError(f"cross-validation needs folds >= 2, got {folds}")
    if resume and out is None:
        raise InvalidInputError("resume needs the --out folder of the interrupted run")
    if out is not None and not resume:
        check_out(out, overwrite)
    dataset = as_dataset(data, label_column, text_column)
    chosen = plan(
        dataset.modality,
        backbone=backbone,
        strategy=strategy,
        config=config,
        settings=settings,
        seed=seed,
        validation=validation,
        options=Options(max_length=max_length, unfreeze=unfreeze),
    )
    name = chosen.backbone
    fold_plans = []
    for k, (train_idx, held_idx) in enumerate(kfold_indices(dataset, folds, seed)):
        # every fold's validation split is checked before any fold trains
        rest = dataset.subset(train_idx, name=f"{dataset.name}[fold {k} train]")
        kept, val = holdout_indices(rest, validation, seed=seed + k)
        rows = (train_idx[kept], train_idx[val], held_idx)
        what = f"fold {k} of {folds}, held out by cross-validation"
        split = SplitPlan(seed=seed, validation=validation, rows=rows, what=what)
        fold_plans.append(replace(chosen, split=split, fold=(k, folds)))
    folder = (
        Path(out).expanduser()
        if out is not None
        else Path(tempfile.mkdtemp(prefix="tuneserve-cv-"))
    )
    if out is not None and overwrite and not resume and folder.exists():
        _remove_cv_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(dataset)
    oof = np.zeros((n, len(dataset.label_names or ())) if dataset.task == "classification" else n)
    fold_of = np.zeros(n, dtype=np.int64)
    fold_metrics: list[dict[str, float]] = []
    try:
        with progress_bar(f"{folds}-fold cross-validation", total=folds) as advance:
            for k, fold_plan in enumerate(fold_plans):
                assert fold_plan.split.rows is not None
                held_idx = fold_plan.split.rows[2]
                held = dataset.subset(held_idx, name=f"{dataset.name}[fold {k} held out]")
                target = folder / f"fold-{k}"
                package = _finished(target, fold_plan, dataset) if resume else None
                if package is None:
                    if target.exists():  # a fold cut short, or from other settings: ours
                        shutil.rmtree(target)
                    package = build(dataset, fold_plan, target, name=f"{name}-fold{k}")
                output = _fold_output(Predictor(package), dataset, held)
                oof[held_idx], fold_of[held_idx] = output, k
                fold_metrics.append(point_metrics(dataset.task, held.y, output))
                advance(
                    **{m: fold_metrics[-1][m] for m in ("accuracy", "mse") if m in fold_metrics[-1]}
                )
        pooled = with_intervals(dataset.task, dataset.y, oof, rounds=bootstrap, seed=seed)
        result = CrossValidation(
            data=dataset.name,
            backbone=name,
            strategy=chosen.strategy.name,
            folds=folds,
            seed=seed,
            task=dataset.task,
            labels=list(dataset.label_names) if dataset.label_names else None,
            fold_metrics=fold_metrics,
            summary=summarize(fold_metrics),
            pooled=pooled,
            y=np.asarray(dataset.y),
            oof=oof,
            fold_of=fold_of,
            packages=[str(folder / f"fold-{k}") for k in range(folds)] if out is not None else [],
        )
    finally:
        if out is None:
            shutil.rmtree(folder, ignore_errors=True)
    if out is not None:
        _write(result, folder)
    return result


def _write(result: CrossValidation, folder: Path) -> None:
    tmp = folder / f".{OOF_FILE}.tmp.npz"
    np.savez(
        tmp,
        y=result.y,
        oof=result.oof,
        fold_of=result.fold_of,
        labels=np.array(result.labels or [], dtype=str),
    )
    tmp.replace(folder / OOF_FILE)
    write_text(folder / SUMMARY_FILE, json.dumps(result.to_dict(), indent=2))
    write_text(folder / REPORT_FILE, cv_report(result))


def load_oof(folder: str | Path) -> dict[str, np.ndarray]:
    """The out-of-fold predictions a cross-validation wrote to ``folder``."""
    path = Path(folder) / OOF_FILE
    if not path.is_file():
        raise PackageError(f"{path} not found: run tuneserve cv ... --out {folder} first")
    with np.load(path) as saved:
        return {k: saved[k] for k in saved.files}

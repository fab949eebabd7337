"""One trial: the sampled parameters made into a plan and built through the one seam, with
the validation metric reported at every rung of its fidelity so that a pruner can stop it.

Fidelity: epochs for loop-trained models, folds with ``folds`` (the running mean of the
study's metric over the folds done), and training rows for scikit-learn estimators (fits on
1/9, 1/3, then all of the training rows).

At each epoch or row rung the pruner compares one measure for every backbone of a study:
validation accuracy (or cross-entropy, when the study minimises) for classification, and the
mean squared error of standardized targets (as the MLP learns them) for regression, negated
when the study maximises (R²). The trial's value is the study's own metric.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from tuneserve.data import Dataset, kfold_indices, split_indices
from tuneserve.evaluation import LOWER_IS_BETTER, single_metric
from tuneserve.exceptions import DataError, TuneserveError
from tuneserve.lineage import Tuning
from tuneserve.training import (
    Plan,
    SplitPlan,
    TrainedModel,
    build,
    on_epoch,
    plan,
    split_for,
    train_sklearn,
)

from ._space import Branch, Space
from ._study import OWNER, TuneError, owner

#: the shares of the training rows a scikit-learn trial fits on, rung by rung
ROW_RUNGS = (1 / 9, 1 / 3, 1.0)
CHECKPOINTS = ".checkpoints"


class OutOfTime(TuneError):
    """The study's timeout ended a trial."""


@dataclass
class Setup:
    """What every trial of a study shares.

    Attributes:
        data: The labeled data.
        space: The branches and their parameters.
        metric: The validation metric optimised (a name of
            :func:`tuneserve.evaluation.metric_names`).
        seed, validation, test: The split (the same for every trial).
        folds: K-fold cross-validation inside train + validation (the test rows stay out).
        trials_dir: Where each trial's package (and checkpoints) go.
        deadline: ``time.monotonic()`` at which running trials stop (the timeout).
        study: The study's name; storage its masked URL (for the packages' lineage).
    """

    data: Dataset
    space: Space
    metric: str
    seed: int = 0
    validation: float = 0.1
    test: float = 0.2
    folds: int | None = None
    trials_dir: Path = Path("trials")
    deadline: float | None = None
    study: str = ""
    storage: str | None = None

    @property
    def direction(self) -> str:
        return "minimize" if self.metric in LOWER_IS_BETTER else "maximize"

    def package_dir(self, number: int) -> Path:
        return self.trials_dir / f"trial-{number:04d}"

    def checkpoint_dir(self, number: int) -> Path:
        return self.trials_dir / CHECKPOINTS / f"trial-{number:04d}"


def plan_for(setup: Setup, branch: Branch, values: dict[str, Any]) -> Plan:
    """The training plan of one point of the space."""
    settings, options, _ = branch.split(values)
    return plan(
        setup.data.modality,
        backbone=branch.backbone,
        strategy=branch.strategy,
        settings=settings,
        seed=setup.seed,
        validation=setup.validation,
        test=setup.test,
        options=options,
    )


class Objective:
    """``objective(trial) -> validation metric`` for ``study.optimize``."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self._steps = 0
        self._retried: int | None = None
        self._planned = 0
        self._epoch_seconds: list[float] = []

    def __call__(self, trial: optuna.Trial) -> float:
        s = self.setup
        trial.set_user_attr(OWNER, owner())
        branch, values = s.space.suggest(trial)
        trial.set_user_attr("backbone", branch.backbone)
        trial.set_user_attr("strategy", branch.strategy)
        started = time.monotonic()
        self._steps = 0
        self._epoch_seconds = []
        self._retried = retried_from(trial)
        if self._retried is not None:
            trial.set_user_attr("retried_from", self._retried)
        try:
            chosen = plan_for(s, branch, values)
            self._planned = chosen.config.epochs if chosen.config is not None else 0
            if chosen.config is not None:
                trial.set_user_attr("epochs", chosen.config.epochs)
            chosen = with_tuning(chosen, s, trial.number, trial.params)
            if s.folds:
                value = self._folds(trial, chosen)
            elif branch.family == "sklearn":
                value = self._rows(trial, chosen)
            else:
                value = self._epochs(trial, chosen)
        except optuna.TrialPruned:
            self._clean(trial.number, keep_package=False)
            raise
        except TuneserveError as exc:
            self._clean(trial.number, keep_package=False)
            trial.set_user_attr("error", str(exc)[:500])
            raise
        except KeyboardInterrupt:  # Optuna fails the trial; the next run continues it
            shutil.rmtree(self.setup.package_dir(trial.number), ignore_errors=True)
            trial.set_user_attr("error", "interrupted")
            root = self._retried if self._retried is not None else trial.number
            trial.study.enqueue_trial(
                trial.params, user_attrs={"retried_from": root}, skip_if_exists=False
            )
            raise
        finally:
            trial.set_user_attr("seconds", round(time.monotonic() - started, 3))
            trial.set_user_attr("steps", self._steps)
            if self._epoch_seconds:
                trial.set_user_attr("epoch_seconds", float(np.median(self._epoch_seconds)))
        self._clean(trial.number, keep_package=True)
        if not s.folds:
            trial.set_user_attr("package", str(s.package_dir(trial.number)))
        if not math.isfinite(value):
            raise TuneError(f"trial {trial.number} gave a {s.metric} of {value}")
        return value

    # -- one rung ---------------------------------------------------------------------

    def _report(self, trial: optuna.Trial, value: float, step: int = 0, last: bool = False) -> None:
        # an epoch's own number, so that a trial resumed from its checkpoint reports the
        # epochs it runs; a strategy that trains twice (auto) counts on
        self._steps = max(self._steps + 1, step)
        trial.report(value, self._steps)
        if last:  # a trial whose last rung is done is kept: neither the timeout nor a
            return  # pruner (ASHA knows no last epoch) throws its finished work away
        self._check_time(trial)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after step {self._steps} ({value:.4g})")

    def _check_time(self, trial: optuna.Trial) -> None:
        deadline = self.setup.deadline
        if deadline is not None and time.monotonic() > deadline:
            raise OutOfTime(f"the timeout ended trial {trial.number} after {self._steps} step(s)")

    def _intermediate(self, record: dict[str, float]) -> float:
        """An epoch's measure for the pruner (see the module docstring)."""
        if "epoch_seconds" in record:
            self._epoch_seconds.append(float(record["epoch_seconds"]))
        minimize = self.setup.direction == "minimize"
        if self.setup.data.task == "classification":
            return float(record["val_loss"] if minimize else record["val_accuracy"])
        return float(record["val_loss"]) * (1 if minimize else -1)

    def _rung_value(self, trained: TrainedModel, data: Dataset, train_y: np.ndarray) -> float:
        """A row rung's measure for the pruner: the loop's, computed on the predictions."""
        output = trained.predict_proba(data.X)
        minimize = self.setup.direction == "minimize"
        if data.task == "classification":
            name = "log_loss" if minimize else "accuracy"
            return single_metric(data.task, name, data.y, output)
        scaled = single_metric(data.task, "mse", data.y, output) / (float(np.var(train_y)) or 1.0)
        return scaled if minimize else -scaled

    def _score(self, trained: TrainedModel, data: Dataset) -> float:
        output = trained.predict_proba(data.X)
        return single_metric(data.task, self.setup.metric, data.y, output)

    # -- the three fidelities -----------------------------------------------------------

    def _build(
        self, chosen: Plan, out: Path, ckpt: Path | None, resume: bool = False
    ) -> tuple[float, TrainedModel, Any]:
        """The study's metric on the validation rows, the model and its parts."""
        kept: list[tuple[float, TrainedModel, Any]] = []
        build(
            self.setup.data,
            chosen,
            out,
            checkpoint_dir=ckpt,
            resume=resume,
            overwrite=True,
            keep=lambda trained, parts: kept.append(
                (self._score(trained, parts.validation), trained, parts)
            ),
        )
        return kept[0]

    def _epochs(self, trial: optuna.Trial, chosen: Plan) -> float:
        """Loop-trained: every epoch reported. A trial that re-runs one an earlier run left
        unfinished continues from that trial's last checkpoint."""
        retried = self._retried
        ckpt = self.setup.checkpoint_dir(retried if retried is not None else trial.number)

        def report(record: dict[str, float]) -> None:
            epoch = int(record.get("epoch", 0))
            last = epoch >= self._planned
            self._report(trial, self._intermediate(record), epoch, last=last)

        with on_epoch(report):
            value, _, _ = self._build(
                chosen, self.setup.package_dir(trial.number), ckpt, resume=retried is not None
            )
        return value

    def _rows(self, trial: optuna.Trial, chosen: Plan) -> float:
        parts = split_for(self.setup.data, chosen)
        train = parts.train
        for rung, share in enumerate(ROW_RUNGS[:-1], start=1):
            rows = _subsample(train, share, chosen.seed)
            if rows is None:
                continue  # too few rows for this rung: the rungs keep their numbers
            try:
                trained = train_sklearn(
                    train.subset(rows),
                    None,
                    backbone=chosen.backbone,
                    seed=chosen.seed,
                    params=dict(chosen.options.estimator),
                )
            except DataError:  # e.g. a calibrated SVM's folds need more rows per class
                continue
            self._report(trial, self._rung_value(trained, parts.validation, train.y), rung)
        value, trained, parts = self._build(chosen, self.setup.package_dir(trial.number), None)
        measure = self._rung_value(trained, parts.validation, parts.train.y)
        self._report(trial, measure, len(ROW_RUNGS), last=True)
        return value

    def _folds(self, trial: optuna.Trial, chosen: Plan) -> float:
        s = self.setup
        train_idx, val_idx, test_idx = split_indices(
            s.data, validation=s.validation, test=s.test, seed=s.seed
        )
        inner = np.concatenate([train_idx, val_idx])
        scores: list[float] = []
        folds = s.folds or 0
        with on_epoch(lambda record: self._check_time(trial)):
            for k, (fit_rows, held_rows) in enumerate(
                kfold_indices(s.data.subset(inner), folds, s.seed)
            ):
                fold_plan = replace(
                    chosen,
                    split=SplitPlan(
                        seed=s.seed,
                        validation=s.validation,
                        test=s.test,
                        rows=(inner[fit_rows], inner[held_rows], test_idx),
                        what=f"fold {k + 1} of {folds} inside train + validation",
                    ),
                    fold=(k, folds),
                )
                out = s.checkpoint_dir(trial.number).with_name(f"trial-{trial.number:04d}-fold")
                try:
                    scores.append(self._build(fold_plan, out, None)[0])
                finally:
                    shutil.rmtree(out, ignore_errors=True)
                self._report(trial, float(np.mean(scores)), k + 1, last=k + 1 == folds)
        return float(np.mean(scores))

    def _clean(self, number: int, *, keep_package: bool) -> None:
        """Delete a trial's checkpoints (and, when it is pruned or failed, its package)."""
        shutil.rmtree(self.setup.checkpoint_dir(number), ignore_errors=True)
        if self._retried is not None:
            shutil.rmtree(self.setup.checkpoint_dir(self._retried), ignore_errors=True)
        if not keep_package:
            shutil.rmtree(self.setup.package_dir(number), ignore_errors=True)


def retried_from(trial: optuna.Trial) -> int | None:
    """The first trial of the chain this one runs again (whose checkpoints it continues):
    one an interrupted run left unfinished, or one whose worker stopped beating (Optuna's
    retry)."""
    mine = trial.user_attrs.get("retried_from")
    if mine is not None:
        return int(mine)
    frozen = trial.study._storage.get_trial(trial._trial_id)  # no public view of system attrs
    # set by RetryHeartbeatStaleTrialCallback: every trial retried before, the first first
    history = frozen.system_attrs.get("retry_history") or []
    return int(history[0]) if history else None


def _subsample(data: Dataset, share: float, seed: int) -> np.ndarray | None:
    """A stratified ``share`` of ``data``'s rows, or None when that leaves too few."""
    from sklearn.model_selection import train_test_split

    n = len(data)
    size = int(n * share)
    rows = np.arange(n)
    if data.task == "classification":
        classes = len(np.unique(data.y))
        if size < 2 * classes:
            return None
        try:
            kept, _ = train_test_split(rows, train_size=size, stratify=data.y, random_state=seed)
        except ValueError:  # a class too small to stratify
            return None
        return np.sort(kept)
    if size < 10:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def with_tuning(chosen: Plan, setup: Setup, number: int, params: dict[str, Any]) -> Plan:
    """The plan whose package's lineage names the study and the trial."""
    record = Tuning(
        study=setup.study,
        trial=number,
        storage=setup.storage,
        params=dict(params),
        metric=setup.metric,
        direction=setup.direction,
    )
    fit = chosen.strategy.fit

    def tuned_fit(parts: Any, p: Plan, run: Any) -> TrainedModel:
        trained = fit(parts, p, run)
        trained.lineage = trained.lineage.model_copy(update={"tuning": record})
        return trained

    return replace(chosen, strategy=replace(chosen.strategy, fit=tuned_fit))

"""One trial: the sampled parameters made into a plan and built through the one seam, with
the validation metric reported at every rung of its fidelity so that a pruner can stop it.

Fidelity: epochs for loop-trained models (each epoch's validation metric), folds with
``folds`` (the running mean over the folds done), and training rows for scikit-learn
estimators (fits on 1/9, 1/3, then all of the training rows).
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

    def __call__(self, trial: optuna.Trial) -> float:
        s = self.setup
        trial.set_user_attr(OWNER, owner())
        branch, values = s.space.suggest(trial)
        trial.set_user_attr("backbone", branch.backbone)
        trial.set_user_attr("strategy", branch.strategy)
        started = time.monotonic()
        self._steps = 0
        self._retried = retried_from(trial)
        if self._retried is not None:
            trial.set_user_attr("retried_from", self._retried)
        try:
            chosen = plan_for(s, branch, values)
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
        except KeyboardInterrupt:  # Optuna fails the trial; a resumed study continues it
            shutil.rmtree(self.setup.package_dir(trial.number), ignore_errors=True)
            trial.set_user_attr("error", "interrupted")
            raise
        finally:
            trial.set_user_attr("seconds", round(time.monotonic() - started, 3))
            trial.set_user_attr("steps", self._steps)
        self._clean(trial.number, keep_package=True)
        if not s.folds:
            trial.set_user_attr("package", str(s.package_dir(trial.number)))
        if not math.isfinite(value):
            raise TuneError(f"trial {trial.number} gave a {s.metric} of {value}")
        return value

    # -- one rung ---------------------------------------------------------------------

    def _report(self, trial: optuna.Trial, value: float, step: int = 0) -> None:
        # an epoch's own number, so that a trial resumed from its checkpoint reports the
        # epochs it runs; a strategy that trains twice (auto) counts on
        self._steps = max(self._steps + 1, step)
        trial.report(value, self._steps)
        self._check_time(trial)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after step {self._steps} ({value:.4g})")

    def _check_time(self, trial: optuna.Trial) -> None:
        deadline = self.setup.deadline
        if deadline is not None and time.monotonic() > deadline:
            raise OutOfTime(f"the timeout ended trial {trial.number} after {self._steps} step(s)")

    def _intermediate(self, record: dict[str, float]) -> float:
        """The epoch's value of the study's metric, or the nearest the loop records (the
        loss for a loss-like metric, else accuracy, else the negated loss)."""
        key = f"val_{self.setup.metric}"
        if key in record:
            return float(record[key])
        if self.setup.direction == "minimize":
            return float(record["val_loss"])
        if "val_accuracy" in record:
            return float(record["val_accuracy"])
        return -float(record["val_loss"])

    def _score(self, trained: TrainedModel, data: Dataset) -> float:
        output = trained.predict_proba(data.X)
        return single_metric(data.task, self.setup.metric, data.y, output)

    # -- the three fidelities -----------------------------------------------------------

    def _build(self, chosen: Plan, out: Path, ckpt: Path | None, resume: bool = False) -> float:
        kept: list[float] = []
        build(
            self.setup.data,
            chosen,
            out,
            checkpoint_dir=ckpt,
            resume=resume,
            overwrite=True,
            keep=lambda trained, parts: kept.append(self._score(trained, parts.validation)),
        )
        return kept[0]

    def _epochs(self, trial: optuna.Trial, chosen: Plan) -> float:
        """Loop-trained: every epoch reported. A trial that re-runs one an earlier run left
        unfinished continues from that trial's last checkpoint."""
        retried = self._retried
        ckpt = self.setup.checkpoint_dir(retried if retried is not None else trial.number)

        def report(record: dict[str, float]) -> None:
            self._report(trial, self._intermediate(record), int(record.get("epoch", 0)))

        with on_epoch(report):
            return self._build(
                chosen, self.setup.package_dir(trial.number), ckpt, resume=retried is not None
            )

    def _rows(self, trial: optuna.Trial, chosen: Plan) -> float:
        parts = split_for(self.setup.data, chosen)
        train = parts.train
        for share in ROW_RUNGS[:-1]:
            rows = _subsample(train, share, chosen.seed)
            if rows is None:
                continue  # too few rows for this rung
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
            self._report(trial, self._score(trained, parts.validation))
        value = self._build(chosen, self.setup.package_dir(trial.number), None)
        self._report(trial, value)
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
                    scores.append(self._build(fold_plan, out, None))
                finally:
                    shutil.rmtree(out, ignore_errors=True)
                self._report(trial, float(np.mean(scores)))
        return float(np.mean(scores))

    def _clean(self, number: int, *, keep_package: bool) -> None:
        """Delete a trial's checkpoints (and, when it is pruned or failed, its package)."""
        shutil.rmtree(self.setup.checkpoint_dir(number), ignore_errors=True)
        if self._retried is not None:
            shutil.rmtree(self.setup.checkpoint_dir(self._retried), ignore_errors=True)
        if not keep_package:
            shutil.rmtree(self.setup.package_dir(number), ignore_errors=True)


def retried_from(trial: optuna.Trial) -> int | None:
    """The trial this one runs again: one an interrupted run left unfinished (queued by
    :func:`requeue_unfinished`), or one whose worker stopped beating (Optuna's retry)."""
    mine = trial.user_attrs.get("retried_from")
    if mine is not None:
        return int(mine)
    frozen = trial.study._storage.get_trial(trial._trial_id)  # no public view of system attrs
    theirs = frozen.system_attrs.get("failed_trial")  # set by RetryHeartbeatStaleTrialCallback
    return int(theirs) if theirs is not None else None


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

"""``build(data, plan, out) -> Package``: the one seam through which every stage that trains
a model (train, cross-validation folds, update, pretrain; next compression and tuning)
writes a package.

It splits the data as the plan says, lets the plan's strategy fit on the train part (the
kept model chosen on validation), scores the test part, and exports the package with its
typed lineage: the split and the rows held out, the fold, the parent, the history, the
backbone and the settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tuneserve.data import Dataset, Unlabeled, split_indices
from tuneserve.exceptions import InvalidInputError, PackageError
from tuneserve.lineage import Backbone, Fold, HeldOut, Split
from tuneserve.package import Package

from ._plan import Plan

if TYPE_CHECKING:  # pragma: no cover
    from ._result import TrainedModel


@dataclass(frozen=True)
class Parts:
    """The data a strategy trains on: ``train``, ``validation`` (picks the kept model) and
    ``test`` (scored after training; ``None`` when pretraining). ``test_rows`` are the
    test part's indices in the whole data set."""

    train: Any
    validation: Any
    test: Dataset | None
    test_rows: np.ndarray | None = None


@dataclass(frozen=True)
class Run:
    """How a build runs (not what it trains): per-epoch checkpoints and resuming."""

    checkpoint_dir: Path | None = None
    resume: bool = False


def check_out(out: str | Path, overwrite: bool) -> None:
    """Refuse an existing ``out`` before training, not after."""
    target = Path(out).expanduser()
    if target.exists() and not overwrite:
        raise PackageError(
            f"{target} already exists. Hint: choose another --out, or pass --force to replace it"
        )


def split_for(data: Dataset | Unlabeled, plan: Plan) -> Parts:
    """The plan's split of ``data``."""
    s = plan.split
    if isinstance(data, Unlabeled):
        train, val = data.holdout(s.validation, s.seed)
        return Parts(train, val, None)
    if s.rows is not None:
        train_idx, val_idx, test_idx = s.rows
    else:
        train_idx, val_idx, test_idx = split_indices(
            data, validation=s.validation, test=s.test, seed=s.seed
        )
    return Parts(
        data.subset(train_idx, name=f"{data.name}[train]"),
        data.subset(val_idx, name=f"{data.name}[validation]"),
        data.subset(test_idx, name=f"{data.name}[test]"),
        np.asarray(test_idx, dtype=np.int64),
    )


def _held_out(data: Dataset, plan: Plan, rows: np.ndarray) -> HeldOut:
    s = plan.split
    what = s.what or (
        f"the held-out test split of the training run ({round(100 * s.test)}% of rows, "
        f"seed {s.seed})"
    )
    fingerprint = s.data_fingerprint or data.fingerprint
    return HeldOut(data_fingerprint=fingerprint, rows=rows.tolist(), what=what)


def build(
    data: Dataset | Unlabeled,
    plan: Plan,
    out: str | Path,
    *,
    name: str | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    keep: Callable[[TrainedModel, Parts], None] | None = None,
) -> Package:
    """Train what ``plan`` says on ``data`` and write the package to ``out``.

    Args:
        data: A labeled :class:`Dataset`, or :class:`Unlabeled` for a pretraining plan.
        plan: From :func:`tuneserve.training.plan`.
        out: Package directory.
        name: The package's name (default: ``out``'s folder name).
        checkpoint_dir, resume: Per-epoch checkpoints and continuing an interrupted build
            (loop-trained strategies).
        overwrite: Replace an existing package at ``out``.
        keep: Called with the trained model in memory and the parts it was trained and
            scored on (before export), for callers that use them further (``train``
            returns both; distillation will start from the model).

    Returns:
        The package, written atomically, parity-checked and (labeled data) scored on the
        test part: the manifest's ``test_*`` metrics.

    Raises:
        InvalidInputError: labeled data for a pretraining plan, or the other way round.
    """
    check_out(out, overwrite)
    pretraining = plan.strategy.stage == "pretrain"
    if pretraining != isinstance(data, Unlabeled):
        raise InvalidInputError(
            f"a {plan.strategy.stage} plan needs {'unlabeled' if pretraining else 'labeled'} "
            f"data; {data.name} is {'unlabeled' if isinstance(data, Unlabeled) else 'labeled'}"
        )
    if checkpoint_dir is not None and Path(checkpoint_dir).is_file():
        raise InvalidInputError(f"--checkpoint-dir {checkpoint_dir} is a file; pass a folder")
    if plan.split.data_fingerprint is None and isinstance(data, Unlabeled):
        # what a pretraining run's resume key and lineage name the data by
        plan = replace(plan, split=replace(plan.split, data_fingerprint=data.fingerprint))
    parts = split_for(data, plan)
    run = Run(Path(checkpoint_dir) if checkpoint_dir is not None else None, resume)
    trained = plan.strategy.fit(parts, plan, run)
    if keep is not None:
        keep(trained, parts)
    found = trained.lineage
    lineage = found.model_copy(
        update={
            "backbone": Backbone(
                name=plan.backbone,
                strategy=plan.strategy.name,
                model_arguments=found.backbone.model_arguments if found.backbone else {},
            ),
            "config": {**plan.settings(), **found.config},
            "parent": found.parent or (plan.init.id if plan.init is not None else None),
            "update": plan.update,
            "parent_version": plan.parent_version,
        }
    )
    metrics: dict[str, float] = {}
    if parts.test is not None and isinstance(data, Dataset):
        metrics = trained.score(parts.test, "test")
        assert parts.test_rows is not None
        fold = plan.fold
        lineage = lineage.model_copy(
            update={
                "split": None if fold else Split(**_ratios(plan)),
                "fold": (
                    Fold(
                        fold=fold[0],
                        folds=fold[1],
                        seed=plan.seed,
                        validation=plan.split.validation,
                    )
                    if fold
                    else None
                ),
                "held_out": _held_out(data, plan, parts.test_rows),
            }
        )
        sample = parts.test.X
    else:  # pretraining: parity on the validation part, at least 4 inputs
        sample = list(parts.validation.X) + list(parts.train.X[: max(0, 4 - len(parts.validation))])
        lineage = lineage.model_copy(update={"details": {**lineage.details, **_data(data)}})
    return trained.export(
        out,
        sample,
        name=name or Path(out).name,
        metrics=metrics,
        lineage=lineage,
        overwrite=overwrite,
    )


def _ratios(plan: Plan) -> dict[str, Any]:
    s = plan.split
    return {"seed": s.seed, "validation": s.validation, "test": s.test}


def _data(data: Any) -> dict[str, Any]:
    return {"data": {"source": getattr(data, "source", None), "items": len(data)}}

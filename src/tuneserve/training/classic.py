"""Table models: scikit-learn estimators (one fit) and the torch MLP (the loop)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tuneserve.backbones import BackboneSpec, TableMLP, get_backbone
from tuneserve.backbones.tabular import ScaledOutput
from tuneserve.data import Dataset
from tuneserve.exceptions import DataError, InvalidInputError
from tuneserve.exporters import load_weights
from tuneserve.lineage import Backbone, Lineage
from tuneserve.package import Package
from tuneserve.preprocessing import TablePreprocessor

from ._build import Parts, Run
from ._plan import Plan, Strategy, register_strategy
from ._result import TrainedModel, package_preprocessor
from .budget import Budget, with_budget_record
from .config import TrainConfig
from .head_first import fit_head_first
from .loop import LoopResult, fit


def _check_table(data: Dataset, what: str) -> None:
    if data.modality != "table":
        raise DataError(f"{what} trains on tables; {data.name} is {data.modality} data")


def train_sklearn(
    train: Dataset,
    validation: Dataset | None = None,
    *,
    backbone: str = "logreg",
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
) -> TrainedModel:
    """Fit a registered scikit-learn backbone on a table (classification or regression).

    ``params`` are set on the estimator before it is fit (e.g. ``{"C": 0.5}``)."""
    _check_table(train, f"backbone {backbone!r}")
    spec: BackboneSpec = get_backbone(backbone, "table")
    preprocessor = TablePreprocessor().fit(train.X)
    estimator = spec.factory(train.task == "classification", seed)
    if train.task == "classification" and "cv" in estimator.get_params(deep=False):
        # calibration cross-validates inside the training split: fit the folds to the data
        smallest = min(train.class_counts().values())
        if smallest < 2:
            raise DataError(
                f"backbone {backbone!r} calibrates its probabilities by cross-validation and "
                f"needs 2 training rows per class; the smallest class has {smallest}. Hint: "
                "add data or use --backbone logreg"
            )
        estimator.set_params(cv=min(5, smallest))
    estimator.set_params(**(params or {}))
    estimator.fit(preprocessor.transform(train.X)["input"], train.y)
    trained = TrainedModel(
        model=estimator,
        preprocessor=preprocessor,
        task=train.task,
        label_names=train.label_names,
        data_fingerprint=train.fingerprint,
        lineage=Lineage(
            trainer="train_sklearn",
            backbone=Backbone(name=backbone, strategy="fit"),
            config={"seed": seed, **(params or {})},
        ),
    )
    if validation is not None:
        trained.metrics = trained.score(validation, "val")
    return trained


def train_logistic_regression(
    train: Dataset, validation: Dataset | None = None, *, C: float = 1.0, max_iter: int = 2000
) -> TrainedModel:
    """Fit a standardized logistic regression on a classification table."""
    if train.task != "classification":
        raise DataError(
            f"logistic regression needs classification data; {train.name} is regression"
        )
    params = {"C": C, "max_iter": max_iter}
    return train_sklearn(train, validation, backbone="logreg", params=params)


def train_mlp(
    train: Dataset,
    validation: Dataset,
    config: TrainConfig | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    init: Package | None = None,
    keep_head: bool = False,
    head_first: int = 0,
) -> TrainedModel:
    """Train the torch MLP on a table with the full loop.

    With ``init`` (an MLP package on the same columns) training starts from its weights and
    preprocessing: with a new output layer for these labels (``--from``), or with
    ``keep_head=True`` its own output layer, the labels coded as the package codes them
    (``--update``: continue training on new data). ``head_first``: with a new output
    layer, epochs of it alone before every weight trains (:func:`fit_head_first`).
    """
    _check_table(train, "the MLP")
    config = config or TrainConfig(learning_rate=1e-3)
    classification = train.task == "classification"
    outputs = train.num_classes if classification else 1
    start: _MLPStart | None = None
    torch.manual_seed(config.seed)  # before any new layer is made
    if init is not None:
        start = _mlp_from_package(init)
        preprocessor = start.preprocessor
        if not keep_head:
            last = start.model.net[-1]
            assert isinstance(last, nn.Linear)
            start.model.net[-1] = nn.Linear(last.in_features, outputs)
            start.model.config["outputs"] = outputs
    else:
        preprocessor = TablePreprocessor().fit(train.X)
    x_train = torch.from_numpy(preprocessor.transform(train.X)["input"])
    x_val = torch.from_numpy(preprocessor.transform(validation.X)["input"])

    # regression learns standardized targets; the exported graph scales them back
    if classification:
        mean, std = 0.0, 1.0
    elif start is not None and keep_head:  # the head already predicts the package's scale
        mean, std = start.mean, start.std
    else:
        mean, std = float(np.mean(train.y)), float(np.std(train.y) or 1.0)

    def target(d: Dataset) -> torch.Tensor:
        if classification:
            return torch.from_numpy(d.y)
        return torch.from_numpy(((d.y - mean) / std).astype(np.float32))

    model = start.model if start is not None else TableMLP(x_train.shape[1], outputs)

    def run_fit(settings: TrainConfig) -> LoopResult:
        return fit(
            model,
            ((x_train,), target(train)),
            ((x_val,), target(validation)),
            settings,
            task=train.task,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            data_fingerprint=train.fingerprint,
            description="training mlp",
        )

    first = head_first if start is not None and not keep_head else 0
    result = fit_head_first(model, model.net[-1], first, config, run_fit)
    metrics = result.val_metrics
    if not classification:
        metrics = {"val_mse": metrics["val_loss"] * std**2}
    return TrainedModel(
        model=model if classification else ScaledOutput(model, mean, std),
        preprocessor=preprocessor,
        task=train.task,
        label_names=train.label_names,
        data_fingerprint=train.fingerprint,
        lineage=Lineage(
            trainer="train_mlp",
            backbone=Backbone(name="mlp", strategy="full"),
            config={**config.to_dict(), **({"head_first": first} if first else {})},
            history=result.history,
            best_epoch=result.best_epoch,
            parent=init.id if init is not None else None,
        ),
        metrics=metrics,
    )


@dataclass
class _MLPStart:
    model: TableMLP
    preprocessor: TablePreprocessor
    mean: float
    std: float


def _mlp_from_package(source: Package) -> _MLPStart:
    """The MLP of ``source`` with its trained weights, its preprocessing, and (regression)
    the target scale its output layer predicts in."""
    backbone = source.manifest.lineage.backbone or Backbone()
    model_config = dict(backbone.model_arguments)
    if backbone.model_class not in ("TableMLP", "ScaledOutput") or backbone.name != "mlp":
        raise InvalidInputError(
            f"package {source.path} is not an MLP package (backbone {backbone.name!r}); "
            "the mlp backbone can only continue from one"
        )
    mean = float(model_config.pop("target_mean", 0.0))
    std = float(model_config.pop("target_std", 1.0))
    model = TableMLP(**{**model_config, "hidden": tuple(model_config["hidden"])})
    weights = load_weights(source)
    if backbone.model_class == "ScaledOutput":  # regression: the MLP is wrapped as .model
        weights = {
            k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")
        }
    model.load_state_dict(weights)
    pre = package_preprocessor(source, TablePreprocessor)
    return _MLPStart(model=model, preprocessor=pre, mean=mean, std=std)


def _fit_sklearn(parts: Parts, plan: Plan, run: Run) -> TrainedModel:
    return train_sklearn(
        parts.train,
        parts.validation,
        backbone=plan.backbone,
        seed=plan.seed,
        params=dict(plan.options.estimator),
    )


def fit_mlp(parts: Parts, plan: Plan, run: Run) -> TrainedModel:
    """The MLP's loop; an update continues the package's own output layer."""
    budget = Budget(plan.options.time_budget)
    with budget.watching():
        trained = train_mlp(
            parts.train,
            parts.validation,
            plan.config,
            checkpoint_dir=run.checkpoint_dir,
            resume=run.resume,
            init=plan.init,
            keep_head=plan.strategy.stage == "update",
            head_first=plan.options.head_first,
        )
    return with_budget_record(trained, budget, plan.config.epochs if plan.config else None)


register_strategy(
    Strategy(
        "sklearn",
        "fit",
        _fit_sklearn,
        config_class=None,
        description="one fit (with Options.estimator's parameters, recorded in the config)",
    )
)
register_strategy(
    Strategy(
        "mlp",
        "full",
        fit_mlp,
        defaults={"learning_rate": 1e-3, "epochs": 100, "patience": 15},
        options=("time_budget",),
        description="every weight trained with the loop",
    )
)

"""Table models: scikit-learn estimators (one fit) and the torch MLP (the loop)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuneserve.backbones import BackboneSpec, TableMLP, get_backbone
from tuneserve.backbones.tabular import ScaledOutput
from tuneserve.data import Dataset
from tuneserve.exceptions import DataError
from tuneserve.preprocessing import TablePreprocessor

from ._result import TrainedModel
from .config import TrainConfig
from .loop import fit


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
        config={"trainer": "train_sklearn", "backbone": backbone, "seed": seed, **(params or {})},
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
) -> TrainedModel:
    """Train the torch MLP on a table with the full loop."""
    _check_table(train, "the MLP")
    config = config or TrainConfig(learning_rate=1e-3)
    preprocessor = TablePreprocessor().fit(train.X)
    x_train = torch.from_numpy(preprocessor.transform(train.X)["input"])
    x_val = torch.from_numpy(preprocessor.transform(validation.X)["input"])
    classification = train.task == "classification"

    # regression learns standardized targets; the exported graph scales them back
    mean = 0.0 if classification else float(np.mean(train.y))
    std = 1.0 if classification else float(np.std(train.y) or 1.0)

    def target(d: Dataset) -> torch.Tensor:
        if classification:
            return torch.from_numpy(d.y)
        return torch.from_numpy(((d.y - mean) / std).astype(np.float32))

    torch.manual_seed(config.seed)
    model = TableMLP(x_train.shape[1], train.num_classes if classification else 1)
    result = fit(
        model,
        ((x_train,), target(train)),
        ((x_val,), target(validation)),
        config,
        task=train.task,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        data_fingerprint=train.fingerprint,
        description="training mlp",
    )
    metrics = result.val_metrics
    if not classification:
        metrics = {"val_mse": metrics["val_loss"] * std**2}
    return TrainedModel(
        model=model if classification else ScaledOutput(model, mean, std),
        preprocessor=preprocessor,
        task=train.task,
        label_names=train.label_names,
        data_fingerprint=train.fingerprint,
        config={"trainer": "train_mlp", **config.to_dict(), "best_epoch": result.best_epoch},
        history=result.history,
        metrics=metrics,
    )

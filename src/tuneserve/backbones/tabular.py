"""Table backbones: scikit-learn estimators and a torch MLP."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._registry import BackboneSpec, register_backbone


def _estimator(name: str, classification: bool, seed: int) -> Any:
    from sklearn import ensemble, linear_model, svm
    from sklearn.calibration import CalibratedClassifierCV

    if name == "logreg":
        return (
            linear_model.LogisticRegression(max_iter=2000)
            if classification
            else linear_model.Ridge()
        )
    if name == "linear-svm":
        # LinearSVC has no probabilities; calibration gives them (and converts to ONNX)
        return CalibratedClassifierCV(svm.LinearSVC()) if classification else svm.LinearSVR()
    if name == "sgd":
        if classification:
            return linear_model.SGDClassifier(loss="log_loss", random_state=seed)
        return linear_model.SGDRegressor(random_state=seed)
    if name == "hist-gradient-boosting":
        cls = (
            ensemble.HistGradientBoostingClassifier
            if classification
            else ensemble.HistGradientBoostingRegressor
        )
        return cls(random_state=seed)
    if name == "random-forest":
        cls = ensemble.RandomForestClassifier if classification else ensemble.RandomForestRegressor
        return cls(n_estimators=100, random_state=seed, n_jobs=-1)
    raise KeyError(name)


class TableMLP(nn.Module):
    """A multi-layer perceptron on the preprocessed feature matrix."""

    def __init__(
        self,
        in_features: int,
        outputs: int,
        hidden: tuple[int, ...] = (128, 64),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.config = {
            "in_features": in_features,
            "outputs": outputs,
            "hidden": list(hidden),
            "dropout": dropout,
        }
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, features)`` -> ``(batch, outputs)`` logits or values."""
        return self.net(x)


_DESCRIPTIONS = {
    "logreg": "logistic regression (ridge for regression)",
    "linear-svm": "linear SVM, calibrated for probabilities",
    "sgd": "linear model trained by SGD (supports partial_fit)",
    "random-forest": "random forest of 100 trees",
    "hist-gradient-boosting": "histogram gradient boosting (early stopping on large data)",
}
for _name, _text in _DESCRIPTIONS.items():
    register_backbone(
        BackboneSpec(
            name=_name,
            modality="table",
            family="sklearn",
            description=_text,
            factory=lambda classification, seed, _n=_name: _estimator(_n, classification, seed),
        )
    )
register_backbone(
    BackboneSpec(
        name="mlp",
        modality="table",
        family="mlp",
        description="torch multi-layer perceptron (128-64)",
        factory=TableMLP,
    )
)


class ScaledOutput(nn.Module):
    """Undo target standardization inside the graph: ``out * std + mean``."""

    def __init__(self, model: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.config = {**getattr(model, "config", {}), "target_mean": mean, "target_std": std}

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(*inputs) * self.std + self.mean

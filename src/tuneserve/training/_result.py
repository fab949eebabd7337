"""A trained model in memory, before export: model, preprocessor, history, metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from tuneserve.exceptions import InvalidInputError
from tuneserve.lineage import Lineage
from tuneserve.package import Package
from tuneserve.preprocessing import Preprocessor, preprocessor_from_spec

P = TypeVar("P", bound=Preprocessor)


def package_preprocessor(source: Package, kind: type[P]) -> P:
    """The fitted preprocessor of a package a training run starts from, of the kind the
    backbone needs (a model learned its features on exactly that input)."""
    from tuneserve.ensemble_package import is_ensemble

    if is_ensemble(source.manifest):
        raise InvalidInputError(
            f"package {source.path} is an ensemble; training continues a single model. Hint: "
            "pass one of its members' packages to --from"
        )
    pre = preprocessor_from_spec(source.manifest.preprocessing, source.assets_path)
    if not isinstance(pre, kind):
        raise InvalidInputError(
            f"package {source.path} has {source.manifest.modality} preprocessing; this "
            f"backbone needs a {kind.__name__}"
        )
    return pre


def metrics_of(pred: np.ndarray, y: np.ndarray, task: str, prefix: str) -> dict[str, float]:
    """``{prefix}_accuracy`` of probabilities, or ``{prefix}_mse`` of values."""
    if task == "classification":
        return {f"{prefix}_accuracy": float(np.mean(pred.argmax(1) == y))}
    return {f"{prefix}_mse": float(np.mean((pred.reshape(-1) - y) ** 2))}


@dataclass
class TrainedModel:
    """What a strategy returns; :meth:`export` turns it into a package.

    Attributes:
        model: A torch ``nn.Module`` or a fitted scikit-learn estimator.
        preprocessor: The fitted preprocessor the model was trained behind.
        task: ``classification``, ``regression`` or ``embedding``.
        label_names: Class names in output order (classification).
        data_fingerprint: Fingerprint of the training data, for lineage.
        lineage: What the trainer knows of how it trained: trainer, settings, history,
            best epoch, parent (the package's lineage starts from it).
        metrics: Validation metrics of the kept model.
    """

    model: Any
    preprocessor: Preprocessor
    task: str
    label_names: tuple[str, ...] | None
    data_fingerprint: str
    lineage: Lineage = field(default_factory=Lineage)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def history(self) -> list[dict[str, float]]:
        """One dict of metrics per epoch (empty for one-shot estimators)."""
        return self.lineage.history

    @property
    def best_epoch(self) -> int | None:
        return self.lineage.best_epoch

    @property
    def is_torch(self) -> bool:
        return hasattr(self.model, "state_dict") and hasattr(self.model, "forward")

    def predict_proba(self, inputs: Sequence[Any]) -> np.ndarray:
        """In-memory probabilities (classification) or values (regression) for raw inputs."""
        feed = self.preprocessor.transform(inputs)
        if self.is_torch:
            import torch

            self.model.eval()
            with torch.no_grad():
                out = self.model(*(torch.from_numpy(v) for v in feed.values()))
            if self.task == "classification":
                return torch.softmax(out.float(), dim=-1).numpy()
            return out.float().reshape(-1).numpy()
        if self.task == "classification":
            return np.asarray(self.model.predict_proba(feed["input"]))
        return np.asarray(self.model.predict(feed["input"]))

    def score(self, data: Any, prefix: str) -> dict[str, float]:
        """Accuracy (classification) or mean squared error (regression) on a data set,
        named ``{prefix}_accuracy`` or ``{prefix}_mse``."""
        return metrics_of(self.predict_proba(data.X), data.y, self.task, prefix)

    def export(
        self,
        out: str | Path,
        sample_inputs: Sequence[Any],
        *,
        name: str | None = None,
        metrics: dict[str, float] | None = None,
        lineage: Lineage | None = None,
        torchscript: bool = False,
        overwrite: bool = False,
    ) -> Package:
        """Write the model as a package; parity is checked on ``sample_inputs``.

        ``lineage`` (default: :attr:`lineage`) is recorded in the manifest."""
        common: dict[str, Any] = {
            "task": self.task,
            "sample_inputs": sample_inputs,
            "label_names": self.label_names,
            "name": name,
            "metrics": {**self.metrics, **(metrics or {})},
            "data_fingerprint": self.data_fingerprint,
            "lineage": lineage or self.lineage,
            "overwrite": overwrite,
        }
        if self.is_torch:
            from tuneserve.exporters import export_torch

            return export_torch(
                self.model, self.preprocessor, out, torchscript=torchscript, **common
            )
        from tuneserve.exporters import export_sklearn

        return export_sklearn(self.model, self.preprocessor, out, **common)

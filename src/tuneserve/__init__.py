"""tuneserve: turn a pretrained model into a served, versioned, compressed classifier.

The public API is what ``__all__`` lists. Names load lazily, so ``import tuneserve`` stays
fast and never imports torch; torch loads only when a training or export name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tuneserve._version import __version__

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from tuneserve.backbones import SmallCNN
    from tuneserve.data import Dataset, Splits, kfold, load_unlabeled, split
    from tuneserve.data import load as load_dataset
    from tuneserve.evaluation import Evaluation
    from tuneserve.exceptions import (
        ChecksumError,
        DataError,
        ExportError,
        InvalidInputError,
        NotFoundError,
        PackageError,
        PackageFormatError,
        TuneserveError,
    )
    from tuneserve.exporters import export_sklearn, export_torch, export_torchscript
    from tuneserve.lineage import Lineage
    from tuneserve.package import Manifest, Package
    from tuneserve.preprocessing import ImagePreprocessor, TablePreprocessor, TextPreprocessor
    from tuneserve.runtime import Prediction, Predictor
    from tuneserve.stages import cross_validate, evaluate, pretrain, train, tune, update
    from tuneserve.training import (
        CNNConfig,
        Plan,
        TrainConfig,
        TrainedModel,
        build,
        plan,
        train_cnn,
        train_logistic_regression,
    )
    from tuneserve.tuning import TuneResult

_EXPORTS: dict[str, tuple[str, str]] = {
    "Dataset": ("tuneserve.data", "Dataset"),
    "Splits": ("tuneserve.data", "Splits"),
    "load_dataset": ("tuneserve.data", "load"),
    "split": ("tuneserve.data", "split"),
    "kfold": ("tuneserve.data", "kfold"),
    "Package": ("tuneserve.package", "Package"),
    "Manifest": ("tuneserve.package", "Manifest"),
    "Predictor": ("tuneserve.runtime", "Predictor"),
    "evaluate": ("tuneserve.stages", "evaluate"),
    "cross_validate": ("tuneserve.stages", "cross_validate"),
    "build": ("tuneserve.training", "build"),
    "plan": ("tuneserve.training", "plan"),
    "Plan": ("tuneserve.training", "Plan"),
    "Lineage": ("tuneserve.lineage", "Lineage"),
    "Evaluation": ("tuneserve.evaluation", "Evaluation"),
    "Prediction": ("tuneserve.runtime", "Prediction"),
    "ImagePreprocessor": ("tuneserve.preprocessing", "ImagePreprocessor"),
    "TablePreprocessor": ("tuneserve.preprocessing", "TablePreprocessor"),
    "TextPreprocessor": ("tuneserve.preprocessing", "TextPreprocessor"),
    "export_torch": ("tuneserve.exporters", "export_torch"),
    "export_sklearn": ("tuneserve.exporters", "export_sklearn"),
    "export_torchscript": ("tuneserve.exporters", "export_torchscript"),
    "SmallCNN": ("tuneserve.backbones", "SmallCNN"),
    "CNNConfig": ("tuneserve.training", "CNNConfig"),
    "TrainedModel": ("tuneserve.training", "TrainedModel"),
    "train_cnn": ("tuneserve.training", "train_cnn"),
    "train": ("tuneserve.stages", "train"),
    "update": ("tuneserve.stages", "update"),
    "pretrain": ("tuneserve.stages", "pretrain"),
    "compress": ("tuneserve.stages", "compress"),
    "tune": ("tuneserve.stages", "tune"),
    "TuneResult": ("tuneserve.tuning", "TuneResult"),
    "CompressionResult": ("tuneserve.compression", "CompressionResult"),
    "load_unlabeled": ("tuneserve.data", "load_unlabeled"),
    "TrainConfig": ("tuneserve.training", "TrainConfig"),
    "train_logistic_regression": ("tuneserve.training", "train_logistic_regression"),
    **{
        name: ("tuneserve.exceptions", name)
        for name in (
            "ChecksumError",
            "DataError",
            "ExportError",
            "InvalidInputError",
            "NotFoundError",
            "PackageError",
            "PackageFormatError",
            "TuneserveError",
        )
    },
}

__all__ = [
    "CNNConfig",
    "ChecksumError",
    "CompressionResult",
    "DataError",
    "Dataset",
    "Evaluation",
    "ExportError",
    "ImagePreprocessor",
    "InvalidInputError",
    "Lineage",
    "Manifest",
    "NotFoundError",
    "Package",
    "PackageError",
    "PackageFormatError",
    "Plan",
    "Prediction",
    "Predictor",
    "SmallCNN",
    "Splits",
    "TablePreprocessor",
    "TextPreprocessor",
    "TrainConfig",
    "TrainedModel",
    "TuneResult",
    "TuneserveError",
    "__version__",
    "build",
    "compress",
    "cross_validate",
    "evaluate",
    "export_sklearn",
    "export_torch",
    "export_torchscript",
    "kfold",
    "load_dataset",
    "load_unlabeled",
    "plan",
    "pretrain",
    "split",
    "train",
    "train_cnn",
    "train_logistic_regression",
    "tune",
    "update",
]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'tuneserve' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

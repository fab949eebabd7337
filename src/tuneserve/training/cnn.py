"""Train the built-in CNN from scratch on image classification data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuneserve.backbones.cnn import SmallCNN
from tuneserve.data import Dataset
from tuneserve.exceptions import DataError, InvalidInputError
from tuneserve.exporters import load_weights
from tuneserve.lineage import Backbone, Lineage
from tuneserve.package import Package
from tuneserve.preprocessing import ImagePreprocessor

from ._build import Parts, Run
from ._plan import Plan, Strategy, register_strategy
from ._result import TrainedModel, package_preprocessor
from .augment import ImageAugment
from .budget import Budget, with_budget_record
from .config import TrainConfig
from .head_first import fit_head_first
from .loop import LoopResult, fit


@dataclass
class CNNConfig(TrainConfig):
    """Settings of :func:`train_cnn`: the loop's, plus the network's size and augmentation."""

    width: int = 32
    hidden: int = 128
    augment: bool = True
    augment_strength: float = 1.0  # times the default rotation and shift, and zoom range

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.augment_strength <= 5:
            raise InvalidInputError(
                f"augment_strength must be in [0, 5] (1 = rotations of 10 degrees, shifts of "
                f"10%), got {self.augment_strength}"
            )
        for name in ("width", "hidden"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}")


def train_cnn(
    train: Dataset,
    validation: Dataset,
    config: CNNConfig | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    init: Package | None = None,
    head_first: int = 0,
) -> TrainedModel:
    """Train :class:`SmallCNN` on an image classification data set, from scratch or, with
    ``init``, from the CNN of another package (supervised transfer: its weights and
    preprocessing, with a new output layer for these labels; ``head_first`` epochs of that
    layer alone first, see :func:`fit_head_first`).

    Each epoch trains on ``train`` and scores ``validation``; the best epoch is kept;
    training stops after ``patience`` epochs without gain. With ``checkpoint_dir`` every
    epoch is checkpointed, and ``resume=True`` continues an interrupted run.

    Raises:
        DataError: the data is not image classification.
    """
    config = config or CNNConfig()
    if train.modality != "image" or train.task != "classification":
        raise DataError(
            f"the CNN trains on image classification data; {train.name} is "
            f"{train.modality} {train.task}"
        )
    torch.manual_seed(config.seed)
    if init is not None:
        model, preprocessor = _from_package(init, train.num_classes)
    else:
        preprocessor = cnn_preprocessor(train.X)
        model = new_cnn(preprocessor, train.num_classes, config)
    x_train = torch.from_numpy(preprocessor.transform(train.X)["input"])  # (n, c, h, w)
    x_val = torch.from_numpy(preprocessor.transform(validation.X)["input"])

    def run_fit(settings: TrainConfig) -> LoopResult:
        return fit(
            model,
            ((x_train,), torch.from_numpy(train.y)),
            ((x_val,), torch.from_numpy(validation.y)),
            settings,
            augment=_augment(config),
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            data_fingerprint=train.fingerprint,
            description="training cnn",
        )

    first = head_first if init is not None else 0
    result = fit_head_first(model, model.head[-1], first, config, run_fit)
    return TrainedModel(
        model=model,
        preprocessor=preprocessor,
        task="classification",
        label_names=train.label_names,
        data_fingerprint=train.fingerprint,
        lineage=Lineage(
            trainer="train_cnn",
            backbone=Backbone(name="cnn", strategy="full"),
            config={**config.to_dict(), **({"head_first": first} if first else {})},
            history=result.history,
            best_epoch=result.best_epoch,
            parent=init.id if init is not None else None,
        ),
        metrics=result.val_metrics,
    )


def cnn_preprocessor(images: Any) -> ImagePreprocessor:
    """Fitted on ``images``: their most common size, cut down to a multiple of 4 (the CNN
    pools twice by 2), their channels, mean and std."""
    preprocessor = ImagePreprocessor().fit(images)
    h, w = preprocessor.size or (8, 8)  # fit always sets the size
    size = (h - h % 4 or 4, w - w % 4 or 4)
    if size != preprocessor.size:
        preprocessor = ImagePreprocessor(size=size, channels=preprocessor.channels)
        preprocessor.fit(images)
    return preprocessor


def new_cnn(preprocessor: ImagePreprocessor, outputs: int, config: CNNConfig) -> SmallCNN:
    """An untrained :class:`SmallCNN` for the preprocessor's images."""
    return SmallCNN(
        num_classes=outputs,
        in_channels=preprocessor.channels or 1,
        image_size=preprocessor.size or (8, 8),
        width=config.width,
        hidden=config.hidden,
    )


def _from_package(source: Package, num_classes: int) -> tuple[SmallCNN, ImagePreprocessor]:
    """The CNN of ``source`` with a fresh output layer of ``num_classes``, and its
    preprocessing (the features were learned on exactly that input)."""
    backbone = source.manifest.lineage.backbone or Backbone()
    cfg = backbone.model_arguments
    if backbone.model_class != "SmallCNN" or not cfg:
        raise InvalidInputError(
            f"--from package {source.path} is not a built-in CNN package; the cnn backbone can "
            "only continue from one"
        )
    model = SmallCNN(**{**cfg, "image_size": tuple(cfg["image_size"])})
    model.load_state_dict(load_weights(source))
    model.head[-1] = torch.nn.Linear(int(cfg["hidden"]), num_classes)
    model.config["num_classes"] = num_classes
    return model, package_preprocessor(source, ImagePreprocessor)


def _fit_cnn(parts: Parts, plan: Plan, run: Run) -> TrainedModel:
    config = plan.config if isinstance(plan.config, CNNConfig) else None
    config = config or CNNConfig(**(plan.config.to_dict() if plan.config else {}))
    budget = Budget(plan.options.time_budget)
    with budget.watching():
        trained = train_cnn(
            parts.train,
            parts.validation,
            config,
            checkpoint_dir=run.checkpoint_dir,
            resume=run.resume,
            init=plan.init,
            head_first=plan.options.head_first,
        )
    return with_budget_record(trained, budget, config.epochs)


def _augment(config: CNNConfig) -> ImageAugment | None:
    k = config.augment_strength
    if not config.augment or k == 0:
        return None
    zoom = 0.1 * k
    return ImageAugment(
        rotation=10.0 * k, translation=min(0.1 * k, 0.5), scale=(max(0.1, 1 - zoom), 1 + zoom)
    )


register_strategy(
    Strategy(
        "cnn",
        "full",
        _fit_cnn,
        config_class=CNNConfig,
        options=("time_budget",),
        description="every weight trained with the loop (from scratch, or --from a package)",
    )
)

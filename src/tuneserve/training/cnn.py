"""A minimal, real training loop for the built-in CNN (the full loop comes with strategies)."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tuneserve.backbones.cnn import SmallCNN
from tuneserve.data import Dataset
from tuneserve.exceptions import DataError, InvalidInputError
from tuneserve.preprocessing import ImagePreprocessor
from tuneserve.progress import progress_bar

from ._result import TrainedModel


@dataclass
class CNNConfig:
    """Hyperparameters of :func:`train_cnn`."""

    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 12
    seed: int = 0
    width: int = 32
    hidden: int = 128

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience", "width", "hidden"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise InvalidInputError(f"learning_rate must be > 0, got {self.learning_rate}")


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y).item()
        acc = (logits.argmax(1) == y).float().mean().item()
    return loss, acc


def train_cnn(train: Dataset, validation: Dataset, config: CNNConfig | None = None) -> TrainedModel:
    """Train :class:`SmallCNN` from scratch on an image classification data set.

    Each epoch trains on ``train`` and scores ``validation``; the epoch with the best
    validation accuracy is kept; training stops after ``patience`` epochs without gain.

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
    generator = torch.Generator().manual_seed(config.seed)
    preprocessor = ImagePreprocessor()
    preprocessor.fit(train.X)
    h, w = preprocessor.size or (8, 8)  # fit always sets the size
    size = (h - h % 4 or 4, w - w % 4 or 4)  # the CNN pools twice by 2
    if size != preprocessor.size:
        preprocessor = ImagePreprocessor(size=size, channels=preprocessor.channels).fit(train.X)
    channels, image_size = preprocessor.channels or 1, preprocessor.size or size
    x_train = torch.from_numpy(preprocessor.transform(train.X)["input"])  # (n, c, h, w)
    y_train = torch.from_numpy(train.y)
    x_val = torch.from_numpy(preprocessor.transform(validation.X)["input"])
    y_val = torch.from_numpy(validation.y)

    model = SmallCNN(
        num_classes=train.num_classes,
        in_channels=channels,
        image_size=image_size,
        width=config.width,
        hidden=config.hidden,
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    history: list[dict[str, float]] = []
    best_acc, best_loss, best_state, best_epoch, stale = (
        -1.0,
        float("inf"),
        copy.deepcopy(model.state_dict()),
        0,
        0,
    )
    steps = int(np.ceil(len(x_train) / config.batch_size))
    with progress_bar("training cnn", total=config.epochs * steps) as advance:
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = torch.randperm(len(x_train), generator=generator)
            total = 0.0
            for start in range(0, len(order), config.batch_size):
                idx = order[start : start + config.batch_size]
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
                advance(1, loss=loss.item())
            scheduler.step()
            val_loss, val_acc = _accuracy(model, x_val, y_val)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": total / len(x_train),
                    "val_loss": val_loss,
                    "val_accuracy": val_acc,
                }
            )
            # Accuracy on a small validation set ties often; the lower loss breaks ties.
            if (val_acc, -val_loss) > (best_acc, -best_loss):
                best_acc, best_loss, best_epoch, stale = val_acc, val_loss, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if stale >= config.patience:
                    advance((config.epochs - epoch) * steps)
                    break
    model.load_state_dict(best_state)
    model.eval()
    cfg: dict[str, Any] = {"trainer": "train_cnn", **asdict(config), "best_epoch": best_epoch}
    return TrainedModel(
        model=model,
        preprocessor=preprocessor,
        task="classification",
        label_names=train.label_names,
        data_fingerprint=train.fingerprint,
        config=cfg,
        history=history,
        metrics={"val_accuracy": best_acc},
    )

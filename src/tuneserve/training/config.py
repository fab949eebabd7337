"""The training loop's configuration, validated where it enters."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from tuneserve.exceptions import InvalidInputError

Optimizer = Literal["adamw", "sgd"]
Schedule = Literal["constant", "cosine", "step", "multistep"]
Precision = Literal["off", "auto", "bf16", "fp16"]


@dataclass
class TrainConfig:
    """Everything that decides how a torch model is trained.

    Attributes:
        epochs: Most epochs to run (early stopping may end sooner).
        batch_size: Examples per forward pass.
        optimizer: ``adamw`` or ``sgd`` (with ``momentum``, Nesterov).
        learning_rate, weight_decay, momentum: optimizer settings.
        schedule: ``constant``, ``cosine`` (to 0 at the last step), ``step`` (times ``gamma``
            every ``step_size`` epochs) or ``multistep`` (times ``gamma`` at ``milestones``).
        warmup_epochs: Linear warm-up from 0 over this many epochs (fractions allowed).
        grad_accumulation: Optimizer step every this many batches.
        clip_grad_norm: Clip the gradient norm to this value (None: no clipping).
        class_weights: Weight the loss by inverse class frequency (imbalanced data).
        mixed_precision: ``off``; ``bf16`` autocast (CPU or CUDA); ``fp16`` (CUDA, with loss
            scaling); ``auto`` = bf16 on CUDA where supported, else fp16 on CUDA; on CPU bf16
            where the processor computes it natively (AVX512-BF16, AMX), else off.
        patience: Stop after this many epochs without improvement (None: never).
        monitor: ``val_accuracy`` (higher is better) or ``val_loss`` (lower is better).
        seed: Seeds weights, batch order, dropout and augmentation.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        backbone_lr_scale: Learning rate of everything but the model's ``head``, as a
            fraction of ``learning_rate`` (fine-tuning a pretrained body gently).
        layer_decay: Layer-wise learning-rate decay for models with ``blocks()``: each block
            below the head learns ``layer_decay`` times slower than the one above it.
    """

    epochs: int = 30
    batch_size: int = 64
    optimizer: Optimizer = "adamw"
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: Schedule = "cosine"
    warmup_epochs: float = 0.0
    step_size: int = 10
    gamma: float = 0.1
    milestones: tuple[int, ...] = field(default_factory=tuple)
    grad_accumulation: int = 1
    clip_grad_norm: float | None = None
    class_weights: bool = False
    mixed_precision: Precision = "off"
    patience: int | None = 12
    monitor: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backbone_lr_scale: float = 1.0
    layer_decay: float = 1.0

    def __post_init__(self) -> None:
        self.milestones = tuple(int(m) for m in self.milestones)
        for name in ("epochs", "batch_size", "grad_accumulation", "step_size"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.patience is not None and self.patience < 1:
            raise InvalidInputError(f"patience must be >= 1 or None, got {self.patience}")
        if not 0 < self.layer_decay <= 1:
            raise InvalidInputError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if not 0 < self.backbone_lr_scale <= 1:
            raise InvalidInputError(
                f"backbone_lr_scale must be in (0, 1], got {self.backbone_lr_scale}"
            )
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise InvalidInputError(f"learning_rate must be a number > 0, got {self.learning_rate}")
        if not 0 <= self.seed < 2**32:
            raise InvalidInputError(f"seed must be in [0, 2**32), got {self.seed}")
        if not 0 <= self.warmup_epochs < self.epochs:  # also refuses NaN
            raise InvalidInputError(
                f"warmup_epochs must be in [0, epochs={self.epochs}), got {self.warmup_epochs}"
            )
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise InvalidInputError(f"clip_grad_norm must be > 0, got {self.clip_grad_norm}")
        choices: dict[str, tuple[str, ...]] = {
            "optimizer": ("adamw", "sgd"),
            "schedule": ("constant", "cosine", "step", "multistep"),
            "mixed_precision": ("off", "auto", "bf16", "fp16"),
            "monitor": ("val_accuracy", "val_loss"),
            "device": ("auto", "cpu", "cuda"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InvalidInputError(
                    f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"
                )
        if self.schedule == "multistep" and not self.milestones:
            raise InvalidInputError("schedule 'multistep' needs milestones, e.g. (10, 20)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as recorded in the package's training config."""
        out = asdict(self)
        out["milestones"] = list(self.milestones)
        return out

    def fingerprint(self) -> str:
        """A hash of the settings that change the result (a resume must match it)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

"""Fine-tune a Hugging Face vision model on images: probe, partial, full, or LoRA."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from tuneserve.backbones.vision import VisionClassifier, load_vision_model, vision_preprocessor
from tuneserve.data import Dataset
from tuneserve.exceptions import DataError
from tuneserve.package import Package
from tuneserve.preprocessing import ImagePreprocessor

from ._result import TrainedModel, package_preprocessor
from .auto import register_auto
from .config import TrainConfig
from .encoder import (
    EncoderRun,
    check_strategy_name,
    encoder_from_package,
    fine_tune,
    new_head,
    register_encoder_strategies,
)
from .feature_cache import FeatureCache, backbone_identity


def train_vision(
    train: Dataset,
    validation: Dataset,
    *,
    backbone: str,
    strategy: str = "probe",
    config: TrainConfig | None = None,
    unfreeze: int = 2,
    lora_rank: int = 8,
    cache: FeatureCache | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    init: Package | None = None,
) -> TrainedModel:
    """Turn a pretrained Hugging Face vision model (id or local folder with a config, weights
    and preferably a preprocessor config) into a classifier or regressor for ``train``.

    Images are resized and normalized as the model's ``AutoImageProcessor`` says (see
    :func:`tuneserve.backbones.vision.vision_preprocessor`). Strategies as for text:
    ``probe`` (cached features), ``partial``, ``full``, ``lora``.

    Raises:
        DataError: the data is not images.
        NotFoundError: the model cannot be loaded.
    """
    if train.modality != "image":
        raise DataError(f"vision backbones train on images; {train.name} is {train.modality}")
    check_strategy_name(strategy)
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    run, extra = vision_run(train, backbone=backbone, init=init)
    run = replace(run, strategy=strategy, unfreeze=unfreeze, lora_rank=lora_rank)
    return fine_tune(
        run,
        train,
        validation,
        config,
        trainer="train_vision",
        extra=extra,
        cache=cache,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
    )


def vision_run(
    train: Dataset, *, backbone: str, init: Package | None = None
) -> tuple[EncoderRun, dict[str, Any]]:
    """The model (pretrained, or ``init``'s, with a new head for ``train``'s labels), its
    image preprocessing and identity, ready for :func:`fine_tune`; and the settings to
    record. Seed torch first: the head is drawn here."""
    if train.modality != "image":
        raise DataError(f"vision backbones train on images; {train.name} is {train.modality}")
    outputs = train.num_classes if train.task == "classification" else 1
    if init is not None:
        model, backbone = encoder_from_package(
            init, VisionClassifier, load_vision_model, "vision-model"
        )
        new_head(model, outputs)
        preprocessor = package_preprocessor(init, ImagePreprocessor)
        identity = f"package:{init.id}"
    else:
        encoder = load_vision_model(backbone)
        model = VisionClassifier(encoder, outputs)
        preprocessor = vision_preprocessor(backbone, encoder)
        identity = backbone_identity(backbone)
    run = EncoderRun(
        model=model,
        preprocessor=preprocessor,
        identity=identity,
        parent=init.id if init is not None else None,
    )
    return run, {"backbone": backbone}


# transformers: bf16 autocast where the hardware has it ("auto"; about 2x on CPU)
_AUTO = {"mixed_precision": "auto"}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "partial": {"learning_rate": 2e-4, "epochs": 10, "batch_size": 32, **_AUTO},
    "full": {"learning_rate": 1e-4, "epochs": 10, "batch_size": 32, **_AUTO},
    "lora": {"learning_rate": 2e-3, "epochs": 10, "batch_size": 32, **_AUTO},
}
# auto first: the family's default
register_auto(
    "vision",
    lambda train, plan: vision_run(train, backbone=plan.backbone, init=plan.init),
    _DEFAULTS["full"],
)
register_encoder_strategies("vision", train_vision, _DEFAULTS)

"""Fine-tune a text encoder: linear probe on cached features, partial, full, or LoRA."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from tuneserve.backbones.text import TextClassifier, load_encoder, resolve_text_model
from tuneserve.data import Dataset
from tuneserve.exceptions import DataError
from tuneserve.package import Package
from tuneserve.preprocessing import TextPreprocessor

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


def train_text(
    train: Dataset,
    validation: Dataset,
    *,
    backbone: str = "minilm",
    strategy: str = "probe",
    config: TrainConfig | None = None,
    max_length: int = 128,
    unfreeze: int = 2,
    lora_rank: int = 8,
    cache: FeatureCache | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    init: Package | None = None,
) -> TrainedModel:
    """Turn a pretrained text encoder into a classifier (or regressor) for ``train``.

    Strategies (see :func:`tuneserve.training.encoder.fine_tune`): ``probe`` (frozen encoder,
    cached features, linear head), ``partial`` (the last ``unfreeze`` blocks), ``full``,
    ``lora`` (adapters merged into the weights before export).

    With ``init``, the encoder (and tokenizer) of that package is the starting point, with a
    new head for these labels: supervised transfer, or a ``tuneserve pretrain`` encoder.

    Raises:
        DataError: the data is not text.
        InvalidInputError: unknown strategy, or ``unfreeze`` out of range.
    """
    if train.modality != "text":
        raise DataError(f"text backbones train on text data; {train.name} is {train.modality}")
    check_strategy_name(strategy)
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    run, extra = text_run(train, backbone=backbone, max_length=max_length, init=init)
    run = replace(run, strategy=strategy, unfreeze=unfreeze, lora_rank=lora_rank)
    return fine_tune(
        run,
        train,
        validation,
        config,
        trainer="train_text",
        extra=extra,
        cache=cache,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
    )


def text_run(
    train: Dataset, *, backbone: str, max_length: int, init: Package | None = None
) -> tuple[EncoderRun, dict[str, Any]]:
    """The model (pretrained encoder, or ``init``'s, with a new head for ``train``'s
    labels), its tokenizer and identity, ready for :func:`fine_tune`; and the settings to
    record. Seed torch first: the head is drawn here."""
    if train.modality != "text":
        raise DataError(f"text backbones train on text data; {train.name} is {train.modality}")
    outputs = train.num_classes if train.task == "classification" else 1
    if init is not None:
        model, preprocessor, backbone = _from_package(init, outputs)
        identity = f"package:{init.id}"
    else:
        preprocessor = TextPreprocessor(resolve_text_model(backbone), max_length=max_length)
        model = TextClassifier(load_encoder(backbone), outputs)
        identity = backbone_identity(resolve_text_model(backbone))
    run = EncoderRun(
        model=model,
        preprocessor=preprocessor,
        identity=identity,
        parent=init.id if init is not None else None,
    )
    return run, {"backbone": backbone, "max_length": max_length}


def _from_package(source: Package, outputs: int) -> tuple[TextClassifier, TextPreprocessor, str]:
    """The encoder and tokenizer of ``source``, with a fresh head of ``outputs``."""
    model, backbone = encoder_from_package(source, TextClassifier, load_encoder, "text-encoder")
    new_head(model, outputs)
    return model, package_preprocessor(source, TextPreprocessor), backbone


# transformers: bf16 autocast where the hardware has it ("auto"; about 2x on CPU)
_AUTO = {"mixed_precision": "auto"}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "partial": {"learning_rate": 1e-4, "epochs": 4, "batch_size": 16, **_AUTO},
    "full": {"learning_rate": 5e-5, "epochs": 3, "batch_size": 16, **_AUTO},
    "lora": {"learning_rate": 2e-3, "epochs": 5, "batch_size": 16, **_AUTO},
}
# auto first: the family's default
register_auto(
    "text",
    lambda train, plan: text_run(
        train, backbone=plan.backbone, max_length=plan.options.max_length, init=plan.init
    ),
    _DEFAULTS["full"],
)
register_encoder_strategies("text", train_text, _DEFAULTS)

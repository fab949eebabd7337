"""``tuneserve pretrain UNLABELED --out B``: learn a feature extractor without labels.

Images: the built-in CNN by SimCLR-style contrastive learning (default) or as a denoising
autoencoder; a Hugging Face vision model by contrastive learning. Text: continued training
of the encoder with SimCSE-style contrastive learning. The result is an ``embedding``
package (its graph outputs features, served like any package) that ``train --from B``
fine-tunes with a new head.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from tuneserve.backbones import (
    HF_VISION,
    TextClassifier,
    VisionClassifier,
    load_encoder,
    load_vision_model,
    resolve_text_model,
    vision_preprocessor,
)
from tuneserve.data import DEFAULT_HOLDOUT, Unlabeled, load_unlabeled
from tuneserve.exceptions import InvalidInputError
from tuneserve.exporters import export_torch
from tuneserve.package import Package
from tuneserve.preprocessing import Preprocessor, TextPreprocessor

from .cnn import CNNConfig, cnn_preprocessor, new_cnn
from .config import TrainConfig
from .loop import fit
from .objectives import Contrastive, Denoising, image_views, text_views

#: Objectives per backbone family; the first is the default.
OBJECTIVES = {
    "cnn": ("contrastive", "denoise"),
    "vision": ("contrastive",),
    "text": ("contrastive",),
}
#: Width of the CNN's contrastive projection (its last layer, dropped when fine-tuning).
PROJECTION = 64

_DEFAULTS: dict[str, dict[str, Any]] = {
    "cnn": {"epochs": 40, "batch_size": 256, "learning_rate": 2e-3, "patience": 10},
    "vision": {"epochs": 10, "batch_size": 64, "learning_rate": 1e-4, "patience": 5},
    "text": {"epochs": 2, "batch_size": 32, "learning_rate": 3e-5, "patience": None},
}


@dataclass
class PretrainResult:
    """The feature-extractor package and how pretraining went."""

    package: Package
    history: list[dict[str, float]]
    best_epoch: int
    objective: str
    run_id: str | None = None  # the MLflow run that tracked it


def pretrain_defaults(family: str, **overrides: Any) -> TrainConfig:
    """The settings ``pretrain`` uses for a backbone family: ``cnn``, ``vision`` or ``text``
    (see :func:`tuneserve.training.api.backbone_family`)."""
    base = CNNConfig(augment=False) if family == "cnn" else TrainConfig()
    base = replace(base, monitor="val_loss", **_DEFAULTS[family])
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def pretrain(
    data: Unlabeled | str | Path,
    out: str | Path,
    *,
    backbone: str | None = None,
    objective: str | None = None,
    config: TrainConfig | None = None,
    seed: int = 0,
    validation: float = DEFAULT_HOLDOUT,
    max_length: int = 128,
    text_column: str | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    tracked: bool | None = None,
) -> PretrainResult:
    """Pretrain a backbone on unlabeled images or texts and write an embedding package.

    Args:
        data: :class:`tuneserve.data.Unlabeled`, or what :func:`load_unlabeled` takes: a
            built-in name (labels ignored), an image folder, a ``.txt`` file (one text per
            line) or a table file with a text column.
        out: Package directory.
        backbone: ``cnn`` (default for images), a Hugging Face vision model id or path,
            or a text encoder (``minilm``, default for text, or an id or path).
        objective: ``contrastive`` (default) or, for the CNN, ``denoise``.
        config: Loop settings (default: :func:`pretrain_defaults`); the kept epoch is the
            one with the lowest validation loss of the objective.
        seed, validation: The random holdout the validation loss is measured on.
        max_length: Text: tokens kept.
        checkpoint_dir, resume: Per-epoch checkpoints and continuing an interrupted run.
        overwrite: Replace an existing package at ``out``.
        tracked: Log the run to MLflow (default: on unless ``TUNESERVE_TRACKING=0``).

    Raises:
        InvalidInputError: table data, an unknown objective, or a backbone of another kind.
    """
    from .api import backbone_family, check_out, resolve_backbone, track

    check_out(out, overwrite)
    unlabeled = (
        data if isinstance(data, Unlabeled) else load_unlabeled(data, text_column=text_column)
    )
    if unlabeled.modality not in ("image", "text"):
        raise InvalidInputError(
            f"pretrain learns from images or text; {unlabeled.name} is {unlabeled.modality} "
            "data. Hint: for tables, train directly, or use --update to add new rows later"
        )
    name, spec, _ = resolve_backbone(unlabeled.modality, backbone, None)
    family = backbone_family(name, unlabeled.modality)
    allowed = OBJECTIVES[family]
    objective = objective or allowed[0]
    if objective not in allowed:
        raise InvalidInputError(
            f"objective {objective!r} is not available for backbone {name!r}; it has "
            f"{', '.join(allowed)}"
        )
    config = config or pretrain_defaults(family, seed=seed)
    torch.manual_seed(config.seed)
    train, val = unlabeled.holdout(validation, seed)

    model: Any
    preprocessor: Preprocessor
    if family == "cnn":
        cnn_config = config if isinstance(config, CNNConfig) else CNNConfig()
        preprocessor = cnn_preprocessor(train.X)
        (h, w), channels = preprocessor.size or (8, 8), preprocessor.channels or 1
        outputs = PROJECTION if objective == "contrastive" else channels * h * w
        model = new_cnn(preprocessor, outputs, cnn_config)
        task: Any = (
            Contrastive(model, model, image_views(), temperature=0.2)
            if objective == "contrastive"
            else Denoising(model)
        )
    elif spec.name == HF_VISION:
        encoder = load_vision_model(name)
        model = VisionClassifier(encoder, outputs=1)
        preprocessor = vision_preprocessor(name, encoder)
        task = Contrastive(model, model.embed, image_views(), temperature=0.2)
    else:
        model = TextClassifier(load_encoder(name), outputs=1)
        preprocessor = TextPreprocessor(resolve_text_model(name), max_length=max_length)
        task = Contrastive(model, model.embed, text_views(), temperature=0.05)

    def tensors(part: Unlabeled) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        feed = preprocessor.transform(part.X)
        return tuple(torch.from_numpy(v) for v in feed.values()), torch.zeros(len(part))

    result = fit(
        task,
        tensors(train),
        tensors(val),
        config,
        task="self-supervised",
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        # a resume must continue the same run: same data, backbone, objective and holdout
        data_fingerprint=f"{unlabeled.fingerprint}|{name}|{objective}|{max_length}|"
        f"{seed}|{validation}",
        description=f"pretraining ({objective})",
    )
    model.eval()
    samples = list(val.X) + list(train.X[: max(0, 4 - len(val))])
    size = int(model.config.get("hidden_size") or model.config["hidden"])
    package = export_torch(
        model,
        preprocessor,
        out,
        task="embedding",
        sample_inputs=samples,
        name=Path(out).name,
        metrics=result.val_metrics,
        data_fingerprint=unlabeled.fingerprint,
        training_config={
            "trainer": "pretrain",
            "backbone": name,
            "objective": objective,
            **({"max_length": max_length} if unlabeled.modality == "text" else {}),
            **config.to_dict(),
            "best_epoch": result.best_epoch,
            "embedding_size": size,
            "history": result.history,
            "data": {"source": unlabeled.source, "items": len(unlabeled)},
        },
        overwrite=overwrite,
    )
    return PretrainResult(
        package=package,
        history=result.history,
        best_epoch=result.best_epoch,
        objective=objective,
        run_id=track(package, tracked, "pretrain"),
    )

"""``tuneserve pretrain UNLABELED --out B``: learn a feature extractor without labels.

Images: the built-in CNN by SimCLR-style contrastive learning (default) or as a denoising
autoencoder; a Hugging Face vision model by contrastive learning. Text: continued training
of the encoder with SimCSE-style contrastive learning. The result is an ``embedding``
package (its graph outputs features, served like any package) that ``train --from B``
fine-tunes with a new head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuneserve.backbones import (
    TextClassifier,
    VisionClassifier,
    load_encoder,
    load_vision_model,
    resolve_text_model,
    vision_preprocessor,
)
from tuneserve.data import DEFAULT_HOLDOUT, Unlabeled, load_unlabeled
from tuneserve.exceptions import InvalidInputError
from tuneserve.lineage import Lineage
from tuneserve.package import Package
from tuneserve.preprocessing import Preprocessor, TextPreprocessor

from ._build import Parts, Run, build, check_out
from ._plan import Options, Plan, Strategy, list_strategies, register_strategy
from ._plan import plan as make_plan
from ._result import TrainedModel
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
    (``BackboneSpec.family``)."""
    strategies = list_strategies(family, "pretrain")
    if not strategies:
        raise InvalidInputError(
            f"no pretraining objective for backbone family {family!r}; families with one: "
            f"{', '.join(sorted({s.family for s in list_strategies(stage='pretrain')}))}"
        )
    config = strategies[0].default_config(**overrides)
    assert config is not None  # pretraining always runs the loop
    return config


#: What pretraining needs for a family: the model, its fitted preprocessing, and the
#: objective wrapped around the model (what the loop minimises).
Setup = tuple[Any, Preprocessor, Any]


def _cnn(train: Unlabeled, plan: Plan) -> Setup:
    config = plan.config if isinstance(plan.config, CNNConfig) else CNNConfig()
    preprocessor = cnn_preprocessor(train.X)
    (h, w), channels = preprocessor.size or (8, 8), preprocessor.channels or 1
    contrastive = plan.strategy.name == "contrastive"
    model = new_cnn(preprocessor, PROJECTION if contrastive else channels * h * w, config)
    if contrastive:
        return model, preprocessor, Contrastive(model, model, image_views(), temperature=0.2)
    return model, preprocessor, Denoising(model)


def _vision(train: Unlabeled, plan: Plan) -> Setup:
    encoder = load_vision_model(plan.backbone)
    model = VisionClassifier(encoder, outputs=1)
    preprocessor = vision_preprocessor(plan.backbone, encoder)
    return model, preprocessor, Contrastive(model, model.embed, image_views(), temperature=0.2)


def _text(train: Unlabeled, plan: Plan) -> Setup:
    model = TextClassifier(load_encoder(plan.backbone), outputs=1)
    name = resolve_text_model(plan.backbone)
    preprocessor = TextPreprocessor(name, max_length=plan.options.max_length)
    return model, preprocessor, Contrastive(model, model.embed, text_views(), temperature=0.05)


def _pretraining(setup: Callable[[Unlabeled, Plan], Setup]) -> Callable[..., TrainedModel]:
    """A pretraining strategy: ``setup`` builds the family's model and objective, the loop
    minimises the objective's validation loss, the model's ``embed`` is what is exported."""

    def fit_features(parts: Parts, plan: Plan, run: Run) -> TrainedModel:
        config, s = plan.config, plan.split
        assert config is not None  # pretraining always runs the loop
        torch.manual_seed(config.seed)
        model, preprocessor, objective = setup(parts.train, plan)

        def tensors(part: Unlabeled) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
            feed = preprocessor.transform(part.X)
            return tuple(torch.from_numpy(v) for v in feed.values()), torch.zeros(len(part))

        result = fit(
            objective,
            tensors(parts.train),
            tensors(parts.validation),
            config,
            task="self-supervised",
            checkpoint_dir=run.checkpoint_dir,
            resume=run.resume,
            # a resume must continue the same run: same data, backbone, objective, holdout
            data_fingerprint=f"{s.data_fingerprint}|{plan.backbone}|{plan.strategy.name}|"
            f"{plan.options.max_length}|{s.seed}|{s.validation}",
            description=f"pretraining ({plan.strategy.name})",
        )
        model.eval()
        size = int(model.config.get("hidden_size") or model.config["hidden"])
        return TrainedModel(
            model=model,
            preprocessor=preprocessor,
            task="embedding",
            label_names=None,
            data_fingerprint=s.data_fingerprint or "",
            lineage=Lineage(
                trainer="pretrain",
                config=config.to_dict(),
                history=result.history,
                best_epoch=result.best_epoch,
                details={"embedding_size": size},
            ),
            metrics=result.val_metrics,
        )

    return fit_features


_SETUPS = {"cnn": _cnn, "vision": _vision, "text": _text}
for _family, _objectives in OBJECTIVES.items():
    for _objective in _objectives:
        register_strategy(
            Strategy(
                _family,
                _objective,
                _pretraining(_SETUPS[_family]),
                stage="pretrain",
                config_class=CNNConfig if _family == "cnn" else TrainConfig,
                defaults={
                    "monitor": "val_loss",
                    **({"augment": False} if _family == "cnn" else {}),
                    **_DEFAULTS[_family],
                },
                options=("max_length",) if _family == "text" else (),
                description=f"{_objective} learning on unlabeled data",
            )
        )


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

    Raises:
        InvalidInputError: table data, an unknown objective, or a backbone of another kind.
    """
    check_out(out, overwrite)
    unlabeled = (
        data if isinstance(data, Unlabeled) else load_unlabeled(data, text_column=text_column)
    )
    if unlabeled.modality not in ("image", "text"):
        raise InvalidInputError(
            f"pretrain learns from images or text; {unlabeled.name} is {unlabeled.modality} "
            "data. Hint: for tables, train directly, or use --update to add new rows later"
        )
    plan = make_plan(
        unlabeled.modality,
        backbone=backbone,
        strategy=objective,
        config=config,
        stage="pretrain",
        seed=seed,
        validation=validation,
        options=Options(max_length=max_length),
    )
    package = build(
        unlabeled, plan, out, checkpoint_dir=checkpoint_dir, resume=resume, overwrite=overwrite
    )
    lineage = package.manifest.lineage
    return PretrainResult(
        package=package,
        history=lineage.history,
        best_epoch=lineage.best_epoch or 0,
        objective=plan.strategy.name,
    )

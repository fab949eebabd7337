"""Fine-tune a text encoder: linear probe on cached features, partial, or full fine-tuning."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuneserve.backbones.text import (
    TextClassifier,
    encoder_blocks,
    load_encoder,
    resolve_text_model,
)
from tuneserve.data import Dataset
from tuneserve.exceptions import DataError, InvalidInputError
from tuneserve.exporters import load_weights
from tuneserve.package import Package
from tuneserve.preprocessing import TextPreprocessor, preprocessor_from_spec
from tuneserve.progress import progress_bar

from ._result import TrainedModel
from .config import TrainConfig
from .feature_cache import FeatureCache, backbone_identity
from .loop import fit

EMBED_BATCH = 64


def _embed(model: TextClassifier, feed: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Mean-pooled embeddings ``(n, hidden)`` of a tokenized data set, without gradients."""
    model.eval()
    ids, mask = torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"])
    out = []
    with torch.no_grad(), progress_bar(f"embedding {name}", total=len(ids)) as advance:
        for start in range(0, len(ids), EMBED_BATCH):
            sl = slice(start, start + EMBED_BATCH)
            out.append(model.embed(ids[sl], mask[sl]).numpy())
            advance(len(ids[sl]))
    return np.concatenate(out)


def _targets(data: Dataset) -> torch.Tensor:
    return torch.from_numpy(data.y if data.task == "classification" else data.y.astype(np.float32))


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

    Strategies:
        ``probe``: the encoder stays frozen; its pooled features are computed once, kept in
        the feature cache, and a linear head is trained on them.
        ``partial``: the last ``unfreeze`` transformer blocks and the head are trained.
        ``full``: every weight is trained.
        ``lora``: low-rank adapters (peft) on the attention projections and the head are
        trained, then merged into the encoder's weights, so the exported graph is plain.

    With ``init``, the encoder (and tokenizer) of that package is the starting point, with a
    new head for these labels (supervised transfer).

    Raises:
        DataError: the data is not text.
        InvalidInputError: unknown strategy, or ``unfreeze`` out of range.
    """
    if train.modality != "text":
        raise DataError(f"text backbones train on text data; {train.name} is {train.modality}")
    if strategy not in ("probe", "partial", "full", "lora"):
        raise InvalidInputError(f"strategy must be probe, partial, full or lora; got {strategy!r}")
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    outputs = train.num_classes if train.task == "classification" else 1
    identity: str
    if init is not None:
        model, preprocessor, backbone = _from_package(init, outputs)
        identity = f"package:{init.id}"
    else:
        preprocessor = TextPreprocessor(resolve_text_model(backbone), max_length=max_length)
        model = TextClassifier(load_encoder(backbone), outputs)
        identity = backbone_identity(resolve_text_model(backbone))
    train_feed = preprocessor.transform(train.X)
    val_feed = preprocessor.transform(validation.X)
    y_train, y_val = _targets(train), _targets(validation)
    extra: dict[str, Any] = {"backbone": backbone, "strategy": strategy, "max_length": max_length}

    if strategy == "probe":
        cache = cache or FeatureCache()
        spec = preprocessor.spec()

        def features(data: Dataset, feed: dict[str, np.ndarray]) -> torch.Tensor:
            key = cache.key(identity, spec, data.fingerprint)
            return torch.from_numpy(
                cache.get_or_compute(key, lambda: _embed(model, feed, data.name))
            )

        train_x, val_x = features(train, train_feed), features(validation, val_feed)
        result = fit(
            model.head,
            ((train_x,), y_train),
            ((val_x,), y_val),
            config,
            task=train.task,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            data_fingerprint=train.fingerprint,
            description="training probe head",
        )
        extra["feature_cache"] = {"hits": cache.hits, "misses": cache.misses}
    else:
        blocks = encoder_blocks(model.encoder)
        if strategy == "partial":
            if not 1 <= unfreeze <= len(blocks):
                raise InvalidInputError(
                    f"unfreeze must be between 1 and {len(blocks)} (the encoder's blocks); "
                    f"got {unfreeze}"
                )
            model.encoder.requires_grad_(False)
            for block in blocks[-unfreeze:]:
                block.requires_grad_(True)
            extra["unfreeze"] = unfreeze
        if strategy == "lora":
            model.encoder = _with_lora(model.encoder, rank=lora_rank)
            extra["lora_rank"] = lora_rank
        ids = ("input_ids", "attention_mask")
        result = fit(
            model,
            (tuple(torch.from_numpy(train_feed[k]) for k in ids), y_train),
            (tuple(torch.from_numpy(val_feed[k]) for k in ids), y_val),
            config,
            task=train.task,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            data_fingerprint=train.fingerprint,
            description=f"fine-tuning ({strategy})",
        )
        if strategy == "lora":
            model.encoder = model.encoder.merge_and_unload()  # type: ignore[operator]
        model.requires_grad_(True)
    model.eval()
    return TrainedModel(
        model=model,
        preprocessor=preprocessor,
        task=train.task,
        label_names=train.label_names,
        data_fingerprint=train.fingerprint,
        config={
            "trainer": "train_text",
            **extra,
            **config.to_dict(),
            "best_epoch": result.best_epoch,
        },
        history=result.history,
        metrics=result.val_metrics,
        parent=init.id if init is not None else None,
    )


#: Names of the attention query and value projections in common encoder families.
_LORA_TARGETS = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("q", "v"))


def _with_lora(encoder: torch.nn.Module, rank: int) -> torch.nn.Module:
    """Wrap ``encoder`` with LoRA adapters on its query and value projections (peft)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise InvalidInputError(
            "strategy 'lora' needs the peft package. Hint: pip install 'tuneserve[text]'"
        ) from exc
    leaves = {
        name.rsplit(".", 1)[-1]
        for name, m in encoder.named_modules()
        if isinstance(m, torch.nn.Linear)
    }
    targets = next((list(t) for t in _LORA_TARGETS if set(t) <= leaves), None)
    if targets is None:
        raise InvalidInputError(
            f"cannot find attention query/value projections in {type(encoder).__name__} for "
            "LoRA; use strategy partial or full"
        )
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.1, target_modules=targets)
    with warnings.catch_warnings():
        # peft probes a transformers attribute that transformers 5 deprecates
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
        )
        return get_peft_model(encoder, config)


def _from_package(source: Package, outputs: int) -> tuple[TextClassifier, TextPreprocessor, str]:
    """The encoder and tokenizer of ``source``, with a fresh head of ``outputs``."""
    cfg = source.manifest.lineage.training_config
    if cfg.get("model_class") != "TextClassifier" or "backbone" not in cfg:
        raise InvalidInputError(
            f"--from package {source.path} is not a text-encoder package; text backbones can "
            "only continue from one"
        )
    backbone = str(cfg["backbone"])
    model = TextClassifier(load_encoder(backbone), int(cfg["model_config"]["outputs"]))
    model.load_state_dict(load_weights(source))
    model.head = torch.nn.Linear(model.head.in_features, outputs)
    model.config["outputs"] = outputs
    pre = preprocessor_from_spec(source.manifest.preprocessing, source.assets_path)
    if not isinstance(pre, TextPreprocessor):
        raise InvalidInputError(f"--from package {source.path} has no text preprocessing")
    return model, pre, backbone


def probe_defaults(config: TrainConfig) -> TrainConfig:
    """Settings that suit a linear head on frozen features."""
    return replace(config, learning_rate=1e-2, epochs=60, batch_size=64, patience=15)

"""Fine-tune a pretrained encoder with a head, text or vision alike: linear probe on cached
features, partial or full fine-tuning, or LoRA merged back into the weights."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from tuneserve.backbones import model_from_config
from tuneserve.data import Dataset
from tuneserve.exceptions import InvalidInputError
from tuneserve.exporters import ENCODER_CONFIG_FILE, load_weights
from tuneserve.lineage import Backbone, Lineage
from tuneserve.package import Package
from tuneserve.preprocessing import Preprocessor
from tuneserve.progress import progress_bar

from ._build import Parts, Run
from ._plan import Plan, Strategy, register_strategy
from ._result import TrainedModel
from .budget import Budget, with_budget_record
from .config import TrainConfig
from .feature_cache import FeatureCache
from .loop import fit

STRATEGIES = ("probe", "partial", "full", "lora")
EMBED_BATCH = 64


class EncoderModel(Protocol):
    """What the strategies need of a model: an encoder, a pooled ``embed``, a ``head``."""

    encoder: nn.Module
    head: nn.Linear
    config: dict[str, Any]

    def embed(self, *inputs: torch.Tensor) -> torch.Tensor: ...

    def blocks(self) -> list[nn.Module]: ...


@dataclass
class EncoderRun:
    """One fine-tuning run: the model, its fitted preprocessing and how to train it.

    Attributes:
        model: An :class:`EncoderModel` (``nn.Module``).
        preprocessor: Fitted; its feed is the model's positional inputs.
        identity: What the encoder is (a path and revision, or ``package:<id>``): part of the
            feature-cache key.
        strategy: ``probe``, ``partial``, ``full`` or ``lora``.
        unfreeze: Blocks trained by ``partial``.
        lora_rank: Rank of the LoRA adapters.
        parent: Id of the package the encoder came from (``--from``).
    """

    model: Any
    preprocessor: Preprocessor
    identity: str
    strategy: str = "probe"
    unfreeze: int = 2
    lora_rank: int = 8
    parent: str | None = None


def mask_index(feed: dict[str, np.ndarray]) -> int | None:
    """Position of a right-padded ``attention_mask`` among the model's inputs, if any."""
    names = list(feed)
    if "attention_mask" not in names:
        return None
    mask = feed["attention_mask"]
    # right padding: once a row's mask drops to 0 it stays 0 (then a batch can be cut)
    if mask.ndim != 2 or (np.diff(mask, axis=1) > 0).any():
        return None
    return names.index("attention_mask")


def trim(inputs: tuple[torch.Tensor, ...], mask_at: int) -> tuple[torch.Tensor, ...]:
    """The batch cut to its longest text: the padding beyond it is masked out anyway, and
    the tokenizer pads a whole data set to its longest text (113 tokens for docstrings whose
    median is 14), so attention and feed-forward over it are most of the work."""
    n = max(1, int(inputs[mask_at].sum(1).max()))
    return tuple(t[:, :n] if t.ndim == 2 else t for t in inputs)  # (batch, n)


class TrimPadding(nn.Module):
    """Runs ``model`` on each batch cut to its longest text (right-padded token inputs);
    the outputs are those of the uncut batch, since padded positions are masked. Exposes
    the model's ``head`` and ``blocks()`` for the loop's learning-rate groups."""

    def __init__(self, model: nn.Module, mask_at: int) -> None:
        super().__init__()
        self.model = model
        self.mask_at = mask_at

    @property
    def head(self) -> nn.Module:
        head: nn.Module = getattr(self.model, "head")  # noqa: B009 - typed as Module
        return head

    def blocks(self) -> list[nn.Module]:
        blocks: list[nn.Module] = getattr(self.model, "blocks")()  # noqa: B009
        return blocks

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(*trim(inputs, self.mask_at))
        return out


def embed_all(model: Any, feed: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Pooled features ``(n, hidden)`` of a preprocessed data set, without gradients.

    Token inputs are embedded in order of length, each batch cut to its longest text (the
    features are the same; the work is what the texts need, not the longest one's)."""
    model.eval()
    tensors = [torch.from_numpy(v) for v in feed.values()]
    n = len(tensors[0])
    mask_at = mask_index(feed)
    order = (
        np.argsort(-feed["attention_mask"].sum(1), kind="stable")
        if mask_at is not None
        else np.arange(n)
    )
    out = np.empty((n, 0), dtype=np.float32)
    with torch.no_grad(), progress_bar(f"embedding {name}", total=n) as advance:
        for start in range(0, n, EMBED_BATCH):
            rows = torch.from_numpy(order[start : start + EMBED_BATCH])
            batch = tuple(t[rows] for t in tensors)
            if mask_at is not None:
                batch = trim(batch, mask_at)
            features = model.embed(*batch).float().numpy()  # (batch, hidden)
            if out.shape[1] == 0:
                out = np.empty((n, features.shape[1]), dtype=np.float32)
            out[order[start : start + EMBED_BATCH]] = features
            advance(len(rows))
    return out


def _targets(data: Dataset) -> torch.Tensor:
    return torch.from_numpy(data.y if data.task == "classification" else data.y.astype(np.float32))


def check_strategy_name(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise InvalidInputError(
            f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}"
        )


def fine_tune(
    run: EncoderRun,
    train: Dataset,
    validation: Dataset,
    config: TrainConfig,
    *,
    trainer: str,
    extra: dict[str, Any] | None = None,
    cache: FeatureCache | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> TrainedModel:
    """Train ``run.model`` on ``train`` with ``run.strategy``, the best epoch chosen on
    ``validation``; ``trainer`` and ``extra`` go into the recorded training config.

    Strategies:
        ``probe``: the encoder stays frozen; its pooled features are computed once, kept in
        the feature cache (keyed by encoder identity, preprocessing and data fingerprint),
        and a linear head is trained on them.
        ``partial``: the last ``unfreeze`` blocks and the head are trained.
        ``full``: every weight is trained.
        ``lora``: low-rank adapters (peft) on the attention projections and the head are
        trained, then merged into the encoder's weights, so the exported graph is plain.
    """
    check_strategy_name(run.strategy)
    model, strategy = run.model, run.strategy
    train_feed = run.preprocessor.transform(train.X)
    val_feed = run.preprocessor.transform(validation.X)
    y_train, y_val = _targets(train), _targets(validation)
    extra = dict(extra or {})
    details: dict[str, Any] = {}
    common: dict[str, Any] = {
        "task": train.task,
        "checkpoint_dir": checkpoint_dir,
        "resume": resume,
        "data_fingerprint": train.fingerprint,
    }
    if strategy == "probe":
        cache = cache or FeatureCache()
        spec = run.preprocessor.spec()

        def features(data: Dataset, feed: dict[str, np.ndarray]) -> torch.Tensor:
            key = cache.key(run.identity, spec, data.fingerprint)
            return torch.from_numpy(
                cache.get_or_compute(key, lambda: embed_all(model, feed, data.name))
            )

        train_x, val_x = features(train, train_feed), features(validation, val_feed)
        result = fit(
            model.head,
            ((train_x,), y_train),
            ((val_x,), y_val),
            config,
            description="training probe head",
            **common,
        )
        details["feature_cache"] = {"hits": cache.hits, "misses": cache.misses}
    else:
        extra.update(prepare_strategy(model, strategy, run.unfreeze, run.lora_rank))
        mask_at = mask_index(train_feed)
        result = fit(
            model if mask_at is None else TrimPadding(model, mask_at),
            (tuple(torch.from_numpy(v) for v in train_feed.values()), y_train),
            (tuple(torch.from_numpy(v) for v in val_feed.values()), y_val),
            config,
            description=f"fine-tuning ({strategy})",
            **common,
        )
        if strategy == "lora":
            model.encoder = model.encoder.merge_and_unload()
        model.requires_grad_(True)
    model.eval()
    backbone = extra.pop("backbone", None)
    return TrainedModel(
        model=model,
        preprocessor=run.preprocessor,
        task=train.task,
        label_names=train.label_names,
        data_fingerprint=train.fingerprint,
        lineage=Lineage(
            trainer=trainer,
            backbone=Backbone(name=backbone, strategy=strategy),
            config={**extra, **config.to_dict()},
            history=result.history,
            best_epoch=result.best_epoch,
            parent=run.parent,
            details=details,
        ),
        metrics=result.val_metrics,
    )


def prepare_strategy(model: Any, strategy: str, unfreeze: int, lora_rank: int) -> dict[str, Any]:
    """Make what ``strategy`` trains trainable (``partial``: the last ``unfreeze`` blocks
    and the head; ``lora``: adapters on the attention, wrapped around ``model.encoder``);
    returns the settings to record."""
    if strategy == "partial":
        blocks = model.blocks()
        if not 1 <= unfreeze <= len(blocks):
            raise InvalidInputError(
                f"unfreeze must be between 1 and {len(blocks)} (the encoder's blocks); "
                f"got {unfreeze}"
            )
        model.encoder.requires_grad_(False)
        for block in blocks[-unfreeze:]:
            block.requires_grad_(True)
        return {"unfreeze": unfreeze}
    if strategy == "lora":
        model.encoder = with_lora(model.encoder, rank=lora_rank)
        return {"lora_rank": lora_rank}
    return {}


#: Names of the attention query and value projections in common encoder families.
_LORA_TARGETS = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("q", "v"))


def with_lora(encoder: nn.Module, rank: int) -> nn.Module:
    """Wrap ``encoder`` with LoRA adapters on its query and value projections (peft)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise InvalidInputError(
            "strategy 'lora' needs the peft package. Hint: pip install 'tuneserve[text]'"
        ) from exc
    leaves = {
        name.rsplit(".", 1)[-1] for name, m in encoder.named_modules() if isinstance(m, nn.Linear)
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


def encoder_from_package(
    source: Package,
    model_class: type[nn.Module],
    load: Callable[[str], nn.Module],
    what: str,
) -> tuple[Any, str]:
    """The model of ``source`` (a ``model_class`` package) with its trained weights, and its
    backbone name. The encoder is rebuilt from the config the package stored (so the
    original model need not be at hand), else loaded with ``load(backbone)``."""
    recorded = source.manifest.lineage.backbone or Backbone()
    if recorded.model_class != model_class.__qualname__ or not recorded.name:
        raise InvalidInputError(
            f"--from package {source.path} is not a {what} package; {what} backbones can "
            "only continue from one"
        )
    backbone = recorded.name
    stored = source.path / "extras" / ENCODER_CONFIG_FILE
    if f"extras/{ENCODER_CONFIG_FILE}" in source.manifest.files and stored.is_file():
        encoder = model_from_config(stored.read_text())
    else:
        encoder = load(backbone)
    model = model_class(encoder, int(recorded.model_arguments["outputs"]))
    model.load_state_dict(load_weights(source))
    return model, backbone


def new_head(model: Any, outputs: int) -> None:
    """Replace ``model.head`` by a fresh linear layer of ``outputs``."""
    model.head = nn.Linear(model.head.in_features, outputs)
    model.config["outputs"] = outputs


#: Settings that suit a linear head on frozen features.
PROBE_DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-2,
    "epochs": 60,
    "batch_size": 64,
    "patience": 15,
}

_DESCRIPTIONS = {
    "probe": "frozen encoder, cached features, a linear head",
    "partial": "the last --unfreeze blocks and the head",
    "full": "every weight",
    "lora": "low-rank adapters, merged into the weights before export",
}


def probe_defaults(config: TrainConfig) -> TrainConfig:
    """Settings that suit a linear head on frozen features."""
    return replace(config, **PROBE_DEFAULTS)


#: ``setup(train, plan) -> (run, settings)``: a family's model, preprocessing and identity,
#: ready for :func:`fine_tune` (``text_run``, ``vision_run``).
Setup = Callable[[Dataset, Plan], tuple[EncoderRun, dict[str, Any]]]


def register_encoder_strategies(
    family: str,
    trainer: Callable[..., TrainedModel],
    defaults: dict[str, dict[str, Any]],
) -> None:
    """Register ``probe``, ``partial``, ``full`` and ``lora`` for an encoder family, each
    training with ``trainer`` (:func:`train_text`, :func:`train_vision`) and the family's
    ``defaults`` (probe: :data:`PROBE_DEFAULTS`), within the plan's time budget. (The
    family registers ``auto`` first, its default: :func:`tuneserve.training.auto.register_auto`.)"""

    def fit(parts: Parts, plan: Plan, run: Run) -> TrainedModel:
        text = {"max_length": plan.options.max_length} if family == "text" else {}
        budget = Budget(plan.options.time_budget)
        with budget.watching():
            trained = trainer(
                parts.train,
                parts.validation,
                backbone=plan.backbone,
                strategy=plan.strategy.name,
                config=plan.config,
                unfreeze=plan.options.unfreeze,
                lora_rank=plan.options.lora_rank,
                checkpoint_dir=run.checkpoint_dir,
                resume=run.resume,
                init=plan.init,
                **text,
            )
        return with_budget_record(trained, budget, plan.config.epochs if plan.config else None)

    for name in STRATEGIES:
        settings = PROBE_DEFAULTS if name == "probe" else defaults[name]
        used = {"partial": ("unfreeze",), "lora": ("lora_rank",)}.get(name, ())
        options = ("max_length", *used) if family == "text" else used
        register_strategy(
            Strategy(
                family,
                name,
                fit,
                defaults=settings,
                options=(*options, "time_budget"),
                description=_DESCRIPTIONS[name],
            )
        )

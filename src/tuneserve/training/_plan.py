"""A training plan: the resolved backbone, the strategy, the loop settings and the split.

Strategies register with their backbone family by one :func:`register_strategy` call, as
backbones register with :func:`tuneserve.backbones.register_backbone`; :func:`plan`
resolves what a user asked for (a backbone name or Hugging Face id, a strategy, settings)
into a :class:`Plan` that :func:`tuneserve.training.build` turns into a package.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tuneserve.backbones import (
    DEFAULT_BACKBONES,
    HF_VISION,
    BackboneSpec,
    get_backbone,
    list_backbones,
)
from tuneserve.exceptions import InvalidInputError
from tuneserve.lineage import Update
from tuneserve.package import Package

from .config import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    from ._build import Parts, Run
    from ._result import TrainedModel

Stage = Literal["train", "update", "pretrain", "compress"]


@dataclass(frozen=True)
class Strategy:
    """How the backbones of one family are trained at one stage.

    Attributes:
        family: The backbone family it trains (``BackboneSpec.family``: ``sklearn``,
            ``mlp``, ``cnn``, ``text``, ``vision``).
        name: What ``--strategy`` (or ``--objective`` for pretraining) calls it.
        fit: ``fit(parts, plan, run) -> TrainedModel``: train on ``parts.train``, keep the
            model that does best on ``parts.validation``.
        stage: ``train`` (from a pretrained or fresh model), ``update`` (continue a
            package on new rows), ``pretrain`` (learn features without labels) or
            ``compress`` (make a smaller model from the package ``plan.init``: distill,
            prune, quantization-aware training).
        config_class: The loop settings' class; ``None`` for one-shot estimators.
        defaults: Settings of ``config_class`` that suit this strategy.
        options: The :class:`Options` fields it uses (``max_length``, ``unfreeze``, ...):
            recorded in the lineage with the settings, and matched on resume.
        description: One line for help texts.
    """

    family: str
    name: str
    fit: Callable[[Parts, Plan, Run], TrainedModel]
    stage: Stage = "train"
    config_class: type[TrainConfig] | None = TrainConfig
    defaults: Mapping[str, Any] = field(default_factory=dict)
    options: tuple[str, ...] = ()
    description: str = ""

    def default_config(self, **overrides: Any) -> TrainConfig | None:
        """The strategy's settings with ``overrides`` (``None`` values ignored) applied."""
        if self.config_class is None:
            return None
        base = replace(self.config_class(), **self.defaults)
        known = {f.name for f in fields(base)}
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(given) - known)
        if unknown:
            raise InvalidInputError(
                f"unknown training settings {unknown} for {self.family}/{self.name}; known: "
                f"{', '.join(sorted(known))}"
            )
        return replace(base, **given)


_STRATEGIES: dict[tuple[Stage, str, str], Strategy] = {}


def register_strategy(strategy: Strategy) -> Strategy:
    """Add a strategy to its family; a second one with the same stage, family and name is
    refused. The first strategy registered for a family and stage is its default."""
    key = (strategy.stage, strategy.family, strategy.name)
    if key in _STRATEGIES:
        raise ValueError(
            f"a {strategy.stage} strategy {strategy.name!r} is already registered for family "
            f"{strategy.family!r}; pick another name"
        )
    _STRATEGIES[key] = strategy
    return strategy


def list_strategies(family: str | None = None, stage: Stage = "train") -> list[Strategy]:
    """Registered strategies of a stage (and family), in registration order."""
    return [s for (st, fam, _), s in _STRATEGIES.items() if st == stage and family in (None, fam)]


def get_strategy(
    spec: BackboneSpec, name: str | None, stage: Stage = "train", backbone: str | None = None
) -> Strategy:
    """The strategy ``name`` (default: the family's first) for backbone ``spec`` (called
    ``backbone`` in messages: a Hugging Face id or path rather than its family's entry).

    Raises:
        InvalidInputError: the family has no such strategy (the message lists its own).
    """
    known = list_strategies(spec.family, stage)
    word = "objective" if stage == "pretrain" else "strategy"
    called = backbone or spec.name
    if not known:
        raise InvalidInputError(f"backbone {called!r} cannot be used to {stage}")
    if name is None:
        return known[0]
    for strategy in known:
        if strategy.name == name:
            return strategy
    raise InvalidInputError(
        f"{word} {name!r} is not valid for backbone {called!r}; it supports "
        f"{', '.join(s.name for s in known)}"
    )


@dataclass(frozen=True)
class SplitPlan:
    """How the data is split: seeded stratified ratios, or explicit row indices (a
    cross-validation fold: ``rows`` are train, validation and held-out test indices)."""

    seed: int = 0
    validation: float = 0.1
    test: float = 0.2
    rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    what: str | None = None
    data_fingerprint: str | None = None  # of the data the rows index, when built on a copy


@dataclass(frozen=True)
class Options:
    """Strategy options beyond the loop: text tokens kept, blocks unfrozen by ``partial``,
    LoRA rank, passes of ``partial_fit`` for an update, a scikit-learn estimator's
    parameters, the training-time budget in seconds (``None``: none; ``tuneserve train``
    gives a few minutes, see :mod:`tuneserve.training.budget`), and whether ``--from``
    tries the alternatives to plain transfer (:mod:`tuneserve.training.guard`)."""

    max_length: int = 128
    unfreeze: int = 2
    lora_rank: int = 8
    passes: int = 10
    time_budget: float | None = None
    guard: bool = True
    #: ``--from`` a cnn or mlp package: epochs of the new output layer alone, body frozen
    head_first: int = 0
    #: a scikit-learn estimator's own parameters, set before it is fit (``{"C": 0.5}``)
    estimator: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """Everything that decides what :func:`tuneserve.training.build` trains.

    Attributes:
        backbone: Registry name, or a Hugging Face id or path.
        spec: The backbone's registry entry (for an id or path: its family's entry).
        strategy: The registered strategy.
        config: The loop's settings (``None`` for one-shot estimators).
        split: How the data is split.
        options: Strategy options.
        init: The package training starts from (``--from``, or an update's parent).
        fold: ``(fold, folds)`` when this plan trains one cross-validation fold.
        update: The parent and its before-metrics, when this plan updates a package.
        parent_version: ``init``'s registry version (``name/version``), when it came from
            the registry.
        unlabeled: Inputs without labels (a list of texts, images or table rows) that a
            ``compress`` strategy may feed its teacher for soft labels (distillation).
    """

    backbone: str
    spec: BackboneSpec
    strategy: Strategy
    config: TrainConfig | None
    split: SplitPlan = field(default_factory=SplitPlan)
    options: Options = field(default_factory=Options)
    init: Package | None = None
    fold: tuple[int, int] | None = None
    update: Update | None = None
    parent_version: str | None = None
    unlabeled: Any = None

    @property
    def seed(self) -> int:
        return self.split.seed

    def settings(self) -> dict[str, Any]:
        """The settings recorded in the package's lineage (and matched on resume)."""
        out: dict[str, Any] = self.config.to_dict() if self.config is not None else {}
        out.setdefault("seed", self.seed)  # the loop's own seed, where it has one
        out.update({name: getattr(self.options, name) for name in self.strategy.options})
        return out


#: Registry entries of backbones given by Hugging Face id or path, per modality.
_HF_ENTRIES = {"text": "minilm", "image": HF_VISION}


def _looks_like_model(name: str, modality: str) -> bool:
    """A Hugging Face id or local folder, not a typo of a registered name: for images an
    ``org/name`` id or an existing path; for text any name (old ids have no org)."""
    return modality == "text" or "/" in name or Path(name).expanduser().exists()


def resolve_backbone(modality: str, backbone: str | None) -> tuple[str, BackboneSpec]:
    """The backbone name and its registry entry; a name that is not registered is a Hugging
    Face id or path of the modality's family."""
    name = backbone or DEFAULT_BACKBONES[modality]
    registered = {s.name for s in list_backbones()}
    entry = name
    if name not in registered and modality in _HF_ENTRIES and _looks_like_model(name, modality):
        entry = _HF_ENTRIES[modality]
    elif name == HF_VISION:
        raise InvalidInputError(
            f"--backbone {HF_VISION} stands for any Hugging Face vision model; pass the "
            "model's id or local folder instead, e.g. --backbone google/vit-base-patch16-224"
        )
    return name, get_backbone(entry, modality)


def source_backbone(source: Package) -> str | None:
    """The backbone a package was trained from, as its lineage records it."""
    backbone = source.manifest.lineage.backbone
    return backbone.name if backbone is not None and backbone.name else None


def plan(
    modality: str,
    *,
    backbone: str | None = None,
    strategy: str | None = None,
    config: TrainConfig | None = None,
    settings: Mapping[str, Any] | None = None,
    stage: Stage = "train",
    seed: int = 0,
    validation: float = 0.1,
    test: float = 0.2,
    init: Package | None = None,
    parent_version: str | None = None,
    options: Options | None = None,
) -> Plan:
    """Resolve a backbone and strategy into a :class:`Plan`.

    Args:
        modality: The data's: ``image``, ``table`` or ``text``.
        backbone: Registry name, Hugging Face id or path; default: ``init``'s backbone, else
            the modality's default.
        strategy: Registered name (``--strategy``; a pretraining objective); default: the
            family's first.
        config: Loop settings; default: the strategy's, with ``settings`` applied (and the
            ``seed``).
        stage: ``train``, ``update`` (continue ``init`` on new rows) or ``pretrain``.
        seed, validation, test: The split (and the loop's seed).
        init: The package to start from.
        parent_version: ``init``'s registry version, recorded in the lineage.
        options: Strategy options.

    Raises:
        InvalidInputError: unknown backbone, strategy or setting; ``init`` of another
            modality, or one a scikit-learn backbone cannot start from.
    """
    if init is not None and init.manifest.modality != modality:
        raise InvalidInputError(
            f"--from package {init.path} was trained on {init.manifest.modality} data, but "
            f"this data set is {modality}; transfer needs the same kind of input"
        )
    name, spec = resolve_backbone(
        modality, backbone or (source_backbone(init) if init is not None else None)
    )
    chosen = get_strategy(spec, strategy, stage, name)
    if init is not None and stage == "train" and spec.family == "sklearn":
        raise InvalidInputError(
            f"--from continues torch backbones (cnn, mlp, text and vision encoders); "
            f"{name!r} cannot start from a package. Hint: to add new data to an sgd "
            "package, use --update"
        )
    if config is None:
        given = {"seed": seed, **{k: v for k, v in (settings or {}).items() if v is not None}}
        config = chosen.default_config(**given)
    elif chosen.config_class is None:
        config = None  # a one-shot estimator has no loop
    return Plan(
        backbone=name,
        spec=spec,
        strategy=chosen,
        config=config,
        split=SplitPlan(seed=seed, validation=validation, test=test),
        options=options or Options(),
        init=init,
        parent_version=parent_version if init is not None else None,
    )

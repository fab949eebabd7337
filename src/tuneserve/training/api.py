"""``train``: data in, package out, with sensible defaults per backbone and strategy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneserve.data import DataLike, Dataset, Splits, load
from tuneserve.package import Package

from ._build import Parts, Run, build, check_out
from ._plan import Options, plan
from ._result import TrainedModel
from .budget import DEFAULT_TIME_BUDGET, parse_time_budget
from .config import TrainConfig
from .guard import guard_transfer


@dataclass
class TrainResult:
    """A package and how it did on the held-out test split.

    Attributes:
        package: The written package; its manifest holds the validation (``val_*``) and
            test (``test_*``) metrics and the typed lineage (history, best epoch, split).
        trained: The model in memory.
        splits: The train / validation / test parts of the data.
        test_metrics: The ``test_*`` metrics.
        run_id: The MLflow run that tracked it (set by :func:`tuneserve.train`).
    """

    package: Package
    trained: TrainedModel
    splits: Splits
    test_metrics: dict[str, float]
    run_id: str | None = None

    @property
    def validation_metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.package.manifest.metrics.items() if k.startswith("val_")}

    @property
    def history(self) -> list[dict[str, float]]:
        return self.package.manifest.lineage.history


def default_config(
    backbone: str, strategy: str, *, modality: str | None = None, **overrides: Any
) -> TrainConfig | None:
    """The settings ``train`` uses for a backbone and strategy, with ``overrides`` applied
    (``None`` for scikit-learn backbones, which have no loop).

    ``modality`` tells a Hugging Face id or path of a vision model (``image``) from a text
    encoder (the default)."""
    from tuneserve.backbones import list_backbones

    if modality is None:
        known = {s.name: s.modality for s in list_backbones()}
        modality = known.get(backbone, "text")
    return plan(modality, backbone=backbone, strategy=strategy, settings=overrides).config


def train(
    data: DataLike,
    out: str | Path,
    *,
    backbone: str | None = None,
    strategy: str | None = None,
    config: TrainConfig | None = None,
    settings: dict[str, Any] | None = None,
    seed: int = 0,
    validation: float = 0.1,
    test: float = 0.2,
    max_length: int = 128,
    unfreeze: int = 2,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    init: str | Path | Package | None = None,
    parent_version: str | None = None,
    time_budget: float | str | None = DEFAULT_TIME_BUDGET,
    guard: bool = True,
) -> TrainResult:
    """Train on ``data`` and write a package to ``out`` (no tracking: see
    :func:`tuneserve.train`, which also logs the run to MLflow).

    The data is split (stratified, seeded) into train / validation / test. The model is
    trained on train, the best epoch chosen on validation, and the package checked for
    parity and scored on test (recorded in the manifest as ``test_*`` metrics).

    Args:
        data: A :class:`Dataset` or anything :func:`tuneserve.data.load` takes.
        out: Package directory.
        backbone: Registry name, or a Hugging Face id or local path: a text encoder for
            text data, a vision model (AutoModel + AutoImageProcessor) for images. Default
            per modality: cnn, random-forest, minilm.
        strategy: ``auto``, ``probe``, ``partial``, ``full``, ``lora`` (text, vision);
            ``full`` (cnn, mlp); ``fit`` (scikit-learn). Default: the family's first
            (``auto`` for text and vision: see :mod:`tuneserve.training.auto`).
        config: Loop settings (default: the strategy's, with ``settings`` applied).
        settings: Overrides of the default loop settings, e.g. ``{"epochs": 5}``.
        seed, validation, test: The split.
        max_length, unfreeze: Text settings (tokens; blocks unfrozen by ``partial``).
        checkpoint_dir, resume: Per-epoch checkpoints and continuing an interrupted run.
        overwrite: Replace an existing package at ``out``.
        init: A package to start from (``--from``): supervised transfer of its backbone to
            these labels. Same kind of data; torch backbones only.
        parent_version: ``init``'s registry version (``name/version``), recorded in the
            lineage (:func:`tuneserve.train` fills it for a ``models:/`` reference).
        time_budget: Seconds (or ``"90s"``, ``"3m"``, ``"1h"``) loop-trained models may
            train; ``None``: no limit. A loop stops before an epoch that would not fit,
            keeping its best epoch (``lineage.details["time_budget"]`` says so); ``auto``
            chooses what fits it. Default :data:`DEFAULT_TIME_BUDGET` (3 minutes).
        guard: With ``init``: also train from scratch (and, for cnn and mlp, with the body
            frozen first) and keep the best on validation (``lineage.details["guard"]``);
            ``False`` trains plain transfer only.

    Raises:
        InvalidInputError: unknown backbone or strategy, an ``init`` package that does
            not fit (other modality, a scikit-learn model), or a time budget that is not a
            positive duration.
    """
    seconds = parse_time_budget(time_budget)
    check_out(out, overwrite)
    dataset = data if isinstance(data, Dataset) else load(data)
    source = init if isinstance(init, Package) or init is None else Package.load(init)
    chosen = plan(
        dataset.modality,
        backbone=backbone,
        strategy=strategy,
        config=config,
        settings=settings,
        seed=seed,
        validation=validation,
        test=test,
        init=source,
        parent_version=parent_version,
        options=Options(max_length=max_length, unfreeze=unfreeze, time_budget=seconds, guard=guard),
    )
    run = Run(Path(checkpoint_dir) if checkpoint_dir is not None else None, resume)
    chosen = guard_transfer(dataset, chosen, run)
    kept: list[tuple[TrainedModel, Parts]] = []
    package = build(
        dataset,
        chosen,
        out,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        overwrite=overwrite,
        keep=lambda trained, parts: kept.append((trained, parts)),
    )
    trained, parts = kept[0]
    assert parts.test is not None
    test_metrics = {k: v for k, v in package.manifest.metrics.items() if k.startswith("test_")}
    return TrainResult(
        package=package,
        trained=trained,
        splits=Splits(parts.train, parts.validation, parts.test),
        test_metrics=test_metrics,
    )

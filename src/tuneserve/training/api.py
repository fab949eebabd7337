"""``train``: data in, package out, with sensible defaults per backbone and strategy."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tuneserve.backbones import (
    DEFAULT_BACKBONES,
    HF_VISION,
    BackboneSpec,
    check_strategy,
    get_backbone,
    list_backbones,
)
from tuneserve.data import DataLike, Dataset, Splits, load, split
from tuneserve.exceptions import InvalidInputError, PackageError
from tuneserve.package import Package

from ._result import TrainedModel
from .classic import train_mlp, train_sklearn
from .cnn import CNNConfig, train_cnn
from .config import TrainConfig
from .encoder import probe_defaults
from .text import train_text
from .vision import train_vision

#: Registry entries of backbones given by Hugging Face id or path, per modality.
_HF_ENTRIES = {"text": "minilm", "image": HF_VISION}

_AUTO: dict[str, Any] = {"mixed_precision": "auto"}

#: Per (family or backbone, strategy) defaults; explicit settings override them.
_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("cnn", "full"): {},
    ("mlp", "full"): {"learning_rate": 1e-3, "epochs": 100, "patience": 15},
    # transformers: bf16 autocast where the hardware has it ("auto"; about 2x on CPU)
    ("text", "partial"): {"learning_rate": 1e-4, "epochs": 4, "batch_size": 16, **_AUTO},
    ("text", "full"): {"learning_rate": 5e-5, "epochs": 3, "batch_size": 16, **_AUTO},
    ("text", "lora"): {"learning_rate": 2e-3, "epochs": 5, "batch_size": 16, **_AUTO},
    ("vision", "partial"): {"learning_rate": 2e-4, "epochs": 10, "batch_size": 32, **_AUTO},
    ("vision", "full"): {"learning_rate": 1e-4, "epochs": 10, "batch_size": 32, **_AUTO},
    ("vision", "lora"): {"learning_rate": 2e-3, "epochs": 10, "batch_size": 32, **_AUTO},
}


@dataclass
class TrainResult:
    """A trained model, its package, and how it did on the held-out test split."""

    package: Package
    trained: TrainedModel
    splits: Splits
    test_metrics: dict[str, float]
    run_id: str | None = None  # the MLflow run that tracked it


def track(package: Package, track: bool | None, kind: str) -> str | None:
    """Log the package as an MLflow run when tracking is on; the run id, else None.

    The package is already written: when the MLflow store fails, a warning says so and
    names the command that logs it later, instead of failing the run."""
    from tuneserve.registry.tracking import track_package, tracking_enabled, warn_untracked

    if not tracking_enabled(track):
        return None
    try:
        return track_package(package, kind=kind)
    except Exception as exc:  # the store is down, locked, or refuses: keep the package
        warn_untracked(
            exc,
            f"the package {package.path}",
            f"log it later with tuneserve registry register {package.path} --name NAME",
        )
        return None


def backbone_family(backbone: str, modality: str | None) -> str:
    """``text`` or ``vision`` for pretrained encoders (registered or by id / path), else the
    backbone's own name."""
    spec = {s.name: s for s in list_backbones()}.get(backbone)
    if spec is None:  # a Hugging Face id or path
        return "vision" if modality == "image" else "text"
    if spec.name == HF_VISION:
        return "vision"
    return "text" if spec.modality == "text" else backbone


def default_config(
    backbone: str, strategy: str, *, modality: str | None = None, **overrides: Any
) -> TrainConfig:
    """The settings ``train`` uses for a backbone and strategy, with ``overrides`` applied.

    ``modality`` tells a Hugging Face id or path of a vision model (``image``) from a text
    encoder (the default)."""
    family = backbone_family(backbone, modality)
    base = CNNConfig() if backbone == "cnn" else TrainConfig()
    if family in ("text", "vision") and strategy == "probe":
        base = probe_defaults(base)
    base = replace(base, **_DEFAULTS.get((family, strategy), {}))
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _source(init: str | Path | Package, modality: str) -> Package:
    source = init if isinstance(init, Package) else Package.load(init)
    if source.manifest.modality != modality:
        raise InvalidInputError(
            f"--from package {source.path} was trained on {source.manifest.modality} data, but "
            f"this data set is {modality}; transfer needs the same kind of input"
        )
    return source


def _source_backbone(source: Package | None) -> str | None:
    if source is None:
        return None
    backbone = source.manifest.lineage.training_config.get("backbone")
    return str(backbone) if backbone else None


def _looks_like_model(name: str, modality: str) -> bool:
    """A Hugging Face id or local folder, not a typo of a registered name: for images an
    ``org/name`` id or an existing path; for text any name (old ids have no org)."""
    return modality == "text" or "/" in name or Path(name).expanduser().exists()


def resolve_backbone(
    modality: str, backbone: str | None, strategy: str | None, source: Package | None = None
) -> tuple[str, BackboneSpec, str]:
    """The backbone name, its registry entry and the strategy ``train`` will use.

    The name is ``backbone``, else the ``source`` package's, else the modality's default;
    a text backbone that is not registered is a Hugging Face id or path (``minilm``'s entry).
    """
    name = backbone or _source_backbone(source) or DEFAULT_BACKBONES[modality]
    registered = {s.name for s in list_backbones()}
    entry = name
    if name not in registered and modality in _HF_ENTRIES and _looks_like_model(name, modality):
        entry = _HF_ENTRIES[modality]  # a Hugging Face id or path
    elif name == HF_VISION:
        raise InvalidInputError(
            f"--backbone {HF_VISION} stands for any Hugging Face vision model; pass the "
            "model's id or local folder instead, e.g. --backbone google/vit-base-patch16-224"
        )
    spec = get_backbone(entry, modality)
    return name, spec, check_strategy(spec, strategy)


def check_out(out: str | Path, overwrite: bool) -> None:
    """Refuse an existing ``out`` before training, not after."""
    target = Path(out).expanduser()
    if target.exists() and not overwrite:
        raise PackageError(
            f"{target} already exists. Hint: choose another --out, or pass --force to replace it"
        )


def fit(
    train: Dataset,
    validation: Dataset,
    name: str,
    spec: Any,
    strategy: str,
    config: TrainConfig,
    *,
    seed: int = 0,
    max_length: int = 128,
    unfreeze: int = 2,
    **options: Any,
) -> TrainedModel:
    """Train the resolved backbone ``name`` (see :func:`resolve_backbone`) on ``train``,
    choosing the kept model on ``validation``; ``options`` go to the trainer
    (``checkpoint_dir``, ``resume``, ``init``). Shared by :func:`train` and
    cross-validation."""
    trained: TrainedModel
    common: dict[str, Any] = dict(options)
    if spec.family == "sklearn":
        trained = train_sklearn(train, validation, backbone=name, seed=seed)
    elif name == "cnn":
        cnn_config = config if isinstance(config, CNNConfig) else CNNConfig(**config.to_dict())
        trained = train_cnn(train, validation, cnn_config, **common)
    elif name == "mlp":
        trained = train_mlp(train, validation, config, **common)
    elif spec.name == HF_VISION:
        trained = train_vision(
            train,
            validation,
            backbone=name,
            strategy=strategy,
            config=config,
            unfreeze=unfreeze,
            **common,
        )
    else:
        trained = train_text(
            train,
            validation,
            backbone=name,
            strategy=strategy,
            config=config,
            max_length=max_length,
            unfreeze=unfreeze,
            **common,
        )
    return trained


def train(
    data: DataLike,
    out: str | Path,
    *,
    backbone: str | None = None,
    strategy: str | None = None,
    config: TrainConfig | None = None,
    seed: int = 0,
    validation: float = 0.1,
    test: float = 0.2,
    max_length: int = 128,
    unfreeze: int = 2,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    init: str | Path | Package | None = None,
    tracked: bool | None = None,
) -> TrainResult:
    """Train on ``data`` and write a package to ``out``.

    The data is split (stratified, seeded) into train / validation / test. The model is
    trained on train, the best epoch chosen on validation, and the package checked for
    parity and scored on test (recorded in the manifest as ``test_*`` metrics).

    Args:
        data: A :class:`Dataset` or anything :func:`tuneserve.data.load` takes.
        out: Package directory.
        backbone: Registry name, or a Hugging Face id or local path: a text encoder for
            text data, a vision model (AutoModel + AutoImageProcessor) for images. Default
            per modality: cnn, random-forest, minilm.
        strategy: ``probe``, ``partial``, ``full`` (text); ``full`` (cnn, mlp); ``fit``
            (scikit-learn). Default: the backbone's first.
        config: Loop settings (default: :func:`default_config`).
        seed, validation, test: The split.
        max_length, unfreeze: Text settings (tokens; blocks unfrozen by ``partial``).
        checkpoint_dir, resume: Per-epoch checkpoints and continuing an interrupted run.
        overwrite: Replace an existing package at ``out``.
        init: A package to start from (``--from``): supervised transfer of its backbone to
            these labels. Same kind of data; torch backbones only.
        tracked: Log the run to MLflow (parameters, per-epoch metrics, the package and a
            report). Default: on, unless ``TUNESERVE_TRACKING=0``.

    Raises:
        InvalidInputError: unknown backbone or strategy, or an ``init`` package that does
            not fit (other modality, a scikit-learn model).
    """
    check_out(out, overwrite)
    if checkpoint_dir is not None and Path(checkpoint_dir).is_file():
        raise InvalidInputError(f"--checkpoint-dir {checkpoint_dir} is a file; pass a folder")
    dataset = data if isinstance(data, Dataset) else load(data)
    source = _source(init, dataset.modality) if init is not None else None
    name, spec, strategy = resolve_backbone(dataset.modality, backbone, strategy, source)
    parts = split(dataset, validation=validation, test=test, seed=seed)
    config = config or default_config(name, strategy, modality=dataset.modality, seed=seed)
    common: dict[str, Any] = {"checkpoint_dir": checkpoint_dir, "resume": resume}
    if source is not None:
        if spec.family != "torch":
            raise InvalidInputError(
                f"--from continues torch backbones (cnn, mlp, text and vision encoders); "
                f"{name!r} cannot start from a package. Hint: to add new data to an sgd "
                "package, use --update"
            )
        common["init"] = source
    trained = fit(
        parts.train,
        parts.validation,
        name,
        spec,
        strategy,
        config,
        seed=seed,
        max_length=max_length,
        unfreeze=unfreeze,
        **common,
    )
    trained.config.setdefault("backbone", name)
    trained.config.setdefault("strategy", strategy)
    trained.config["split"] = {"seed": seed, "validation": validation, "test": test}
    metrics = trained.score(parts.test, "test")
    package = trained.export(
        out,
        parts.test.X,
        name=Path(out).name,
        metrics=metrics,
        overwrite=overwrite,
    )
    run_id = track(package, tracked, "train")
    return TrainResult(
        package=package, trained=trained, splits=parts, test_metrics=metrics, run_id=run_id
    )

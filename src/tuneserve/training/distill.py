"""Knowledge distillation: a smaller student learns a package's model (the teacher).

A ``compress``-stage strategy for every torch family. The teacher is the package
``plan.init`` rebuilt by :func:`source_model`; the student is built from it:

* ``cnn``: a fresh :class:`SmallCNN` with ``width`` and ``hidden`` times ``shrink``;
* ``mlp``: a fresh :class:`TableMLP` with every hidden layer times ``shrink``;
* ``text`` and ``vision``: a copy of the teacher keeping ``layers`` of its transformer
  blocks (default half), spread evenly from the first one, and its head.

The teacher's outputs are computed once, without gradients, on the train rows and on
``plan.unlabeled`` (inputs without labels, which get only the soft term). The loop then
minimises ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)``
(regression: mean squared error to the teacher's values and to the true ones), and keeps
the epoch whose student predicts the true validation labels best (lowest cross-entropy,
or squared error). The student is exported as its plain model class, so a later
:func:`source_model` (the next compression step) rebuilds it.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from tuneserve.backbones.cnn import SmallCNN
from tuneserve.backbones.tabular import ScaledOutput, TableMLP
from tuneserve.data import Dataset
from tuneserve.exceptions import DataError, InvalidInputError
from tuneserve.lineage import Backbone, Lineage, next_compression
from tuneserve.preprocessing import Preprocessor, TextPreprocessor

from ._build import Parts, Run
from ._plan import Plan, Strategy, register_strategy
from ._result import TrainedModel, metrics_of
from .config import TrainConfig
from .loop import fit
from .source_model import SourceModel, source_model

METHOD = "distill"
#: Rows per forward pass when the teacher labels the data.
TEACHER_BATCH = 64


@dataclass
class DistillConfig(TrainConfig):
    """The loop's settings plus distillation's.

    Attributes:
        temperature: Softens both models' logits in the soft term (``T``; classification).
        alpha: Weight of the soft term (scaled by ``T^2``); ``1 - alpha`` weighs the true
            labels' loss. Rows of ``plan.unlabeled`` get only the soft term.
        shrink: ``cnn``: width and hidden units times this; ``mlp``: every hidden layer
            times this (each at least 1).
        layers: ``text``, ``vision``: transformer blocks the student keeps (default: half
            of the teacher's).
        max_length: ``text``: the student's tokenizer length (pick it from the data's token
            lengths: attention costs grow with its square); default: the teacher's.
    """

    temperature: float = 2.0
    alpha: float = 0.5
    shrink: float = 0.5
    layers: int | None = None
    max_length: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise InvalidInputError(
                f"temperature must be a number > 0, got {self.temperature}. Hint: 1 keeps the "
                "teacher's probabilities as they are; 2 to 4 soften them"
            )
        if not 0 <= self.alpha <= 1:  # also refuses NaN
            raise InvalidInputError(
                f"alpha must be in [0, 1] (the soft term's weight), got {self.alpha}"
            )
        if not 0 < self.shrink <= 1:
            raise InvalidInputError(
                f"shrink must be in (0, 1] (the student's share of the teacher's width), got "
                f"{self.shrink}. Hint: 0.5 halves every layer"
            )
        if self.layers is not None and self.layers < 1:
            raise InvalidInputError(
                f"layers must be >= 1 (transformer blocks the student keeps), got {self.layers}"
            )
        if self.max_length is not None and self.max_length < 2:
            raise InvalidInputError(
                f"max_length must be >= 2 tokens (the special tokens count), got {self.max_length}"
            )


class Distillation(nn.Module):
    """The student with its objective: takes a batch's inputs followed by the teacher's
    outputs, the true targets and a 0/1 mask of the rows that have them; returns the loss.

    In eval mode (the loop's validation) it returns the true labels' loss alone: the kept
    epoch is the one whose student predicts the validation labels best.
    """

    def __init__(self, student: nn.Module, task: str, temperature: float, alpha: float) -> None:
        super().__init__()
        self.student = student
        self.classification = task == "classification"
        self.temperature = temperature
        self.alpha = alpha

    def forward(self, *batch: torch.Tensor) -> torch.Tensor:
        *inputs, teacher, target, labeled = batch
        out = self.student(*inputs).float()  # (batch, outputs)
        if self.classification:
            hard = F.cross_entropy(out, target, reduction="none")  # (batch,)
        else:
            out = out.reshape(-1)
            hard = (out - target) ** 2
        if not self.training:
            return hard.mean()
        t = self.temperature
        if self.classification:
            soft = (t * t) * F.kl_div(
                F.log_softmax(out / t, dim=-1),
                F.log_softmax(teacher / t, dim=-1),
                reduction="none",
                log_target=True,
            ).sum(-1)  # (batch,)
        else:
            soft = (out - teacher) ** 2
        hard = (hard * labeled).sum() / labeled.sum().clamp(min=1)
        return self.alpha * soft.mean() + (1 - self.alpha) * hard


@dataclass
class _Student:
    """A student before training: the network the loop trains (``inner``), the model that
    is exported (``inner`` wrapped, for regression MLPs), and the scale ``inner`` predicts
    in (the teacher's values are mapped into it)."""

    inner: nn.Module
    exported: nn.Module
    preprocessor: Preprocessor
    mean: float = 0.0
    std: float = 1.0
    kept: list[int] | None = None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _narrow(value: int, shrink: float) -> int:
    return max(1, round(value * shrink))


def _cnn_student(teacher: SourceModel, cfg: DistillConfig) -> _Student:
    model = teacher.model
    assert isinstance(model, SmallCNN)
    c: dict[str, Any] = model.config
    student = SmallCNN(
        num_classes=int(c["num_classes"]),
        in_channels=int(c["in_channels"]),
        image_size=(int(c["image_size"][0]), int(c["image_size"][1])),
        width=_narrow(int(c["width"]), cfg.shrink),
        hidden=_narrow(int(c["hidden"]), cfg.shrink),
        dropout=float(c["dropout"]),
    )
    return _Student(student, student, teacher.preprocessor)


def _mlp_student(teacher: SourceModel, cfg: DistillConfig) -> _Student:
    model, mean, std = teacher.model, 0.0, 1.0
    if isinstance(model, ScaledOutput):  # regression: the MLP learns standardized targets
        mean, std = float(model.config["target_mean"]), float(model.config["target_std"])
        model = model.model
    assert isinstance(model, TableMLP)
    c: dict[str, Any] = model.config
    student = TableMLP(
        int(c["in_features"]),
        int(c["outputs"]),
        hidden=tuple(_narrow(int(h), cfg.shrink) for h in c["hidden"]),
        dropout=float(c["dropout"]),
    )
    exported: nn.Module = student if teacher.model is model else ScaledOutput(student, mean, std)
    return _Student(student, exported, teacher.preprocessor, mean, std)


def kept_blocks(blocks: int, layers: int) -> list[int]:
    """Indices of ``layers`` of ``blocks`` transformer blocks, spread evenly from the first
    (6 -> 3: 0, 2, 4; one block out of two, as DistilBERT was initialized).

    The first block is kept because it is the one trained on the embeddings' output: with
    blocks 1, 3, 5 the student starts by feeding raw embeddings to a block that never saw
    them. On all-MiniLM-L6-v2 with a probe head (300 review texts), the untrained 0, 2, 4
    student agreed with the teacher on 99.7% of texts (KL 0.07); 1, 3, 5 on 88% (KL 0.18).
    """
    return [i * blocks // layers for i in range(layers)]


def _encoder_student(teacher: SourceModel, cfg: DistillConfig) -> _Student:
    student = copy.deepcopy(teacher.model)
    encoder: Any = student.encoder
    blocks: list[nn.Module] = student.blocks()  # type: ignore[operator]
    n = len(blocks)
    config = encoder.config
    if getattr(config, "num_hidden_layers", None) != n:
        raise InvalidInputError(
            f"distill keeps some transformer blocks of the teacher, and its "
            f"{type(encoder).__name__} has {n} blocks that its config does not count as "
            "num_hidden_layers (stages of different widths?). Hint: distill applies to "
            "transformer encoders (BERT, MiniLM, ViT, DeiT, ...); use prune or quantization"
        )
    layers = cfg.layers if cfg.layers is not None else max(1, n // 2)
    if not layers < n:
        raise InvalidInputError(
            f"layers must be fewer than the teacher's {n} transformer blocks, got {layers}. "
            f"Hint: pass layers between 1 and {n - 1}, or omit it for {max(1, n // 2)}"
            if n > 1
            else "the teacher has a single transformer block; there is none to drop. Hint: "
            "use prune or quantization"
        )
    kept = kept_blocks(n, layers)
    holder = next(
        m
        for m in encoder.modules()
        if isinstance(m, nn.ModuleList) and list(m) == blocks  # modules compare by identity
    )
    for i in reversed(range(n)):
        if i not in kept:
            del holder[i]  # the ModuleList renumbers: the state dict names layer.0 .. k-1
    for j, block in enumerate(holder):
        for module in block.modules():  # attention caches index blocks by position
            if hasattr(module, "layer_idx"):
                module.layer_idx = j  # type: ignore[assignment]
    config.num_hidden_layers = layers  # what the package's stored encoder config rebuilds
    preprocessor = teacher.preprocessor
    if cfg.max_length is not None:
        if not isinstance(preprocessor, TextPreprocessor):
            raise InvalidInputError(
                f"max_length sets a text student's token length; this is a {teacher.family} "
                "package. Hint: leave max_length out"
            )
        most = getattr(config, "max_position_embeddings", None)
        if most is not None and cfg.max_length > most:
            raise InvalidInputError(
                f"max_length must be at most {most} (the encoder's positions), got {cfg.max_length}"
            )
        from tokenizers import Tokenizer

        # a copy: the tokenizer carries its truncation length, and the teacher keeps its own
        preprocessor = TextPreprocessor(
            Tokenizer.from_str(preprocessor.tokenizer.to_str()),
            max_length=cfg.max_length,
            model_inputs=preprocessor.model_inputs,
        )
    return _Student(student, student, preprocessor, kept=kept)


_STUDENTS = {
    "cnn": _cnn_student,
    "mlp": _mlp_student,
    "text": _encoder_student,
    "vision": _encoder_student,
}


def _check_settings(family: str, cfg: DistillConfig) -> None:
    for name, applies in (("layers", ("text", "vision")), ("max_length", ("text",))):
        if getattr(cfg, name) is not None and family not in applies:
            raise InvalidInputError(
                f"{name} applies to {' and '.join(applies)} packages; this is a {family} "
                f"package (got {name}={getattr(cfg, name)}). Hint: use shrink to size a "
                f"{family} student"
            )


def teacher_codes(data: Dataset, names: tuple[str, ...] | None) -> np.ndarray:
    """``data``'s labels coded in the teacher's output order (``names``).

    Raises:
        DataError: the data has classes the teacher does not predict.
    """
    if data.task != "classification" or data.label_names == names:
        return data.y
    known = list(names or ())
    unknown = [n for n in data.label_names or () if n not in known]
    if unknown:
        raise DataError(
            f"{data.name} has classes {unknown} that the teacher does not predict (its classes "
            f"are {known}); the student learns the teacher's outputs. Hint: distill on data "
            "labeled with the package's classes"
        )
    table = np.array([known.index(n) for n in data.label_names or ()], dtype=np.int64)
    return table[data.y]


@dataclass
class DistilledModel(TrainedModel):
    """A student: it predicts in the teacher's label order, and scores data by label names
    (the compress data may code its classes in another order)."""

    def score(self, data: Any, prefix: str) -> dict[str, float]:
        y = teacher_codes(data, self.label_names)
        return metrics_of(self.predict_proba(data.X), y, self.task, prefix)


def _unlabeled(plan: Plan, train: Dataset) -> Any:
    """``plan.unlabeled`` as raw inputs like ``train.X`` (None when there are none)."""
    given = plan.unlabeled
    if given is None:
        return None
    modality = getattr(given, "modality", train.modality)
    if modality != train.modality:
        raise InvalidInputError(
            f"unlabeled inputs are {modality}; the package takes {train.modality}. Hint: pass "
            "unlabeled inputs of the data's kind"
        )
    X = getattr(given, "X", given)  # Unlabeled, a Dataset (labels ignored), or raw inputs
    if train.modality == "table":
        if not isinstance(X, pd.DataFrame):
            raise InvalidInputError(
                f"unlabeled table rows must be a pandas DataFrame, got {type(X).__name__}"
            )
        missing = [c for c in train.X.columns if c not in X.columns]
        if missing:
            raise InvalidInputError(
                f"unlabeled table rows lack the columns {missing}. Hint: give them the data's "
                "feature columns"
            )
        return X[list(train.X.columns)].reset_index(drop=True) if len(X) else None
    X = list(X)
    return X or None


def _join(train: Any, extra: Any) -> Any:
    if extra is None:
        return train
    if isinstance(train, pd.DataFrame):
        return pd.concat([train, extra], ignore_index=True)
    return list(train) + list(extra)


def _tensors(preprocessor: Preprocessor, inputs: Any) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(v) for v in preprocessor.transform(inputs).values())


def _outputs(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], device: torch.device
) -> torch.Tensor:
    """``model``'s outputs ``(n, outputs)``, float32 on the CPU, without gradients."""
    model.eval().to(device)
    out = []
    with torch.no_grad():
        for start in range(0, len(inputs[0]), TEACHER_BATCH):
            batch = (t[start : start + TEACHER_BATCH].to(device) for t in inputs)
            out.append(model(*batch).float().cpu())
    model.to("cpu")
    return torch.cat(out)


def _fingerprint(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            h.update(part.numpy().tobytes())
        else:
            h.update(str(part).encode())
        h.update(b"|")
    return "sha256:" + h.hexdigest()


@dataclass
class _Targets:
    """What the objective takes after a batch's inputs: the teacher's outputs (in the
    student's scale), the true targets (teacher-coded; 0 where there are none) and a 0/1
    mask of the rows that have them (the first ``len(y)``)."""

    task: str
    mean: float = 0.0
    std: float = 1.0

    def __call__(
        self, teacher: torch.Tensor, y: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, known = len(teacher), len(y)
        labeled = torch.zeros(n)
        labeled[:known] = 1.0
        if self.task == "classification":
            target = torch.zeros(n, dtype=torch.int64)
            target[:known] = torch.from_numpy(y)
            return teacher, target, labeled
        target = torch.zeros(n)
        target[:known] = torch.from_numpy((y - self.mean) / self.std).float()
        return (teacher.reshape(-1) - self.mean) / self.std, target, labeled


def fit_distill(parts: Parts, plan: Plan, run: Run) -> TrainedModel:
    """Train a smaller student on ``parts.train`` (and ``plan.unlabeled``) to match the
    package ``plan.init``; the epoch kept is chosen on ``parts.validation``.

    Raises:
        InvalidInputError: no package to distill, one without torch weights, settings that
            do not fit the teacher, or labels the teacher does not predict.
    """
    parent = plan.init
    if parent is None:
        raise InvalidInputError(
            "distill makes a smaller model from a package; none was given. Hint: pass the "
            "package to compress (init=, or tuneserve compress PACKAGE)"
        )
    cfg = plan.config
    if not isinstance(cfg, DistillConfig):
        cfg = DistillConfig(**(cfg.to_dict() if cfg is not None else {}))
    _check_settings(plan.strategy.family, cfg)
    teacher = source_model(parent, METHOD)
    train, validation = parts.train, parts.validation
    manifest = parent.manifest
    if train.task != manifest.task:
        raise DataError(
            f"{train.name} is {train.task} data and the package predicts {manifest.task}; "
            "distill on data of the package's task"
        )
    names = tuple(manifest.label_names) if manifest.label_names is not None else None
    y_train, y_val = teacher_codes(train, names), teacher_codes(validation, names)

    torch.manual_seed(cfg.seed)  # before the student's new layers are made
    student = _STUDENTS[teacher.family](teacher, cfg)
    extra = _unlabeled(plan, train)
    rows = _join(train.X, extra)
    # the teacher sees its own preprocessing; the student may see another (max_length)
    device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    teacher_feed = _tensors(teacher.preprocessor, rows)
    train_teacher = _outputs(teacher.model, teacher_feed, device)
    val_teacher = _outputs(teacher.model, _tensors(teacher.preprocessor, validation.X), device)
    targets = _Targets(train.task, student.mean, student.std)
    soft, target, labeled = targets(train_teacher, y_train)
    n_labeled, n = len(train), len(soft)
    val = targets(val_teacher, y_val)
    objective = Distillation(student.inner, train.task, cfg.temperature, cfg.alpha)
    result = fit(
        objective,
        ((*_tensors(student.preprocessor, rows), soft, target, labeled), torch.zeros(n)),
        ((*_tensors(student.preprocessor, validation.X), *val), torch.zeros(len(validation))),
        cfg,
        task="self-supervised",
        checkpoint_dir=run.checkpoint_dir,
        resume=run.resume,
        # a resume must continue the same run: same teacher, same rows, same unlabeled rows
        data_fingerprint=_fingerprint(
            parent.id, train.fingerprint, validation.fingerprint, *teacher_feed
        ),
        description=f"distilling {teacher.family}",
    )
    model = student.exported.eval()
    teacher_params, student_params = count_parameters(teacher.model), count_parameters(model)
    settings: dict[str, Any] = {
        "temperature": cfg.temperature,
        "alpha": cfg.alpha,
        **({"shrink": cfg.shrink} if student.kept is None else {"layers": len(student.kept)}),
    }
    if isinstance(student.preprocessor, TextPreprocessor):
        settings["max_length"] = student.preprocessor.max_length
    details: dict[str, Any] = {
        "teacher_parameters": teacher_params,
        "student_parameters": student_params,
        "parameter_ratio": student_params / teacher_params,
        "labeled_rows": n_labeled,
        "unlabeled_rows": n - n_labeled,
        "unlabeled_fingerprint": getattr(plan.unlabeled, "fingerprint", None),
        "teacher_metrics": metrics_of(
            _prediction(val_teacher, train.task), y_val, train.task, "val"
        ),
    }
    if student.kept is not None:
        details["blocks_kept"] = student.kept
        details["teacher_blocks"] = len(teacher.model.blocks())  # type: ignore[operator]
    trained = DistilledModel(
        model=model,
        preprocessor=student.preprocessor,
        task=train.task,
        label_names=names,
        data_fingerprint=train.fingerprint,
        lineage=Lineage(
            trainer="distill",
            backbone=Backbone(
                name=teacher.backbone.name,
                strategy=METHOD,
                model_arguments=dict(model.config),  # type: ignore[arg-type]
            ),
            config=cfg.to_dict(),
            history=result.history,
            best_epoch=result.best_epoch,
            parent=parent.id,
            compression=next_compression(parent.id, manifest.lineage, METHOD, settings, details),
        ),
    )
    trained.metrics = trained.score(validation, "val")
    return trained


def _prediction(out: torch.Tensor, task: str) -> np.ndarray:
    """Probabilities (classification) or values from a model's logits or values."""
    if task == "classification":
        return torch.softmax(out, dim=-1).numpy()
    return out.reshape(-1).numpy()


_DEFAULTS: dict[str, dict[str, Any]] = {
    "cnn": {"epochs": 30, "learning_rate": 2e-3, "patience": 10},
    "mlp": {"epochs": 100, "learning_rate": 1e-3, "patience": 15},
    # transformers: bf16 autocast where the hardware has it ("auto")
    "text": {"epochs": 5, "learning_rate": 1e-4, "batch_size": 16, "mixed_precision": "auto"},
    "vision": {"epochs": 10, "learning_rate": 1e-4, "batch_size": 32, "mixed_precision": "auto"},
}
_SIZES = {
    "cnn": "a CNN of shrink times the width",
    "mlp": "an MLP of shrink times every hidden layer",
    "text": "every other transformer block (--layers) and a shorter max_length",
    "vision": "every other transformer block (--layers)",
}
for _family, _defaults in _DEFAULTS.items():
    register_strategy(
        Strategy(
            _family,
            METHOD,
            fit_distill,
            stage="compress",
            config_class=DistillConfig,
            defaults=_defaults,
            description=f"knowledge distillation into {_SIZES[_family]}, taught by the package",
        )
    )

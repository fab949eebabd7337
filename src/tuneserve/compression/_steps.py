"""Apply one compression step to a package: a graph method (quantization, FP16, a shorter
sequence length) directly, a training method (distill, prune, sparse, QAT) through the
seam, ``plan`` and ``build``, on the original package's split."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tuneserve.data import Dataset
from tuneserve.package import Package

from ._recipes import GRAPH_METHODS, Step

#: Training rows that calibrate static quantization (more adds time, little accuracy).
CALIBRATION_ROWS = 256
#: Held-out rows on which a quantized graph's output is compared with its source's.
CHECK_ROWS = 64


@dataclass(frozen=True)
class Rows:
    """The original package's split of the data: what training-based methods train and
    validate on, and the held-out rows every variant is scored on."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    what: str


@dataclass(frozen=True)
class Context:
    """What every step of one search shares."""

    data: Dataset
    rows: Rows
    seed: int
    settings: dict[str, dict[str, Any]]
    epochs: int | None
    unlabeled: Any
    checkpoints: Path
    family: str = ""

    def calibration(self) -> Any:
        """A seeded sample of the training rows (rows are sorted, and an image folder is
        grouped by class: the first ones would be one or two classes)."""
        rng = np.random.default_rng(self.seed)
        rows = rng.permutation(self.rows.train)[:CALIBRATION_ROWS]
        return self.data.subset(np.sort(rows)).X

    def check(self) -> Any:
        return self.data.subset(self.rows.test[:CHECK_ROWS]).X

    def train_inputs(self) -> Any:
        return self.data.subset(self.rows.train).X


def step_settings(context: Context, step: Step) -> dict[str, Any]:
    """The step's own settings, then the user's for its method (``--set distill.epochs=3``),
    then ``--epochs`` for a training method."""
    given = {**step.settings, **context.settings.get(step.method, {})}
    if step.method not in GRAPH_METHODS and context.epochs is not None:
        given.setdefault("epochs", context.epochs)
    return given


def expected_settings(context: Context, step: Step) -> dict[str, Any]:
    """What a variant built by ``step`` must have recorded to be kept by a rerun: a training
    method's whole effective configuration (its defaults, the user's settings, the seed),
    a graph method's own settings."""
    given = step_settings(context, step)
    if step.method in GRAPH_METHODS:
        return given
    from tuneserve.training import list_strategies

    for strategy in list_strategies(context.family, "compress"):
        if strategy.name == step.method:
            config = strategy.default_config(**{"seed": context.seed, **given})
            return config.to_dict() if config is not None else given
    return given


def _key(item: Any) -> str:
    if isinstance(item, np.ndarray):
        data = np.ascontiguousarray(item)
        return hashlib.sha256(data.tobytes() + str(data.shape).encode()).hexdigest()
    if isinstance(item, dict):
        return json.dumps(item, sort_keys=True, default=str)
    return str(item)


def unlabeled_without(unlabeled: Any, held_out: Any) -> tuple[Any, list[str]]:
    """``unlabeled`` without the inputs that are also held-out rows (distillation must not
    learn the teacher's answers on the rows that score the student), and a note of how many
    were left out."""
    if unlabeled is None:
        return None, []
    items = getattr(unlabeled, "X", unlabeled)  # an Unlabeled data set, or its inputs
    if hasattr(held_out, "to_dict"):  # table rows: compared on the data's own columns
        columns = list(held_out.columns)
        if not hasattr(items, "to_dict") or not set(columns) <= set(items.columns):
            return unlabeled, []
        seen = {_key(r) for r in held_out.to_dict("records")}
        keep = np.array([_key(r) not in seen for r in items[columns].to_dict("records")])
        dropped = int((~keep).sum()) if len(keep) else 0
        kept: Any = items[keep] if dropped else unlabeled
    else:
        seen = {_key(x) for x in held_out}
        flags = [_key(x) not in seen for x in items]
        dropped = flags.count(False)
        kept = [x for x, ok in zip(items, flags, strict=True) if ok] if dropped else unlabeled
    if not dropped:
        return unlabeled, []
    return kept, [
        f"{dropped} of the {len(items)} unlabeled inputs are held-out rows that score the "
        "variants; distillation was not given them"
    ]


def apply_step(
    context: Context,
    step: Step,
    source: Package,
    out: Path,
    *,
    name: str,
    exclude: tuple[str, ...] = (),
) -> Package:
    """Write ``step`` applied to ``source`` as the package ``out`` (replacing a stale one)."""
    settings = step_settings(context, step)
    if step.method == "shorten":
        from ._shorten import shorten_package

        texts = list(context.train_inputs())
        return shorten_package(
            source, out, texts, percentile=float(settings.get("percentile", 95.0)), overwrite=True
        )
    if step.method in GRAPH_METHODS:
        from ._quantize import quantize_package

        extra = {k: v for k, v in settings.items() if k in ("calibrate", "per_channel")}
        return quantize_package(
            source,
            out,
            step.method,
            calibration=context.calibration() if step.method == "int8-static" else None,
            exclude=exclude,
            check=context.check(),
            overwrite=True,
            **extra,
        )
    return _train_step(context, step.method, settings, source, out, name)


def _train_step(
    context: Context,
    method: str,
    settings: dict[str, Any],
    source: Package,
    out: Path,
    name: str,
) -> Package:
    from tuneserve.training import SplitPlan, build, plan

    data, rows = context.data, context.rows
    planned = plan(
        data.modality,
        strategy=method,
        stage="compress",
        init=source,
        settings=settings,
        seed=context.seed,
    )
    planned = replace(
        planned,
        split=SplitPlan(
            seed=context.seed,
            rows=(rows.train, rows.validation, rows.test),
            what=rows.what,
            data_fingerprint=data.fingerprint,
        ),
        unlabeled=context.unlabeled,
    )
    return build(
        data,
        planned,
        out,
        name=out.name,
        checkpoint_dir=context.checkpoints / name,
        resume=True,
        overwrite=True,
    )

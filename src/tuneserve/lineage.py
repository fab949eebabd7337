"""Where a package came from, in typed fields: the manifest's ``lineage``.

What one stage tells the next travels here: the split and the rows held out of training
(what ``evaluate`` scores), the cross-validation fold, the parent package and its registry
version, an update's before-metrics, the training history, the backbone and the model's
configuration. Format versions 1 and 2 kept all of it in one free-form
``training_config`` dict; :func:`from_training_config` reads that into these fields.
"""

from __future__ import annotations

import copy
import datetime as _dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tuneserve._version import __version__, git_revision

__all__ = [
    "Backbone",
    "Compression",
    "Ensemble",
    "EnsembleMember",
    "Fold",
    "HeldOut",
    "Lineage",
    "Split",
    "Tuning",
    "Update",
    "from_training_config",
    "next_compression",
]


class _Record(BaseModel):
    # Unknown keys are ignored, so an older reader of the same format version still loads
    # a package that a newer tuneserve annotated with more.
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class Split(_Record):
    """The seeded, stratified train / validation / test split a package was trained on."""

    seed: int = 0
    validation: float = 0.1
    test: float = 0.2


class HeldOut(_Record):
    """Rows of one data set that training never saw: ``evaluate`` and ``compare`` score
    only these when given that data set (matched by fingerprint)."""

    data_fingerprint: str
    rows: list[int]
    what: str = "held-out rows"


class Fold(_Record):
    """The cross-validation fold a package was trained for."""

    fold: int
    folds: int
    seed: int
    validation: float = 0.1


class Update(_Record):
    """An incremental update: the package it continued and how that one scored before."""

    parent: str
    before: dict[str, float] = Field(default_factory=dict)


class Backbone(_Record):
    """What was trained: the backbone (registry name, Hugging Face id or path), the
    strategy, and the model class with the arguments that rebuild it."""

    name: str | None = None
    strategy: str | None = None
    model_class: str | None = None
    model_arguments: dict[str, Any] = Field(default_factory=dict)


class EnsembleMember(_Record):
    name: str
    package_id: str


class Ensemble(_Record):
    """An ensemble package's members and how their outputs are combined."""

    combiner: dict[str, Any] = Field(default_factory=dict)
    members: list[EnsembleMember] = Field(default_factory=list)
    selection: dict[str, Any] = Field(default_factory=dict)


class Compression(_Record):
    """How a compressed variant was made from its parent (``tuneserve compress``).

    Attributes:
        method: This step's method (``int8-dynamic``, ``distill``, ``prune``, ...).
        settings: The step's settings (calibration method, sparsity, layers kept, ...).
        steps: Every method from the uncompressed package to this one, in order
            (``["distill", "int8-dynamic"]``).
        source: ``package_id`` of the uncompressed package the chain started from.
        details: What the step measured or decided (sparsity reached, nodes left in
            float, ...).
    """

    method: str
    settings: dict[str, Any] = Field(default_factory=dict)
    steps: list[str] = Field(default_factory=list)
    source: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class Tuning(_Record):
    """The hyperparameter search a package came out of (``tuneserve tune``).

    Attributes:
        study: The Optuna study's name.
        trial: The trial's number in the study.
        storage: Where the study lives (a database URL, any password masked).
        params: The values the trial was given.
        metric: What the study optimised (``accuracy``, ``mse``, ...), on validation rows.
        direction: ``maximize`` or ``minimize``.
    """

    study: str
    trial: int
    storage: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    metric: str | None = None
    direction: str | None = None


def next_compression(
    parent_id: str,
    parent: Lineage,
    method: str,
    settings: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
) -> Compression:
    """The :class:`Compression` record of a step ``method`` applied to a package whose id is
    ``parent_id`` and lineage ``parent``: the chain continues the parent's, if it has one."""
    before = parent.compression
    return Compression(
        method=method,
        settings=dict(settings or {}),
        steps=[*(before.steps if before else []), method],
        source=before.source if before and before.source else parent_id,
        details=dict(details or {}),
    )


class Lineage(_Record):
    """Where a package came from: data, parent, what was trained and how, and the code.

    Attributes:
        data_fingerprint: Fingerprint of the rows the model was fitted on.
        parent: ``package_id`` of the package this one continued or was derived from.
        parent_version: The parent's registry version (``name/version``), when known.
        trainer: The function that trained it (``train_cnn``, ``pretrain``, ...).
        backbone: Backbone, strategy and model configuration.
        config: The training settings (the loop's ``TrainConfig`` fields and the strategy's
            options such as ``max_length`` or ``unfreeze``).
        split: The split of the training data (``train`` and ``update``).
        held_out: Rows of the data set that training never saw.
        fold: The cross-validation fold (``cv``).
        update: The parent and its before-metrics (``update``).
        history: One dict of metrics per epoch.
        best_epoch: The kept epoch (1-based), for loop-trained models.
        ensemble: Members and combiner (ensemble packages).
        compression: How a compressed variant was made from its parent.
        tuning: The study and trial of a hyperparameter search that made it.
        details: Other facts worth keeping that no stage reads (feature-cache hits, ...).
    """

    data_fingerprint: str | None = None
    parent: str | None = Field(default=None, description="package_id of the parent package")
    parent_version: str | None = None
    trainer: str | None = None
    backbone: Backbone | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    split: Split | None = None
    held_out: HeldOut | None = None
    fold: Fold | None = None
    update: Update | None = None
    history: list[dict[str, float]] = Field(default_factory=list)
    best_epoch: int | None = None
    ensemble: Ensemble | None = None
    compression: Compression | None = None
    tuning: Tuning | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    tuneserve_version: str = __version__
    git_revision: str | None = Field(default_factory=git_revision)
    created_at: str = Field(
        default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    )


#: Keys of a format-1/2 ``training_config`` that are details, not training settings.
_DETAILS = ("feature_cache", "embedding_size", "data", "passes_run")


def from_training_config(lineage: dict[str, Any]) -> dict[str, Any]:
    """A format-1/2 lineage (everything in ``training_config``) as typed fields.

    Only the stored manifest's shape changes: the package id was computed over the
    manifest as stored, and :meth:`tuneserve.package.Package.verify` checks that one.
    """
    # a deep copy: the manifest as stored must stay as it is (its id is a hash over it)
    lineage = copy.deepcopy(lineage)
    out = {k: v for k, v in lineage.items() if k != "training_config"}
    cfg = dict(lineage.get("training_config") or {})
    model_class = cfg.pop("model_class", None) or cfg.pop("estimator", None)
    backbone = {
        "name": cfg.pop("backbone", None),
        "strategy": cfg.pop("strategy", None) or cfg.pop("objective", None),
        "model_class": model_class,
        "model_arguments": cfg.pop("model_config", None) or cfg.pop("estimator_params", None) or {},
    }
    if any(v for v in backbone.values()):
        out["backbone"] = backbone
    out["trainer"] = cfg.pop("trainer", None)
    out["history"] = cfg.pop("history", None) or []
    out["best_epoch"] = cfg.pop("best_epoch", None)
    for key in ("split", "held_out", "update"):
        if isinstance(cfg.get(key), dict):
            out[key] = cfg.pop(key)
    cv = cfg.pop("cv", None)
    if isinstance(cv, dict) and {"fold", "folds", "seed"} <= cv.keys():
        settings = cv.get("settings") or {}
        out["fold"] = {
            "fold": cv["fold"],
            "folds": cv["folds"],
            "seed": cv["seed"],
            "validation": settings.get("validation", 0.1),
        }
    ensemble = cfg.pop("ensemble", None)
    if isinstance(ensemble, dict):
        members = ensemble.pop("members", [])
        out["ensemble"] = {
            "combiner": ensemble,
            "members": members,
            "selection": cfg.pop("selection", None) or {},
        }
    out["details"] = {k: cfg.pop(k) for k in _DETAILS if k in cfg}
    out["config"] = cfg
    return out

"""``train NEWDATA --update PACKAGE``: continue a model on new labeled data.

scikit-learn models with ``partial_fit`` (``sgd``) take passes over the new data; the MLP
continues with the loop. Either keeps the package's preprocessing and classes, so the
updated package is a drop-in replacement, and is scored on the new data's test split before
and after the update.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tuneserve.data import DataLike, Dataset, Splits, load, split_indices
from tuneserve.exceptions import DataError, InvalidInputError
from tuneserve.exporters import load_estimator
from tuneserve.lineage import Lineage
from tuneserve.lineage import Update as UpdateRecord
from tuneserve.package import Package
from tuneserve.preprocessing import TablePreprocessor
from tuneserve.progress import progress_bar

from ._build import Parts, Run, build, check_out
from ._plan import Options, Plan, Strategy, register_strategy, source_backbone
from ._plan import plan as make_plan
from ._result import TrainedModel, metrics_of, package_preprocessor
from .classic import fit_mlp
from .config import TrainConfig

#: Backbones ``--update`` continues.
UPDATABLE = ("sgd", "mlp")
#: Passes of ``partial_fit`` over the new data by default; the best on validation is kept.
DEFAULT_PASSES = 10
#: The MLP's update settings: a tenth of its usual learning rate, fewer epochs.
MLP_UPDATE = {"learning_rate": 1e-4, "epochs": 30, "patience": 10}


def _recode(part: Dataset, names: list[str] | None) -> Dataset:
    """``part`` with its labels coded as the package codes them."""
    if names is None:
        return part
    mapping = np.array([names.index(n) for n in part.label_names or ()], dtype=np.int64)
    return replace(part, y=mapping[part.y], label_names=tuple(names))


def _check_fits(dataset: Dataset, source: Package) -> None:
    m = source.manifest
    if (dataset.modality, dataset.task) != (m.modality, m.task):
        raise InvalidInputError(
            f"--update package {source.path} is a {m.modality} {m.task} model, but "
            f"{dataset.name} is {dataset.modality} {dataset.task}; update it with the same "
            "kind of data"
        )
    if dataset.task == "classification":
        unknown = sorted(set(dataset.label_names or ()) - set(m.label_names or ()))
        if unknown:
            raise DataError(
                f"{dataset.name} has labels {unknown} that package {source.path} does not know "
                f"(its labels: {', '.join(m.label_names or ())}). An update keeps the classes; "
                "Hint: train a new model with --from to learn new classes"
            )
    backbone = source_backbone(source)
    if backbone not in UPDATABLE:
        raise InvalidInputError(
            f"--update continues {' and '.join(UPDATABLE)} packages; {source.path} is "
            f"{backbone!r}, which has no incremental update. Hint: retrain on all the data "
            "with tuneserve train, or fine-tune with --from"
        )


def _partial_fit(parts: Parts, plan: Plan, run: Run) -> TrainedModel:
    """``partial_fit`` passes over the new rows, the best on validation kept."""
    source, train, validation = plan.init, parts.train, parts.validation
    assert source is not None  # an update plan starts from its package
    passes, seed = plan.options.passes, plan.seed
    estimator = load_estimator(source)
    pre = package_preprocessor(source, TablePreprocessor)
    x = pre.transform(train.X)["input"]
    classification = train.task == "classification"
    extra: dict[str, Any] = {"classes": estimator.classes_} if classification else {}
    rng = np.random.default_rng(seed)
    trained = TrainedModel(
        model=estimator,
        preprocessor=pre,
        task=train.task,
        label_names=train.label_names,
        data_fingerprint=train.fingerprint,
    )
    key = "val_accuracy" if classification else "val_mse"
    best: tuple[float, int, Any] | None = None
    history: list[dict[str, float]] = []
    with progress_bar("updating (partial_fit)", total=passes) as advance:
        for epoch in range(1, passes + 1):
            order = rng.permutation(len(x))
            estimator.partial_fit(x[order], train.y[order], **extra)
            metrics = trained.score(validation, "val")
            history.append({"epoch": float(epoch), **metrics})
            score = metrics[key] if classification else -metrics[key]
            if best is None or score > best[0]:
                best = (score, epoch, copy.deepcopy(estimator))
            advance(1)
    assert best is not None  # passes >= 1
    trained.model = best[2]
    trained.metrics = trained.score(validation, "val")
    trained.lineage = Lineage(
        trainer="partial_fit",
        config={"passes": passes, "seed": seed},
        history=history,
        best_epoch=best[1],
    )
    return trained


register_strategy(
    Strategy(
        "sklearn",
        "partial_fit",
        _partial_fit,
        stage="update",
        config_class=None,
        options=("passes",),
        description="passes of partial_fit over the new rows",
    )
)
register_strategy(
    Strategy(
        "mlp",
        "continue",
        fit_mlp,
        stage="update",
        defaults=MLP_UPDATE,
        description="the loop from the package's weights, at a tenth of the rate",
    )
)


@dataclass
class Updated:
    """An updated package, its split of the new data, and the before / after test metrics."""

    package: Package
    trained: TrainedModel
    splits: Splits
    before: dict[str, float]
    test_metrics: dict[str, float]
    run_id: str | None = None  # the MLflow run that tracked it (tuneserve.update)


def update(
    data: DataLike,
    package: str | Path | Package,
    out: str | Path,
    *,
    config: TrainConfig | None = None,
    passes: int = DEFAULT_PASSES,
    seed: int = 0,
    validation: float = 0.1,
    test: float = 0.2,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    parent_version: str | None = None,
) -> Updated:
    """Continue ``package`` on new labeled ``data`` and write the updated package to ``out``.

    The new data is split like ``train`` does; the model continues on its train part
    (``sgd``: ``passes`` of ``partial_fit``, the best on validation kept; ``mlp``: the loop
    with ``config``, by default 30 epochs at a tenth of the usual learning rate). Both are
    scored on the new test split, the package as it was (``before``) and as updated; the
    manifest records both (``lineage.update``) and names the package as its parent.

    Raises:
        InvalidInputError: the package is not ``sgd`` or ``mlp``, or is for other data.
        DataError: the new data has labels the package does not know.
    """
    from tuneserve.runtime import Predictor

    if passes < 1:
        raise InvalidInputError(f"passes must be >= 1, got {passes}")
    check_out(out, overwrite)
    source = package if isinstance(package, Package) else Package.load(package)
    dataset = data if isinstance(data, Dataset) else load(data)
    _check_fits(dataset, source)
    names = list(source.manifest.label_names) if source.manifest.label_names else None
    rows = split_indices(dataset, validation=validation, test=test, seed=seed)
    coded = _recode(dataset, names)  # the package's label codes; the rows stay the same
    held = coded.subset(rows[2], name=f"{dataset.name}[test]")
    predictor = Predictor(source)
    before_out = (
        predictor.predict_proba(held.X)
        if dataset.task == "classification"
        else predictor.run(held.X)
    )
    before = metrics_of(before_out, held.y, dataset.task, "test")
    plan = make_plan(
        dataset.modality,
        backbone=source_backbone(source),
        stage="update",
        config=config,
        seed=seed,
        validation=validation,
        test=test,
        init=source,
        parent_version=parent_version,
        options=Options(passes=passes),
    )
    plan = replace(
        plan,
        split=replace(plan.split, rows=rows, data_fingerprint=dataset.fingerprint),
        update=UpdateRecord(parent=source.id, before=before),
    )
    kept: list[tuple[TrainedModel, Parts]] = []
    result = build(
        coded,
        plan,
        out,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        overwrite=overwrite,
        keep=lambda trained, parts: kept.append((trained, parts)),
    )
    trained, parts = kept[0]
    assert parts.test is not None
    test_metrics = {k: v for k, v in result.manifest.metrics.items() if k.startswith("test_")}
    return Updated(
        package=result,
        trained=trained,
        splits=Splits(parts.train, parts.validation, parts.test),
        before=before,
        test_metrics=test_metrics,
    )

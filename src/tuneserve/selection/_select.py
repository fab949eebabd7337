"""``select``: from candidate packages to one package, by filter, ensemble or both."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuneserve.data import DataLike, Dataset, holdout_indices
from tuneserve.evaluation import (
    as_dataset,
    check_metric,
    compare,
    held_out_rows,
    in_label_order,
    load_oof,
    metric_names,
    single_metric,
)
from tuneserve.exceptions import InvalidInputError, PackageError
from tuneserve.package import Package
from tuneserve.runtime import Predictor

from ._combiner import Combiner
from ._ensemble import EnsembleSelection, fit_stacker, fit_weights
from ._package import check_members, export_ensemble
from ._rules import COST_NAMES, apply_rules, parse_rule

#: ``filter`` keeps the best candidate that meets the rules; the others combine members
#: into one ensemble package; ``hybrid`` filters, then combines the survivors with
#: ``combine``.
COMBINERS = ("soft-vote", "hard-vote", "weighted", "greedy", "stacking")
METHODS = ("filter", *COMBINERS, "hybrid")


@dataclass
class Selection:
    """What ``select`` chose, and how it scored.

    Attributes:
        measured: Per candidate, its metrics on the scored rows and its cost.
        survivors: The candidates that met every rule (all, without rules).
        removed: Per rule, the candidates it removed.
        members: The chosen package (filter) or the ensemble's members.
        weights: Member weights (vote, mean and greedy ensembles).
        scores: On the report rows (not used for fitting): the result's ``metric`` and each
            member's, by name.
    """

    method: str
    metric: str
    package: Package
    measured: dict[str, dict[str, float]]
    survivors: list[str]
    removed: dict[str, list[str]]
    members: list[str]
    weights: list[float] | None = None
    scores: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "metric": self.metric,
            "package": str(self.package.path),
            "package_id": self.package.id,
            "members": self.members,
            "weights": self.weights,
            "scores": self.scores,
            "rows": self.rows,
            "survivors": self.survivors,
            "removed": self.removed,
            "measured": self.measured,
        }


def _copy_package(source: Package, out: Path, overwrite: bool) -> Package:
    """Copy a package folder whole (through a temporary sibling and a rename)."""
    if out.exists():
        if not overwrite:
            raise PackageError(f"{out} already exists. Hint: choose another --out, or --force")
        if not (out / "manifest.json").is_file():
            raise PackageError(f"refusing to replace {out}: it is not a tuneserve package")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(source.path, tmp)
        if out.exists():
            os.replace(out, old)  # two renames: the old package is never half gone
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return Package.load(out)


def _combiner(
    method: str, P: np.ndarray, y: np.ndarray, metric: str, options: dict[str, Any]
) -> Combiner:
    members = len(P)
    if method == "soft-vote":
        return Combiner("mean", np.full(members, 1 / members))
    if method == "hard-vote":
        return Combiner("vote", np.full(members, 1 / members))
    if method == "weighted":
        return Combiner("mean", fit_weights(P, y))
    if method == "greedy":
        chosen = EnsembleSelection(metric=metric, **options).fit(P, y)
        return Combiner("mean", chosen.weights_)
    stacker = fit_stacker(P, y, seed=options.get("seed", 0))
    return Combiner("stack", coef=stacker.coef_, intercept=stacker.intercept_)


def _out_of_fold(folders: Sequence[str | Path], candidates: int, data: Dataset) -> list[np.ndarray]:
    """Each candidate's out-of-fold probabilities (columns in the data's label order)."""
    if len(folders) != candidates:
        raise InvalidInputError(
            f"{len(folders)} --oof folders for {candidates} candidates; give one "
            "tuneserve cv --out folder per candidate, in the same order"
        )
    out = []
    for folder in folders:
        saved = load_oof(folder)
        if len(saved["y"]) != len(data) or not np.array_equal(saved["y"], data.y):
            raise InvalidInputError(
                f"{folder} holds out-of-fold predictions of other data than {data.name} "
                f"({len(saved['y'])} rows vs {len(data)}); run tuneserve cv on {data.name}"
            )
        if list(saved["labels"]) != list(data.label_names or []):
            raise InvalidInputError(f"{folder} has other classes than {data.name}")
        if saved["oof"].ndim != 2:
            raise InvalidInputError(f"{folder} holds regression predictions; ensembles classify")
        out.append(saved["oof"])
    return out


def select(
    candidates: Sequence[str | Path | Package],
    data: DataLike,
    out: str | Path,
    *,
    method: str = "greedy",
    rules: Sequence[str] = (),
    combine: str = "greedy",
    metric: str | None = None,
    rows: str = "auto",
    rounds: int = 25,
    init: int = 1,
    bags: int = 1,
    seed: int = 0,
    fit_fraction: float = 0.5,
    oof: Sequence[str | Path] | None = None,
    overwrite: bool = False,
    label_column: str | None = None,
    text_column: str | None = None,
) -> Selection:
    """Choose among ``candidates`` on labeled ``data`` and write one package to ``out``.

    Every candidate is scored through the runtime on the same rows (the held-out test
    split when ``data`` is their training data) and its cost measured. ``rules`` (e.g.
    ``"f1_macro>=0.9"``, ``"latency_ms<=5"``, ``"size_mb<=30"``) filter them.

    * ``filter``: the best candidate on ``metric`` that meets every rule, copied.
    * ``soft-vote``, ``hard-vote``, ``weighted``, ``greedy``, ``stacking``: an ensemble
      of the candidates (those meeting the rules). The scored rows are split in two,
      stratified: weights, greedy selection (``rounds``, ``init``, ``bags``) and the
      stacker are fitted on ``fit_fraction`` of them (rows no member trained on, so the
      stacker learns from out-of-fold probabilities), and the result is scored on the
      rest.
    * ``hybrid``: the rules, then ``combine`` (one of the ensemble methods) on the
      survivors.

    ``oof``: one ``tuneserve cv --out`` folder per candidate (same data, same order). The
    combiner is then fitted on the candidates' out-of-fold predictions of every row that
    is not scored, and the result is scored on all the scored rows.
    """
    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if method == "hybrid" and combine not in COMBINERS:
        raise InvalidInputError(f"combine must be one of {', '.join(COMBINERS)}; got {combine!r}")
    if oof is not None and method == "filter":
        raise InvalidInputError("--oof fits ensembles; filter takes no out-of-fold predictions")
    if method in ("filter", "hybrid") and not rules:
        raise InvalidInputError(f"{method} needs at least one rule, e.g. 'f1_macro>=0.9'")
    if len(candidates) < 2:
        raise InvalidInputError(f"select needs two or more candidates; got {len(candidates)}")
    packages = [c if isinstance(c, Package) else Package.load(c) for c in candidates]
    first = packages[0].manifest
    classes = len(first.label_names or [])
    chosen_metric = check_metric(
        metric or ("accuracy" if first.task == "classification" else "mse"), first.task, classes
    )
    known = [*metric_names(first.task, classes), *COST_NAMES]
    parsed = [parse_rule(r, known) for r in rules]
    dataset = as_dataset(data, label_column, text_column)
    kept_oof = _out_of_fold(oof, len(packages), dataset) if oof is not None else []
    comparison = compare(packages, dataset, metric=chosen_metric, rows=rows, bootstrap=0)
    measured = {
        e.name: {
            **{k: v.value for k, v in e.metrics.items()},
            **(c.to_dict() if c is not None else {}),
        }
        for e, c in zip(comparison.evaluations, comparison.costs, strict=True)
    }
    measured = {name: {k: float(v) for k, v in m.items()} for name, m in measured.items()}
    survivors, removed = apply_rules(measured, parsed) if parsed else (list(measured), {})
    by_name = {p.manifest.name: p for p in packages}
    target = Path(out).expanduser()
    if method == "filter":
        best = survivors[0]  # the comparison ranked them best first
        package = _copy_package(by_name[best], target, overwrite)
        score = measured[best][chosen_metric]
        return Selection(method, chosen_metric, package, measured, survivors, removed, [best],
                         scores={"result": score, best: score})  # fmt: skip
    combiner_name = combine if method == "hybrid" else method
    predictors = [Predictor(by_name[name]) for name in survivors]
    labels = check_members(predictors)
    names = list(dataset.label_names or [])
    if set(names) != set(labels):
        raise InvalidInputError(
            f"{dataset.name} has classes {', '.join(names)}; the candidates have "
            f"{', '.join(labels)}. Hint: select on data with the candidates' classes"
        )
    to_ensemble = np.array([labels.index(n) for n in names])
    scored_idx, _ = held_out_rows(packages[0], dataset, rows)
    # the comparison ran every candidate on these rows already: reuse its probabilities
    scored_by = {e.name: e for e in comparison.evaluations}
    P_scored = np.stack(
        [in_label_order(scored_by[n].output, scored_by[n].labels or [], labels) for n in survivors]
    )
    if oof is not None:
        fit_idx = np.setdiff1d(np.arange(len(dataset)), scored_idx)
        if len(fit_idx) == 0:
            raise InvalidInputError(
                "every row is scored (rows='all' or data the candidates were not trained "
                "on), so no out-of-fold row is left to fit the ensemble on. Hint: select "
                "on the candidates' training data, or drop --oof"
            )
        position = {p.manifest.name: i for i, p in enumerate(packages)}
        columns = [names.index(label) for label in labels]  # oof columns: the data's order
        P_fit = np.stack([kept_oof[position[name]][fit_idx][:, columns] for name in survivors])
        y_fit = to_ensemble[dataset.y[fit_idx]]
        report_at = np.arange(len(scored_idx))
    else:
        if not 0 < fit_fraction < 1:
            raise InvalidInputError(
                f"fit_fraction must be in (0, 1): the share of the scored rows the ensemble "
                f"is fitted on; got {fit_fraction}"
            )
        scored = dataset.subset(scored_idx, name=f"{dataset.name}[scored]")
        fit_at, report_at = holdout_indices(scored, 1 - fit_fraction, seed=seed)
        y_fit = to_ensemble[scored.y[fit_at]]
        P_fit = P_scored[:, fit_at]
    report_idx = scored_idx[report_at]
    report_part = dataset.subset(report_idx, name=f"{dataset.name}[report]")
    y_report = to_ensemble[report_part.y]
    P_report = P_scored[:, report_at]
    options = {"rounds": rounds, "init": init, "bags": bags, "seed": seed}
    combiner = _combiner(combiner_name, P_fit, y_fit, chosen_metric, options)
    kept = list(range(len(predictors)))
    if combiner.kind == "mean":  # members greedy never picked, or weighted zeroed, go
        kept = [i for i, w in enumerate(combiner.weights) if w > 0]
        combiner = Combiner("mean", combiner.weights[kept] / combiner.weights[kept].sum())
        P_report = P_report[kept]
    result = combiner.combine(P_report)
    scores = {"result": single_metric("classification", chosen_metric, y_report, result)}
    for i in kept:
        scores[survivors[i]] = single_metric(
            "classification", chosen_metric, y_report, P_report[kept.index(i)]
        )
    members = [predictors[i] for i in kept]
    package = export_ensemble(
        members,
        combiner,
        target,
        sample_inputs=report_part.X,
        probabilities=P_report[:, :, [labels.index(n) for n in members[0].labels or []]],
        name=target.name,
        metrics={f"holdout_{chosen_metric}": scores["result"]},
        config={
            "selection": {"method": method, "combine": combiner_name, **options},
            "held_out": {  # evaluate and compare score the ensemble on these rows only
                "data_fingerprint": dataset.fingerprint,
                "rows": report_idx.tolist(),
                "what": "the rows the selection held out (the ensemble was not fitted on them)",
            },
        },
        overwrite=overwrite,
    )
    return Selection(
        method,
        chosen_metric,
        package,
        measured,
        survivors,
        removed,
        [survivors[i] for i in kept],
        weights=combiner.weights.tolist() if combiner.kind != "stack" else None,
        scores=scores,
        rows={"fit": len(y_fit), "report": len(y_report)},
    )

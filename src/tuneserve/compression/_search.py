"""The search: try every method that applies to a package and their compositions, measure
each variant through the runtime on the same held-out rows, keep the Pareto front, and
choose the most compressed variant within the accuracy budget and the latency/size rules.

An interrupted search resumes: a variant already written with the lineage its recipe asks
for (the same source, method and settings) is kept, not rebuilt, and a training step
interrupted midway continues from its last epoch's checkpoint. Every variant is measured
again (a few seconds each), so latencies are all from the same run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuneserve.atomic import write_text
from tuneserve.data import DataLike, Dataset, split_indices
from tuneserve.exceptions import InvalidInputError, TuneserveError
from tuneserve.package import Package
from tuneserve.progress import progress_bar

from ._choice import Budget, choose, pareto_front
from ._folder import (
    CHOSEN,
    SUMMARY_FILE,
    copy_chosen,
    fresh_checkpoints,
    prepare,
    stamp,
    start,
    usable,
)
from ._measure import Measurement, measure
from ._recipes import (
    TRAINING_METHODS,
    Recipe,
    Step,
    catalogue,
    check_methods,
    check_settings,
    family_of,
    reason_not_applicable,
)
from ._steps import (
    Context,
    Rows,
    apply_step,
    expected_settings,
    step_settings,
    unlabeled_without,
)

REPORT_FILE = "report.html"
#: Most float nodes an INT8 variant that loses too much accuracy keeps in float.
MAX_EXCLUDED = 3


def _failure(exc: Exception) -> str:
    """One line for a variant that failed: the message, with the type for an error that is
    not tuneserve's own."""
    if isinstance(exc, TuneserveError):
        return str(exc)
    return f"{type(exc).__name__}: {str(exc)[:300]}"


class CompressionError(TuneserveError):
    """No variant meets the budget; ``result`` holds every measurement and the report."""

    def __init__(self, message: str, result: CompressionResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class CompressionResult:
    """What :func:`compress` measured and chose.

    Attributes:
        out: The search's folder: ``variants/``, ``report.html``, ``compression.json`` and,
            when a variant was chosen, ``chosen/`` (that variant's package).
        original: The package compressed, measured the same way.
        variants: Every variant measured.
        front: Names of the variants on the Pareto front (accuracy, latency, size).
        chosen: The chosen variant, or None when none meets the budget.
        package: The chosen package (``out/chosen``).
        why: Why it was chosen, or why none was.
        not_applicable: Method -> why it does not apply to this package.
        failed: Variant -> the error that stopped it.
        limits: Variant -> the rules it breaks (empty: within the budget).
        budget: The rules.
    """

    out: Path
    original: Measurement
    variants: list[Measurement]
    front: list[str]
    chosen: Measurement | None
    package: Package | None
    why: str
    not_applicable: dict[str, str]
    failed: dict[str, str]
    limits: dict[str, list[str]]
    budget: Budget
    rows: str = ""
    scored: int = 0
    name: str = ""
    notes: list[str] = field(default_factory=list)
    run_ids: dict[str, str] = field(default_factory=dict)

    @property
    def report(self) -> Path:
        return self.out / REPORT_FILE

    def to_dict(self) -> dict[str, Any]:
        return {
            "original": self.original.to_dict(),
            "variants": [m.to_dict() for m in self.variants],
            "front": self.front,
            "chosen": self.chosen.name if self.chosen else None,
            "package": str(self.package.path) if self.package else None,
            "why": self.why,
            "not_applicable": self.not_applicable,
            "failed": self.failed,
            "limits": self.limits,
            "budget": self.budget.to_dict(),
            "rows": self.rows,
            "scored": self.scored,
            "name": self.name,
            "notes": self.notes,
        }


def _split_rows(parent: Package, data: Dataset, seed: int) -> Rows:
    """The original's held-out rows when ``data`` is its training data (and its own train
    and validation rows where its recorded split reproduces them), else a fresh split."""
    lineage = parent.manifest.lineage
    held = lineage.held_out
    if held is not None and held.data_fingerprint == data.fingerprint:
        test = np.asarray(held.rows, dtype=np.int64)
        s = lineage.split
        if s is not None:
            train, val, again = split_indices(data, s.validation, s.test, s.seed)
            if np.array_equal(np.sort(again), np.sort(test)):
                return Rows(train, val, test, held.what)
        rest = np.setdiff1d(np.arange(len(data)), test)
        rng = np.random.default_rng(seed)
        rest = rng.permutation(rest)
        cut = max(1, round(0.1 * len(rest)))
        return Rows(rest[cut:], rest[:cut], test, held.what)
    train, val, test = split_indices(data, 0.1, 0.2, seed)
    return Rows(
        train,
        val,
        test,
        f"a fresh 20% test split (seed {seed}): {data.name} is not the data the package "
        "records as its training data",
    )


class _Search:
    def __init__(self, parent: Package, context: Context, out: Path, budget: Budget) -> None:
        self.parent, self.context, self.out, self.budget = parent, context, out, budget
        self.built: dict[str, Package] = {}
        self.failed: dict[str, str] = {}
        self.measured: dict[str, Measurement] = {}
        data = context.data.subset(context.rows.test)
        from tuneserve.evaluation import label_targets
        from tuneserve.runtime import Predictor

        self.inputs = data.X
        self.y = label_targets(Predictor(parent), data)
        try:
            self.original, self.baseline = measure("original", parent, self.inputs, self.y)
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"{context.data.name} does not match the input schema of package "
                f"{parent.manifest.name!r}, so its rows can neither score nor calibrate the "
                f"variants: {exc} Hint: pass the data the package was trained on, or data with "
                f"the same columns (tuneserve package show {parent.path})"
            ) from exc

    def build(self, recipe: Recipe) -> Package | None:
        """Every prefix of the recipe, built once; None when a step failed."""
        source = self.parent
        for depth in range(1, len(recipe.steps) + 1):
            name = Recipe(recipe.steps[:depth]).name
            if name in self.failed:
                return None
            if name not in self.built:
                step = recipe.steps[depth - 1]
                path = self.out / "variants" / name
                try:
                    self.built[name] = usable(
                        path, source, step, expected_settings(self.context, step)
                    ) or self._apply(step, source, path, name)
                except Exception as exc:  # one variant's failure is reported, not fatal
                    self.failed[name] = _failure(exc)
                    return None
            source = self.built[name]
        return source

    def _apply(self, step: Step, source: Package, path: Path, name: str) -> Package:
        if step.method in TRAINING_METHODS:
            fresh_checkpoints(
                self.context.checkpoints / name,
                {"source": source.id, "settings": step_settings(self.context, step)},
            )
        return apply_step(self.context, step, source, path, name=name)

    def measure(self, name: str, package: Package) -> Measurement | None:
        if name not in self.measured and name not in self.failed:
            try:
                self.measured[name] = measure(
                    name,
                    package,
                    self.inputs,
                    self.y,
                    baseline=self.baseline,
                    labels=self.parent.manifest.label_names,
                )[0]
            except Exception as exc:  # a variant that cannot run is reported, not fatal
                self.failed[name] = _failure(exc)
        return self.measured.get(name)

    def quantization_lost_too_much(self, recipe: Recipe) -> bool:
        """Whether the recipe ends in INT8 and that step, not the ones before it, took the
        variant out of the budget (leaving nodes in float can only win that back)."""
        if not recipe.steps[-1].method.startswith("int8"):
            return False
        last = self.measured.get(recipe.name)
        before = self.measured.get(Recipe(recipe.steps[:-1]).name, self.original)
        budget = self.budget.max_accuracy_drop
        return last is not None and last.drop > budget and before.drop <= budget

    def keep_nodes_in_float(self, recipe: Recipe, quantized: Package) -> None:
        """An INT8 variant that lost too much: leave its most sensitive nodes in float, one
        more at a time, and say which."""
        from ._sensitivity import node_sensitivity

        step = recipe.steps[-1]
        source = self.built.get(Recipe(recipe.steps[:-1]).name, self.parent)
        try:
            worst = node_sensitivity(source, quantized, self.context.calibration(), MAX_EXCLUDED)
        except Exception as exc:  # the variant stands; only the search for nodes failed
            self.failed[f"{recipe.name}-float"] = _failure(exc)
            return
        for k in range(1, len(worst) + 1):
            name = f"{recipe.name}-float{k}"
            nodes = tuple(node for node, _ in worst[:k])
            try:
                variant = apply_step(
                    self.context,
                    step,
                    source,
                    self.out / "variants" / name,
                    name=name,
                    exclude=nodes,
                )
            except Exception as exc:  # reported with the other failures
                self.failed[name] = _failure(exc)
                return
            measured = self.measure(name, variant)
            if measured is None or measured.drop <= self.budget.max_accuracy_drop:
                return


def compress(
    package: str | Path | Package,
    data: DataLike,
    out: str | Path,
    *,
    max_accuracy_drop: float = 0.01,
    latency_ms: float | None = None,
    size_mb: float | None = None,
    prefer: str = "latency",
    methods: Sequence[str] | None = None,
    unlabeled: Any = None,
    settings: dict[str, dict[str, Any]] | None = None,
    epochs: int | None = None,
    seed: int = 0,
    label_column: str | None = None,
    text_column: str | None = None,
    overwrite: bool = False,
) -> CompressionResult:
    """Make smaller, faster variants of ``package`` and choose the most compressed one that
    keeps the headline metric within ``max_accuracy_drop`` of the original's.

    Args:
        package: The package to compress (folder or loaded).
        data: Labeled data: the package's training data (its held-out rows score every
            variant, its training rows train and calibrate), or other labeled data of the
            same kind (split afresh).
        out: The search's folder (see :class:`CompressionResult`); rerun to resume.
        max_accuracy_drop: Largest drop of accuracy (regression: R²) allowed, as a fraction
            (0.01: one point).
        latency_ms, size_mb: Largest median latency at batch 1, and package size, allowed.
        prefer: What "most compressed" means: ``latency`` (batch 1), ``throughput`` (batch
            32) or ``size``.
        methods: Only these methods (and recipes made only of them); default: all that apply.
        unlabeled: Inputs without labels that distillation feeds the teacher too.
        settings: Per method, settings of its step (``{"distill": {"epochs": 5}}``).
        epochs: Fine-tuning epochs of every training-based method.
        seed: Seed of splits, resampling and training.
        overwrite: Start over in an existing search folder.

    Returns:
        The result; ``result.chosen`` is None when no variant meets the rules (the
        report says what limited each).
    """
    budget = Budget(max_accuracy_drop, latency_ms, size_mb, prefer)
    wanted = check_methods(methods)
    parent = package if isinstance(package, Package) else Package.load(package)
    if parent.manifest.task not in ("classification", "regression"):
        raise InvalidInputError(
            f"compress keeps a classifier's or regressor's accuracy; package "
            f"{parent.manifest.name!r} is an {parent.manifest.task} package"
        )
    from tuneserve.evaluation import as_dataset

    dataset = as_dataset(data, label_column, text_column)
    family = family_of(parent)
    check_settings(settings or {}, family)
    recipes, not_applicable = _recipes(parent, family, wanted)
    target = Path(out).expanduser().resolve()
    prepare(target, overwrite=False)  # refuse a folder that is not a search before any work
    rows = _split_rows(parent, dataset, seed)
    unlabeled, notes = unlabeled_without(unlabeled, dataset.subset(rows.test).X)
    context = Context(
        data=dataset,
        rows=rows,
        seed=seed,
        settings={k: dict(v) for k, v in (settings or {}).items()},
        epochs=epochs,
        unlabeled=unlabeled,
        checkpoints=target / "checkpoints",
        family=family,
    )
    search = _Search(parent, context, target, budget)  # checks the data against the package
    prepare(target, overwrite)
    start(target, stamp(parent, dataset.fingerprint, rows, seed, _fingerprint(unlabeled)))
    with progress_bar(f"compressing {parent.manifest.name}", total=len(recipes)) as advance:
        for recipe in recipes:
            built = search.build(recipe)
            for depth in range(1, len(recipe.steps) + 1):
                name = Recipe(recipe.steps[:depth]).name
                if name in search.built:
                    search.measure(name, search.built[name])
            if built is not None and search.quantization_lost_too_much(recipe):
                search.keep_nodes_in_float(recipe, built)
            advance(1)
    return _finish(search, not_applicable, notes)


def _fingerprint(unlabeled: Any) -> str:
    """A content hash of the unlabeled inputs ("" for none)."""
    if unlabeled is None:
        return ""
    import hashlib

    digest = hashlib.sha256()
    items = unlabeled.to_dict("records") if hasattr(unlabeled, "to_dict") else list(unlabeled)
    for item in items:
        data = item.tobytes() if isinstance(item, np.ndarray) else repr(item).encode()
        digest.update(data + b"|")
    return digest.hexdigest()


def _recipes(
    parent: Package, family: str, wanted: tuple[str, ...] | None
) -> tuple[list[Recipe], dict[str, str]]:
    recipes = catalogue(family)
    known = {m for r in recipes for m in r.methods}
    reasons = {
        m: reason_not_applicable(parent, family, m) for m in sorted(known | set(wanted or ()))
    }
    not_applicable = {m: r for m, r in reasons.items() if r is not None}
    applicable = sorted(m for m, r in reasons.items() if r is None)
    refused = [m for m in wanted or () if m in not_applicable]
    if refused:
        said = "; ".join(f"{m}: {not_applicable[m]}" for m in refused)
        raise InvalidInputError(
            f"--methods names what does not apply to package {parent.manifest.name!r} "
            f"({family}): {said}. Methods that apply: {', '.join(applicable) or 'none'}"
        )
    chosen = [
        r
        for r in recipes
        if not (r.methods & not_applicable.keys()) and (wanted is None or r.methods <= set(wanted))
    ]
    if not chosen:
        said = "; ".join(f"{m}: {r}" for m, r in not_applicable.items())
        raise InvalidInputError(
            f"no compression method applies to package {parent.manifest.name!r} ({family}"
            f"{', with --methods ' + ','.join(wanted) if wanted else ''}): {said}"
        )
    return chosen, not_applicable


def _finish(search: _Search, not_applicable: dict[str, str], notes: list[str]) -> CompressionResult:
    from ._report import compression_report

    variants = list(search.measured.values())
    chosen, why, limits = choose(search.original, variants, search.budget)
    front = pareto_front([search.original, *variants])
    out = search.out
    if not variants and search.failed:
        first = "; ".join(f"{k}: {v}" for k, v in list(search.failed.items())[:2])
        why = f"every variant failed ({len(search.failed)}): {first}"
    package = copy_chosen(Path(chosen.path) if chosen is not None else None, out / CHOSEN)
    result = CompressionResult(
        out=out,
        original=search.original,
        variants=variants,
        front=front,
        chosen=chosen,
        package=package,
        why=why,
        not_applicable=not_applicable,
        failed=dict(search.failed),
        limits=limits,
        budget=search.budget,
        rows=search.context.rows.what,
        scored=len(search.y),
        name=search.parent.manifest.name,
        notes=notes,
    )
    write_text(out / SUMMARY_FILE, json.dumps(result.to_dict(), indent=1, default=str))
    write_text(out / REPORT_FILE, compression_report(result))
    return result

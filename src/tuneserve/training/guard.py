"""The negative-transfer guard of ``train --from PKG``: try the alternatives, keep the best.

Transfer can hurt: a CNN trained on digits 0-4, fine-tuned on 5-9 from 10 images per
class, does worse than the same CNN from scratch. So with ``--from`` (cnn, mlp, text and
vision backbones) the guard trains, within the time budget shared between them:

* ``transfer``: the package's body with a new head (what ``--from`` always did);
* ``head-first`` (cnn, mlp): the same, the new head trained alone for a few epochs before
  every weight (encoders under ``auto`` already fit the probe's head first);
* ``scratch``: no transfer: a fresh cnn or mlp, or the original pretrained encoder the
  package was made from.

The one with the best validation score is kept; the package's lineage is that model's
own (from scratch: no parent, the original backbone) and ``details["guard"]`` lists what
each alternative reached, which won and by how much. ``guard=False`` (``--no-guard``)
trains plain transfer only.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneserve.data import Dataset
from tuneserve.exceptions import TuneserveError

from ._build import Parts, Run, split_for
from ._plan import Plan, resolve_backbone

if TYPE_CHECKING:  # pragma: no cover
    from ._result import TrainedModel

#: Backbone families whose ``--from`` the guard checks.
GUARDED = ("cnn", "mlp", "text", "vision")
#: Epochs of the new head alone in ``head-first`` (cnn, mlp).
HEAD_FIRST_EPOCHS = 5


def _score(trained: TrainedModel) -> tuple[float, ...]:
    m = trained.metrics
    if "val_accuracy" in m:
        return (m["val_accuracy"], -m.get("val_loss", 0.0))
    return (-m.get("val_mse", m.get("val_loss", math.inf)),)


def _alternatives(plan: Plan) -> list[tuple[str, Plan]]:
    assert plan.init is not None
    options = replace(plan.options, guard=False)
    out = [("transfer", replace(plan, options=options))]
    if plan.spec.family in ("cnn", "mlp"):
        first = min(HEAD_FIRST_EPOCHS, max(1, (plan.config.epochs if plan.config else 2) // 2))
        out.append(("head-first", replace(plan, options=replace(options, head_first=first))))
    # the same backbone and strategy, without the package: a fresh model, or for encoders
    # the pretrained one the package started from
    name, spec = resolve_backbone(plan.init.manifest.modality, plan.backbone)
    scratch = replace(plan, backbone=name, spec=spec, init=None, parent_version=None)
    out.append(("scratch", replace(scratch, options=options)))
    return out


def applies(plan: Plan) -> bool:
    """Whether the guard runs for ``plan``: ``--from`` a torch package, training, on."""
    return (
        plan.init is not None
        and plan.options.guard
        and plan.strategy.stage == "train"
        and plan.spec.family in GUARDED
    )


def guard_transfer(data: Dataset, plan: Plan, run: Run) -> Plan:
    """Train the alternatives to ``plan``'s transfer (see the module) and return the plan
    of the best, whose strategy hands ``build`` the model already trained; ``plan`` itself
    when the guard does not apply.

    Each alternative gets an equal share of the time budget. An alternative other than
    plain transfer that cannot be trained (the original encoder is not at hand) is
    recorded as skipped, with why.
    """
    if not applies(plan):
        return plan
    parts: Parts = split_for(data, plan)
    alternatives = _alternatives(plan)
    total = plan.options.time_budget
    share = total / len(alternatives) if total is not None else None
    tried: dict[str, dict[str, Any]] = {}
    results: list[tuple[str, Plan, TrainedModel]] = []
    for name, alternative in alternatives:
        alternative = replace(alternative, options=replace(alternative.options, time_budget=share))
        sub = Run(
            Path(run.checkpoint_dir) / f"guard-{name}" if run.checkpoint_dir else None,
            run.resume,
        )
        try:
            trained = alternative.strategy.fit(parts, alternative, sub)
        except TuneserveError as exc:
            if name == "transfer":
                raise
            tried[name] = {"skipped": str(exc)}
            continue
        tried[name] = dict(trained.metrics)
        results.append((name, alternative, trained))
    name, chosen, trained = max(results, key=lambda r: _score(r[2]))
    metric = "val_accuracy" if "val_accuracy" in trained.metrics else "val_loss"
    transfer = tried["transfer"]
    details = {
        "tried": tried,
        "kept": name,
        "metric": metric,
        "gain_over_transfer": round(trained.metrics[metric] - transfer[metric], 6),
        "budget_each_seconds": share,
        "from": plan.init.id if plan.init is not None else None,
    }
    trained.lineage = trained.lineage.model_copy(
        update={"details": {**trained.lineage.details, "guard": details}}
    )

    def kept(parts: Parts, plan: Plan, run: Run) -> TrainedModel:
        return trained

    options = replace(chosen.options, guard=plan.options.guard, time_budget=total)
    return replace(chosen, strategy=replace(chosen.strategy, fit=kept), options=options)


def guard_message(details: dict[str, Any]) -> str | None:
    """One line for the CLI: which alternative won and by how much; ``None`` without a
    guard."""
    record = details.get("guard")
    if not isinstance(record, dict):
        return None
    metric = record["metric"]
    scores = ", ".join(
        f"{name} {values[metric]:.4f}" if metric in values else f"{name} skipped"
        for name, values in record["tried"].items()
    )
    kept = record["kept"]
    if kept == "transfer":
        return f"--from guard: transfer kept ({metric}: {scores})"
    gain = record["gain_over_transfer"]
    return (
        f"--from guard: {kept} beat plain transfer by {abs(gain):.4f} {metric} ({scores}); "
        f"kept {kept}" + (" (the package has no parent)" if kept == "scratch" else "")
    )

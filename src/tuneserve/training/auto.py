"""Strategy ``auto``, the default of the encoder families: measure, choose what fits the
time budget, keep the best on validation.

1. The linear probe is trained first (frozen features, computed once and cached): cheap,
   and a good head to start fine-tuning from.
2. One optimizer step of each fine-tuning strategy (``full``, ``lora``, ``partial``) is
   timed on this machine, on batches of this data, in the precision the strategy trains
   in (bf16 autocast where the CPU has it natively): after one warm-up step, the median of
   :data:`TIMED_STEPS`. With the steps per epoch and a validation pass that gives each
   strategy's epoch time.
3. :func:`choose` takes the best-expected strategy (full, then lora, then partial) of
   which at least :data:`MIN_EPOCHS` epochs fit in what is left of the budget, with as
   many epochs as fit (at most the strategy's cap); if none fits, the probe alone.
4. The chosen strategy fine-tunes starting from the probe's head (linear probing, then
   fine-tuning: Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features": the
   body is not pushed around by a random head, and fewer epochs are needed), within the
   budget; whichever of it and the probe does best on validation is kept.

Choice, measurements and reason go into ``Lineage.details["auto"]``.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tuneserve.data import Dataset

from ._plan import Plan, Strategy, get_strategy, register_strategy
from .budget import DEFAULT_TIME_BUDGET, Budget, with_budget_record
from .config import TrainConfig
from .encoder import (
    EncoderRun,
    TrimPadding,
    fine_tune,
    mask_index,
    prepare_strategy,
)
from .loop import _device, _precision

if TYPE_CHECKING:  # pragma: no cover
    from ._build import Parts, Run
    from ._result import TrainedModel
    from .encoder import Setup

#: Fine-tuning strategies, best expected first.
CANDIDATES = ("full", "lora", "partial")
#: The fewest epochs worth fine-tuning for; fewer and the probe alone is kept. One is
#: enough when fine-tuning starts from the probe's head (it only has to improve on it).
MIN_EPOCHS = 1
#: The most epochs ``auto`` gives each strategy (more rarely helps a pretrained encoder).
MAX_EPOCHS = {"full": 5, "lora": 8, "partial": 8}
#: Share of the time left that the estimate may fill: a step measured on a few batches
#: is a guess, and the budget ends training cleanly if an epoch runs long.
SAFETY = 0.85
TIMED_STEPS = 2
#: Learning rates when fine-tuning starts from the probe's head (the head is already
#: right, so the body can move faster than from a random head without being distorted).
WARM_LEARNING_RATE = {"full": 1e-4, "lora": 2e-3, "partial": 2e-4}
CHOICE_FILE = "auto-choice.json"


@dataclass(frozen=True)
class Measurement:
    """One strategy's step, measured, and the epoch it implies."""

    strategy: str
    step_seconds: float
    batch_size: int
    steps_per_epoch: int
    validation_seconds: float

    @property
    def epoch_seconds(self) -> float:
        return self.steps_per_epoch * self.step_seconds + self.validation_seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_seconds": round(self.step_seconds, 4),
            "batch_size": self.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "epoch_seconds": round(self.epoch_seconds, 2),
        }


@dataclass(frozen=True)
class Choice:
    """What :func:`choose` decided: a strategy (``probe`` when nothing else fits), its
    epochs, and why."""

    strategy: str
    epochs: int
    reason: str


def choose(
    measured: Mapping[str, Measurement],
    seconds_left: float,
    *,
    max_epochs: Mapping[str, int] = MAX_EPOCHS,
    min_epochs: int = MIN_EPOCHS,
) -> Choice:
    """The best-expected strategy of which ``min_epochs`` epochs fit in ``SAFETY`` of
    ``seconds_left``, with as many epochs as fit (at most ``max_epochs``); else ``probe``."""
    usable = SAFETY * seconds_left
    too_slow: list[str] = []
    for name in CANDIDATES:
        m = measured.get(name)
        if m is None:
            continue
        fit = math.floor(usable / m.epoch_seconds) if m.epoch_seconds > 0 else max_epochs[name]
        if fit >= min_epochs:
            epochs = min(fit, max_epochs[name])
            return Choice(
                name,
                epochs,
                f"{name}: {epochs} epoch{'s' * (epochs != 1)} of ~{m.epoch_seconds:.1f} s fit "
                f"in {seconds_left:.0f} "
                f"s left of the budget" + (f" ({', '.join(too_slow)} did not)" if too_slow else ""),
            )
        too_slow.append(f"{name} ~{m.epoch_seconds:.0f} s/epoch")
    return Choice(
        "probe",
        0,
        f"probe only: {min_epochs} epoch{'s' * (min_epochs != 1)} of any fine-tuning would "
        "not fit in "
        f"{seconds_left:.0f} s left ({', '.join(too_slow) or 'nothing measured'}). Hint: a "
        "larger --time-budget",
    )


def measure(
    base: EncoderRun,
    train: Dataset,
    validation_rows: int,
    configs: Mapping[str, TrainConfig],
    seed: int,
) -> dict[str, Measurement]:
    """Time one optimizer step (forward, backward, AdamW) of each strategy in ``configs``
    on random batches of ``train`` (seeded), as the loop would run it."""
    feed = base.preprocessor.transform(train.X)
    mask_at = mask_index(feed)
    tensors = [torch.from_numpy(v) for v in feed.values()]
    y = torch.from_numpy(train.y if train.task == "classification" else train.y.astype("float32"))
    rng = np.random.default_rng(seed)
    out: dict[str, Measurement] = {}
    for name, config in configs.items():
        device = _device(config)
        dtype = _precision(config, device)
        model = copy.deepcopy(base.model)
        prepare_strategy(model, name, base.unfreeze, base.lora_rank)
        net = model if mask_at is None else TrimPadding(model, mask_at)
        net.to(device).train()
        trainable = [p for p in net.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
        batch = min(config.batch_size, len(y))
        times = []
        for _ in range(1 + TIMED_STEPS):
            rows = torch.from_numpy(rng.choice(len(y), size=batch, replace=False))
            inputs = tuple(t[rows].to(device) for t in tensors)
            start = time.perf_counter()
            autocast = torch.autocast(
                device.type, dtype=dtype or torch.float32, enabled=dtype is not None
            )
            with autocast:
                logits = net(*inputs).float()  # (batch, outputs)
            target = y[rows].to(device)
            if train.task == "classification":
                loss = torch.nn.functional.cross_entropy(logits, target)
            else:
                loss = torch.nn.functional.mse_loss(logits.reshape(target.shape), target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
        step = statistics.median(times[1:])
        steps = math.ceil(len(y) / config.batch_size)
        # a validation pass is forward only: about a third of a training step per batch
        val = math.ceil(validation_rows / config.batch_size) * step / 3
        out[name] = Measurement(name, step, config.batch_size, steps, val)
        del model, net, optimizer
    return out


def _given(plan: Plan) -> dict[str, Any]:
    """The loop settings the user set: those where the plan's differ from auto's own."""
    assert plan.config is not None
    own = plan.strategy.default_config(seed=plan.seed)
    return {
        f.name: getattr(plan.config, f.name)
        for f in fields(plan.config)
        if getattr(plan.config, f.name) != getattr(own, f.name)
    }


def _score(trained: TrainedModel) -> tuple[float, ...]:
    m = trained.metrics
    if "val_accuracy" in m:
        return (m["val_accuracy"], -m.get("val_loss", 0.0))
    return (-m.get("val_loss", m.get("val_mse", math.inf)),)


def _recorded_choice(run: Run) -> Choice | None:
    """The choice of the interrupted run being resumed (its checkpoint is for that one)."""
    if not run.resume or run.checkpoint_dir is None:
        return None
    path = Path(run.checkpoint_dir) / CHOICE_FILE
    if not path.is_file():
        return None
    found = json.loads(path.read_text())
    return Choice(found["strategy"], int(found["epochs"]), found["reason"] + " (resumed)")


def fit_auto(parts: Parts, plan: Plan, run: Run, setup: Setup) -> TrainedModel:
    """Probe, measure, choose, fine-tune from the probe's head, keep the best."""
    budget = Budget(plan.options.time_budget or DEFAULT_TIME_BUDGET)
    train, validation = parts.train, parts.validation
    given = {**_given(plan), "seed": plan.seed}
    configs = {
        name: get_strategy(plan.spec, name, backbone=plan.backbone).default_config(**given)
        for name in ("probe", *CANDIDATES)
    }
    torch.manual_seed(plan.seed)
    base, extra = setup(train, plan)
    base = replace(base, unfreeze=plan.options.unfreeze, lora_rank=plan.options.lora_rank)
    started = budget.used()
    probe_config = configs.pop("probe")
    assert probe_config is not None
    probe = fine_tune(
        replace(base, model=copy.deepcopy(base.model), strategy="probe"),
        train,
        validation,
        probe_config,
        trainer=f"train_{plan.strategy.family}",
        extra=dict(extra),
    )
    probe_seconds = budget.used() - started
    choice = _recorded_choice(run)
    measured: dict[str, Measurement] = {}
    if choice is None:
        started = budget.used()
        usable = {k: v for k, v in configs.items() if v is not None}
        measured = measure(base, train, len(validation), usable, plan.seed)
        measure_seconds = budget.used() - started
        choice = choose(measured, budget.left())
    else:
        measure_seconds = 0.0
    details: dict[str, Any] = {
        "budget_seconds": budget.seconds,
        "probe_seconds": round(probe_seconds, 2),
        "measure_seconds": round(measure_seconds, 2),
        "measured": {k: m.to_dict() for k, m in measured.items()},
        "chose": choice.strategy,
        "epochs": choice.epochs,
        "reason": choice.reason,
        "probe_val": probe.metrics,
    }
    kept, planned = probe, probe_config.epochs
    if choice.strategy != "probe":
        if run.checkpoint_dir is not None:
            Path(run.checkpoint_dir).mkdir(parents=True, exist_ok=True)
            record = {"strategy": choice.strategy, "epochs": choice.epochs, "reason": choice.reason}
            (Path(run.checkpoint_dir) / CHOICE_FILE).write_text(json.dumps(record))
        config = configs[choice.strategy]
        assert config is not None
        settings: dict[str, Any] = {"epochs": choice.epochs}
        if "learning_rate" not in given:
            settings["learning_rate"] = WARM_LEARNING_RATE[choice.strategy]
        if "epochs" in given:
            settings["epochs"] = min(choice.epochs, config.epochs)
        config = replace(config, **settings)
        model = copy.deepcopy(base.model)
        model.head.load_state_dict(probe.model.head.state_dict())
        with budget.watching():
            tuned = fine_tune(
                replace(base, model=model, strategy=choice.strategy),
                train,
                validation,
                config,
                trainer=f"train_{plan.strategy.family}",
                extra={**extra, "head_from": "probe"},
                checkpoint_dir=run.checkpoint_dir,
                resume=run.resume,
            )
        ended = budget.record(tuned.lineage, config.epochs)["ended_training"]
        details["budget_ended_fine_tuning"] = ended
        details[f"{choice.strategy}_val"] = tuned.metrics
        if _score(tuned) >= _score(probe):
            kept, planned = tuned, config.epochs
    # what the budget did to the kept model's own run (the probe's: nothing)
    kept = with_budget_record(kept, budget, planned)
    details["kept"] = kept.lineage.backbone.strategy if kept.lineage.backbone else "probe"
    details["seconds"] = round(budget.used(), 2)
    lineage = kept.lineage
    kept.lineage = lineage.model_copy(
        update={
            "details": {**lineage.details, "auto": details},
            "config": {**lineage.config, "strategy_kept": details["kept"]},
        }
    )
    return kept


def register_auto(family: str, setup: Setup, defaults: Mapping[str, Any]) -> Strategy:
    """Register ``auto`` for an encoder family (before its other strategies: the first is
    the family's default). ``defaults``: its loop settings (those of ``full``), against
    which the settings a user gives are told apart and passed on to the chosen strategy."""

    def fit(parts: Parts, plan: Plan, run: Run) -> TrainedModel:
        return fit_auto(parts, plan, run, setup)

    options = ("max_length", "unfreeze", "lora_rank") if family == "text" else ("unfreeze",)
    return register_strategy(
        Strategy(
            family,
            "auto",
            fit,
            defaults=defaults,
            options=(*options, "time_budget"),
            description="measure each strategy here, fine-tune what fits --time-budget, "
            "keep the best of it and the probe",
        )
    )

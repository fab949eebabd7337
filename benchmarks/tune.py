"""Hyperparameter search: the trial epochs ASHA and Hyperband need to match random search.

Every study goes through ``tuneserve.tuning.tune`` (our trials, our pruning, our fidelity:
one step per training epoch), on two tasks: digits with the CNN (images) and
breast_cancer with the MLP (a table). Compute is counted in **trial epochs** (the number
of intermediate values each trial reported, summed over the study, as
``TuneResult.compute``), not seconds, so the numbers do not depend on how busy the
machine is.

Measures in one run on this machine, for each of ``--seeds`` seeds:
  * a full random search (``sampler_name="random"``, ``pruner_name="none"``) of
    ``--trials`` trials that each run the same ``--epochs`` epochs (epochs and patience
    fixed in the space, the learning rate and the rest searched): its best validation
    accuracy A* and its compute E;
  * the same sampler and seed with ``asha`` and with ``hyperband``: the epochs, summed in
    trial order, until their best-so-far validation accuracy (of complete trials, what the
    study would return) first reaches A* - 0.005, as a fraction of E (target <= 40%);
  * TPE (no pruner) against random at the same number of trials: best validation accuracy.

Defaults: digits (all 1797 images) 15 trials x 8 epochs, breast_cancer 24 trials x 12
epochs (why: see READING below and the results file); the two tasks run side by side in two
processes (``--jobs 2``, one torch thread each). About 10-20 minutes on 2 shared CPUs.

Rerun: ``.venv/bin/python benchmarks/tune.py [--seeds 3] [--only digits|table]
[--trials N] [--epochs E] [--digits-rows R] [--jobs 1]`` (``--trials``/``--epochs``
apply to both tasks; without them each task keeps its own defaults).
Writes ``benchmarks/results/tune.md`` (with ``--only``, ``tune-digits.md`` or
``tune-table.md``).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TUNESERVE_PROGRESS", "0")

import numpy as np
import optuna
import torch

#: within half a point of random search's best
TOLERANCE = 0.005
TARGET = 0.40
PRUNERS = ("asha", "hyperband")
READING = [
    "How to read it:",
    "",
    "- Random search with the same seed proposes the same points whatever the pruner, and a "
    "trial's training is seeded by the split, so a trial that ASHA or Hyperband lets finish "
    "ends with exactly the value it has in the full random search: the pruned studies can only "
    "match A* by letting the trial that found it (or one within 0.5 point) run to the end. "
    "'Not reached' means the pruner stopped every such trial early.",
    "- Reaching is counted on complete trials only (what the study returns as its best): "
    "a pruned trial's intermediate accuracies are not a model anyone gets.",
    "- Epochs to reach are summed in trial order up to and including the trial that reached, "
    "pruned trials with the epochs they ran. A seed that never reached counts as worse than "
    "any that did for the median; its share in the table is then of all its epochs.",
    "- 0.5 point is less than one validation image of digits (180) or row of breast_cancer "
    "(57), so in practice 'within 0.5 point' means 'the same accuracy as A*'.",
    "- Optuna's successive halving (`asha`: min resource 1 epoch, reduction factor 3) compares "
    "trials at 1, 3, 9, ... epochs; it does not know the last epoch, so the epochs per trial "
    "are not a power of 3 (8 and 12), where a trial could be pruned at its very last epoch. "
    "Pruning needs trials to compare at each rung (the first trials are kept only if they are "
    "the best so far); Hyperband splits the trials over brackets (2 for 8 epochs, 3 for 12) "
    "and so compares fewer in each, and prunes less. Hence 24 trials on the table and 15 on "
    "digits (whose epochs cost more; 8 instead of the default 5-30), which keep the run at "
    "10 to 20 minutes on 2 shared CPUs.",
    "- TPE (Optuna's default, `n_startup_trials=10`) draws its first 10 trials at random, "
    "the same points as the random sampler of the same seed: only the last 5 (digits) or 14 "
    "(table) trials are TPE's own.",
    "- The seed is `tune`'s seed: it seeds the sampler and the train/validation/test split, so "
    "A* differs from seed to seed.",
    "",
]
#: digits rows used (None: all 1797)
DIGITS_ROWS: int | None = None


@dataclass
class Task:
    key: str  # digits | table
    data: str
    backbone: str
    trials: int
    epochs: int
    space: dict[str, Any]
    rows: int | None = None  # a subset of the data (None: all of it)


def tasks(args: argparse.Namespace) -> list[Task]:
    digits_epochs = args.epochs or 8
    table_epochs = args.epochs or 12
    out = [
        Task(
            "digits",
            "digits",
            "cnn",
            args.trials or 15,
            digits_epochs,
            {
                "epochs": digits_epochs,
                "patience": digits_epochs,
                "learning_rate": {"low": 1e-4, "high": 3e-2, "log": True},
                "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
                "batch_size": 64,
                "hidden": [64, 128],
                "augment_strength": {"low": 0.0, "high": 1.5},
            },
            rows=args.digits_rows,
        ),
        Task(
            "table",
            "breast_cancer",
            "mlp",
            args.trials or 24,
            table_epochs,
            {
                "epochs": table_epochs,
                "patience": table_epochs,
                "learning_rate": {"low": 1e-5, "high": 3e-2, "log": True},
                "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
                "batch_size": [32, 64, 128],
            },
        ),
    ]
    return [t for t in out if args.only in (None, t.key)]


@dataclass
class Trial:
    number: int
    state: str  # complete | pruned | fail
    epochs: int
    value: float | None


@dataclass
class Study:
    sampler: str
    pruner: str
    seed: int
    trials: list[Trial]
    compute: int  # TuneResult.compute
    best: float  # TuneResult.best_value
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return sum(t.epochs for t in self.trials)

    def reach(self, target: float) -> int | None:
        """Epochs, summed in trial order, until the best complete trial so far is
        >= ``target`` (None: never)."""
        spent = 0
        for t in sorted(self.trials, key=lambda t: t.number):
            spent += t.epochs
            if t.value is not None and t.value >= target:
                return spent
        return None


def run_study(data: Any, task: Task, sampler: str, pruner: str, seed: int, tmp: Path) -> Study:
    from tuneserve.tuning import tune

    name = f"{task.key}-{sampler}-{pruner}-s{seed}"
    storage = f"sqlite:///{tmp / 's.db'}"
    started = time.perf_counter()
    result = tune(
        data,
        tmp / name,
        backbones=[task.backbone],
        trials=task.trials,
        sampler_name=sampler,
        pruner_name=pruner,
        space=task.space,
        storage=storage,
        study=name,
        seed=seed,
        progress=False,
    )
    seconds = time.perf_counter() - started
    study = optuna.load_study(study_name=name, storage=storage)
    trials = [
        Trial(
            t.number,
            t.state.name.lower(),
            len(t.intermediate_values),
            float(t.value) if t.state == optuna.trial.TrialState.COMPLETE else None,
        )
        for t in study.trials
    ]
    return Study(
        sampler, pruner, seed, trials, result.compute, result.best_value, seconds, result.counts
    )


@dataclass
class SeedResult:
    seed: int
    random: Study
    pruned: dict[str, Study]
    tpe: Study


def run_task(task: Task, seeds: list[int], tmp: Path) -> tuple[list[SeedResult], Any]:
    from tuneserve.data import load

    data = load(task.data)
    if task.rows is not None and task.rows < len(data):
        rows = np.sort(np.random.default_rng(0).permutation(len(data))[: task.rows])
        data = data.subset(rows, name=f"{task.data}-{task.rows}")
    out = []
    for seed in seeds:
        studies: dict[str, Study] = {}
        for sampler, pruner in [("random", "none"), *(("random", p) for p in PRUNERS)]:
            studies[pruner] = run_study(data, task, sampler, pruner, seed, tmp)
            s = studies[pruner]
            print(
                f"[{task.key}] seed {seed} {sampler}+{pruner}: best {s.best:.4f}, "
                f"{s.epochs} epochs, {s.counts}, {s.seconds:.0f} s",
                flush=True,
            )
        tpe = run_study(data, task, "tpe", "none", seed, tmp)
        print(
            f"[{task.key}] seed {seed} tpe+none: best {tpe.best:.4f}, {tpe.epochs} epochs, "
            f"{tpe.seconds:.0f} s",
            flush=True,
        )
        out.append(SeedResult(seed, studies["none"], {p: studies[p] for p in PRUNERS}, tpe))
    return out, data


def fraction(r: SeedResult, pruner: str) -> tuple[float, bool]:
    """Share of random search's compute the pruned study needed to reach A* - 0.005, and
    whether it did (if not: the share of all its compute)."""
    study = r.pruned[pruner]
    spent = study.reach(r.random.best - TOLERANCE)
    e = r.random.epochs
    if spent is None:
        return study.epochs / e, False
    return spent / e, True


def pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def ranked(shares: list[tuple[float, bool]]) -> list[float]:
    """The shares with a seed that never reached counted as worse than any that did."""
    return sorted(share if ok else math.inf for share, ok in shares)


def pct_or_not(value: float) -> str:
    return "not reached" if math.isinf(value) else pct(value)


def spread(shares: list[tuple[float, bool]]) -> str:
    values = ranked(shares)
    median = statistics.median(values)
    return f"{pct_or_not(median)} (range {pct_or_not(values[0])} to {pct_or_not(values[-1])})"


def task_section(
    task: Task, results: list[SeedResult], data: Any, wall: float
) -> tuple[list[str], str]:
    from tuneserve.data import split_indices

    tr, va, te = split_indices(data, validation=0.1, test=0.2, seed=0)
    subset = f" (a random subset of {len(data)} rows)" if task.rows is not None else ""
    lines = [
        f"## {task.data} with the {task.backbone.upper()}",
        "",
        f"Data: {task.data}{subset}, split {len(tr)}/{len(va)}/{len(te)} (train/validation/"
        f"test, the split of seed 0; each study's seed also seeds its split). "
        f"{task.trials} trials per study, {task.epochs} epochs per trial "
        f"(patience {task.epochs}: a trial that is not pruned runs them all). "
        f"One validation image/row is {100 / len(va):.2f} points of accuracy. "
        f"Wall time of this section: {wall / 60:.1f} min.",
        "",
        f"Space: `{task.space}`",
        "",
        "| seed | random: best val acc A* | random: epochs E | "
        "ASHA: epochs to A*-0.5pt | ASHA: share of E | ASHA: pruned, all epochs | "
        "Hyperband: epochs to A*-0.5pt | Hyperband: share of E | Hyperband: pruned, all epochs |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    shares: dict[str, list[tuple[float, bool]]] = {p: [] for p in PRUNERS}
    reached: dict[str, int] = {p: 0 for p in PRUNERS}
    for r in results:
        cells = [str(r.seed), f"{r.random.best:.4f}", str(r.random.epochs)]
        for p in PRUNERS:
            share, ok = fraction(r, p)
            shares[p].append((share, ok))
            reached[p] += ok
            s = r.pruned[p]
            spent = s.reach(r.random.best - TOLERANCE)
            cells += [
                str(spent) if ok else f"not reached (best {s.best:.4f})",
                pct(share) if ok else f"{pct(share)} (not reached)",
                f"{s.counts.get('pruned', 0)}/{len(s.trials)}, {s.epochs}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""]
    for p in PRUNERS:
        median = statistics.median(ranked(shares[p]))
        met = "met" if median <= TARGET else "not met"
        if median <= TARGET and reached[p] < len(results):
            met = "met by the median, but not reached on every seed"
        lines.append(
            f"**{'ASHA' if p == 'asha' else 'Hyperband'}: {spread(shares[p])} of random "
            f"search's epochs to come within 0.5 point of its best; reached on {reached[p]} of "
            f"{len(results)} seeds (target <= {pct(TARGET)}: {met}).**"
        )
        lines.append("")
    lines += [
        "TPE against random search, the same number of trials, no pruner (best validation "
        "accuracy):",
        "",
        "| seed | random | TPE | TPE - random (points) |",
        "|---:|---:|---:|---:|",
    ]
    diffs = []
    for r in results:
        diffs.append(r.tpe.best - r.random.best)
        lines.append(
            f"| {r.seed} | {r.random.best:.4f} | {r.tpe.best:.4f} | {100 * diffs[-1]:+.2f} |"
        )
    lines += [
        f"| median | {statistics.median(r.random.best for r in results):.4f} | "
        f"{statistics.median(r.tpe.best for r in results):.4f} | "
        f"{100 * statistics.median(diffs):+.2f} |",
        "",
        "Per trial, in trial order (epochs run; P = pruned; value of complete trials):",
        "",
    ]
    for r in results:
        for label, s in [("random", r.random), *((p, r.pruned[p]) for p in PRUNERS)]:
            cells = [
                f"{t.epochs}P"
                if t.state == "pruned"
                else f"{t.epochs}:{t.value:.3f}"
                if t.value is not None
                else f"{t.epochs}{t.state[0].upper()}"
                for t in sorted(s.trials, key=lambda t: t.number)
            ]
            lines.append(f"- seed {r.seed}, {label}: " + " ".join(cells))
    lines.append("")
    row = [f"{task.data} ({task.backbone})"]
    for p in PRUNERS:
        row += [spread(shares[p]), f"{reached[p]}/{len(results)}"]
    row.append(f"{100 * statistics.median(diffs):+.2f}")
    return lines, "| " + " | ".join(row) + " |"


def section(task: Task, seeds: list[int], tmp: str, threads: int | None) -> tuple[list[str], str]:
    """One task's studies, its markdown section and its summary row (run in a worker
    process with ``--jobs 2``)."""
    if threads:
        torch.set_num_threads(threads)
    os.environ["TUNESERVE_HOME"] = str(Path(tmp) / "home")
    started = time.perf_counter()
    folder = Path(tmp) / task.key
    folder.mkdir(parents=True, exist_ok=True)
    results, data = run_task(task, seeds, folder)
    return task_section(task, results, data, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, help="trials per study (both tasks)")
    parser.add_argument("--epochs", type=int, help="epochs per trial (both tasks)")
    parser.add_argument("--digits-rows", type=int, default=DIGITS_ROWS, help="a digits subset")
    parser.add_argument("--only", choices=("digits", "table"))
    parser.add_argument(
        "--jobs", type=int, default=2, help="tasks run side by side (1 torch thread each)"
    )
    parser.add_argument("--out", type=Path, help="the results file")
    args = parser.parse_args()
    started = time.perf_counter()
    chosen = tasks(args)
    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory(prefix="tuneserve-bench-tune-") as tmp:
        if args.jobs > 1 and len(chosen) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(args.jobs, len(chosen)), mp_context=context) as pool:
                futures = [pool.submit(section, t, seeds, tmp, 1) for t in chosen]
                done = [f.result() for f in futures]
        else:
            done = [section(t, seeds, tmp, None) for t in chosen]
    total = time.perf_counter() - started
    rerun = " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in vars(args).items()
        if v is not None and k != "out" and parser.get_default(k) != v
    )
    threads = (
        "1 torch thread per task"
        if args.jobs > 1 and len(chosen) > 1
        else (f"{torch.get_num_threads()} torch threads")
    )
    header = [
        "# Hyperparameter search: trial epochs of ASHA and Hyperband against random search",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"optuna {optuna.__version__}; the tasks ran side by side ({threads}) while other "
        "work shared the CPUs: compute is counted in trial epochs, which the load does not "
        f"change. Whole run: {total / 60:.1f} min.",
        f"Rerun: `.venv/bin/python benchmarks/tune.py{' ' + rerun if rerun else ''}`",
        "",
        "Summary (share of random search's trial epochs until the best-so-far validation "
        "accuracy is within 0.5 point of random search's best; median over the seeds, "
        f"range in brackets; target <= {pct(TARGET)}):",
        "",
        "| task | ASHA | ASHA reached | Hyperband | Hyperband reached | TPE - random, median "
        "(points) |",
        "|---|---:|---:|---:|---:|---:|",
        *(row for _, row in done),
        "",
        *READING,
    ]
    name = "tune.md" if args.only is None else f"tune-{args.only}.md"
    out = args.out or Path(__file__).parent / "results" / name
    text = "\n".join(header + [line for lines, _ in done for line in lines])
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

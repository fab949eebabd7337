"""Bootstrap 95% intervals (what ``tuneserve evaluate`` prints) in one process versus
spread over every core.

Measures, in one run, the wall time of ``with_intervals(rounds=R)`` on real predictions
(a logistic regression on digits: 10 classes, so ROC-AUC is ten one-vs-rest curves per
resample; and on breast_cancer: binary) with ``n_jobs=1`` and with the default, which
uses every core once the resamples would take over 2 s one by one. Worker start-up is
included. It also checks that both give the same intervals.

Rerun: ``.venv/bin/python benchmarks/bootstrap.py [--rounds 1000] [--repeats 3]``
Writes ``benchmarks/results/bootstrap.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from sklearn import datasets
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tuneserve.evaluation import with_intervals


def predictions(name: str) -> tuple[np.ndarray, np.ndarray]:
    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    return y, model.predict_proba(X)


def timed(y: np.ndarray, proba: np.ndarray, rounds: int, n_jobs: int | None) -> tuple[float, dict]:
    start = time.perf_counter()
    result = with_intervals("classification", y, proba, rounds=rounds, seed=0, n_jobs=n_jobs)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    for name in ("digits", "breast_cancer"):
        y, proba = predictions(name)
        one, every = [], []
        for _ in range(args.repeats):  # interleaved, so drift hits both alike
            seconds, alone = timed(y, proba, args.rounds, 1)
            one.append(seconds)
            seconds, spread = timed(y, proba, args.rounds, None)
            every.append(seconds)
            assert alone == spread, "the intervals depend on the number of processes"
        ratio = statistics.median(one) / statistics.median(every)
        rows.append((name, len(y), proba.shape[1], one, every, ratio))
        print(
            f"{name}: 1 process {statistics.median(one):.2f} s, "
            f"all cores {statistics.median(every):.2f} s, speed-up {ratio:.2f}x"
        )

    def spread(times: list[float]) -> str:
        return f"{statistics.median(times):.2f} s ({min(times):.2f}-{max(times):.2f})"

    lines = [
        "# Bootstrap intervals: one process vs every core",
        "",
        f"Machine: {platform.machine()}, {cores} CPUs. {args.rounds} resamples, "
        f"{args.repeats} repeats (interleaved): median (min-max) wall time, worker start-up "
        "is in the first repeat (joblib reuses its workers). Both give identical intervals "
        "(checked).",
        "Rerun: `.venv/bin/python benchmarks/bootstrap.py --rounds "
        f"{args.rounds} --repeats {args.repeats}`",
        "",
        "| data | rows | classes | 1 process | every core (default) | speed-up |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, n, classes, one, every, ratio in rows:
        lines.append(
            f"| {name} | {n} | {classes} | {spread(one)} | {spread(every)} | **{ratio:.2f}x** |"
        )
    lines += [
        "",
        "The metrics come from scikit-learn, whose per-call checks dominate a resample, so "
        "the resamples are spread over processes (joblib) rather than threads. The default "
        "stays in one process when the resamples would take under 2 s one by one.",
    ]
    out = Path(__file__).parent / "results" / "bootstrap.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

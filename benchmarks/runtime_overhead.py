"""What does the Predictor add on top of raw ONNX Runtime?

Trains the built-in CNN on digits (a few epochs) and the logistic regression on
breast_cancer, exports both, then measures in one run, per batch size:
  * raw: ``session.run`` on already-preprocessed float32 arrays (the physical limit);
  * ours: ``Predictor.predict_proba`` on raw inputs (preprocessing + run + unpacking):
    float arrays for the images, JSON-like dict rows (what a server receives) for the table.
Reports rows/s (median of repeats, with min-max spread) and ours / raw.

Rerun: ``.venv/bin/python benchmarks/runtime_overhead.py [--repeats 7]``
Writes ``benchmarks/results/runtime_overhead.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def rows_per_second(fn: Callable[[], object], rows: int, repeats: int) -> list[float]:
    fn()  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        rates.append(rows / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    from tuneserve.data import load, split
    from tuneserve.runtime import Predictor
    from tuneserve.training import CNNConfig, train_cnn, train_logistic_regression

    tmp = Path(tempfile.mkdtemp())
    digits = split(load("digits"))
    cnn = train_cnn(digits.train, digits.validation, CNNConfig(epochs=3))
    cnn_pkg = cnn.export(tmp / "cnn", digits.test.X)
    cancer = split(load("breast_cancer"))
    logreg = train_logistic_regression(cancer.train)
    tab_pkg = logreg.export(tmp / "logreg", cancer.test.X)

    cases = [
        ("digits CNN", cnn_pkg, list(load("digits").X)),
        ("breast_cancer logreg (dict rows)", tab_pkg, load("breast_cancer").X.to_dict("records")),
    ]
    lines = [
        "# Runtime overhead: Predictor vs raw ONNX Runtime",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; {args.repeats} repeats after a "
        "warm-up; rows/s as median (min-max).",
        f"Rerun: `.venv/bin/python benchmarks/runtime_overhead.py --repeats {args.repeats}`",
        "",
        "| model | batch | raw ORT rows/s | Predictor rows/s | ours / raw |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, pkg, inputs in cases:
        for batch in (1, 32, 256):
            predictor = Predictor(pkg, batch_size=batch)
            n = min(len(inputs), 512)
            sample = inputs[:n]
            feeds = [
                predictor.preprocessor.transform(sample[i : i + batch]) for i in range(0, n, batch)
            ]
            session, out = predictor.session, predictor.manifest.graph.output

            def raw(feeds=feeds, session=session, out=out) -> None:
                for feed in feeds:
                    session.run([out], feed)

            raw_rates = rows_per_second(raw, n, args.repeats)
            ours_rates = rows_per_second(
                lambda p=predictor, s=sample: p.predict_proba(s), n, args.repeats
            )
            r, o = statistics.median(raw_rates), statistics.median(ours_rates)
            lines.append(
                f"| {name} | {batch} | {r:,.0f} ({min(raw_rates):,.0f}-{max(raw_rates):,.0f}) | "
                f"{o:,.0f} ({min(ours_rates):,.0f}-{max(ours_rates):,.0f}) | {o / r:.2f} |"
            )
    lines += [
        "",
        "The gap is preprocessing in numpy (image resize/normalize, table scaling and one-hot)",
        "plus Python overhead per call; raw ORT receives arrays that are already preprocessed.",
        "",
    ]
    np.set_printoptions()
    out_file = Path(__file__).parent / "results" / "runtime_overhead.md"
    out_file.parent.mkdir(exist_ok=True)
    out_file.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

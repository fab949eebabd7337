"""Compression: every variant of two real packages measured side by side in one run.

The MiniLM text classifier (fine-tuned on real docstrings of numpy / pandas / scikit-learn)
and the digits CNN go through ``tuneserve.compress`` with every method that applies; each
variant is then timed again ``--repeats`` times (median and range) at batch 1 and 32
through tuneserve's runtime, and scored on the package's held-out rows.

Target (MiniLM): at least 3x lower latency than the FP32 package at no more than one point
of accuracy drop.

Rerun: ``.venv/bin/python benchmarks/compress.py`` (``--only text`` or ``--only digits``;
``--epochs`` fine-tuning epochs of the training-based methods). Writes
``benchmarks/results/compress.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

TARGET_SPEEDUP = 3.0
BUDGET = 0.01

READING = [
    "How to read it:",
    "",
    "- The digits CNN is tiny (53k weights, 8x8 inputs): at batch 1 its latency is mostly the "
    "runtime's fixed cost per call, so only batch 32 shows what a smaller graph saves.",
    "- `int8-dynamic` quantizes activations on every call; for convolutions ONNX Runtime's CPU "
    "kernels (ConvInteger) are slower than float ones, while the calibrated QDQ graph "
    "(`int8-static`, `qat`) runs as QLinearConv.",
    "- `shorten` lowers the longest sequence a text may keep; the runtime already pads each "
    "call only to its longest text (and groups texts of similar length), so it saves time "
    "only on texts longer than the new length.",
    "- `sparse` zeroes weights in a dense graph: only the gzipped size shrinks.",
    "",
]


def _timed(result, repeats: int, data) -> dict[str, dict[str, list[float]]]:
    """Latency at batch 1 and 32 of the original and every variant, ``repeats`` times,
    interleaved (variant after variant, then again) so drift hits them all alike."""
    from tuneserve.evaluation import package_cost
    from tuneserve.runtime import Predictor

    everything = [result.original, *result.variants]
    inputs = data.subset(result_rows(result, data)).X
    predictors = {m.name: Predictor(m.path) for m in everything}
    times: dict[str, dict[str, list[float]]] = {m.name: {"b1": [], "b32": []} for m in everything}
    for _ in range(repeats):
        for m in everything:
            cost = package_cost(predictors[m.name], inputs)
            times[m.name]["b1"].append(cost.latency_ms)
            times[m.name]["b32"].append(cost.batch_latency_ms)
    return times


def result_rows(result, data):
    import numpy as np

    from tuneserve.package import Package

    held = Package.load(result.original.path).manifest.lineage.held_out
    return np.asarray(held.rows) if held is not None else np.arange(len(data))


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def table(result, times) -> list[str]:
    base_b1 = statistics.median(times["original"]["b1"])
    base_b32 = statistics.median(times["original"]["b32"])
    lines = [
        f"| variant | {result.original.metric} [95%] | drop, points [95%] | agrees | size MB | "
        "gzip MB | ms @1, median (range) | speed-up @1 | ms @32, median (range) | speed-up @32 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in [result.original, *result.variants]:
        b1, b32 = times[m.name]["b1"], times[m.name]["b32"]
        chosen = result.chosen is not None and result.chosen.name == m.name
        name = f"**{m.name}** (chosen)" if chosen else m.name
        interval = (
            f" [{100 * m.drop_low:+.1f}, {100 * m.drop_high:+.1f}]"
            if m.drop_low is not None
            else ""
        )
        agrees = "" if m.agreement is None else f"{100 * m.agreement:.1f}%"
        lines.append(
            f"| {name} | {m.value:.4f} [{m.low:.3f}, {m.high:.3f}] | {100 * m.drop:+.2f}{interval} "
            f"| {agrees} | {m.size_mb:.3f} | {m.gzip_mb:.3f} | {_spread(b1)} | "
            f"{base_b1 / statistics.median(b1):.2f}x | {_spread(b32)} | "
            f"{base_b32 / statistics.median(b32):.2f}x |"
        )
    return lines


def verdict(result, times) -> str:
    base = statistics.median(times["original"]["b1"])
    base32 = statistics.median(times["original"]["b32"])
    within = [m for m in result.variants if m.drop <= BUDGET]
    if not within:
        return "no variant within one point of accuracy: target not met"
    best = max(within, key=lambda m: base / statistics.median(times[m.name]["b1"]))
    speed = base / statistics.median(times[best.name]["b1"])
    speed32 = base32 / statistics.median(times[best.name]["b32"])
    met = "met" if speed >= TARGET_SPEEDUP else "not met"
    return (
        f"**fastest variant within one point: {best.name}, {speed:.2f}x lower latency at batch 1 "
        f"({speed32:.2f}x at batch 32), accuracy drop {100 * best.drop:+.2f} points** "
        f"(target >= {TARGET_SPEEDUP:g}x: {met})"
    )


def section(title: str, what: str, result, times, seconds: float) -> list[str]:
    lines = [f"## {title}", "", what, "", *table(result, times), ""]
    lines.append(f"Chosen by the search: {result.why}")
    lines.append("")
    for method, reason in result.not_applicable.items():
        lines.append(f"- not applicable: {method}: {reason}")
    for name, error in result.failed.items():
        lines.append(f"- failed: {name}: {error}")
    lines += ["", f"Search time (building and measuring every variant): {seconds:.0f} s", ""]
    return lines


def searched(args, title: str, what: str, parent, data, folder: Path, epochs: int) -> list[str]:
    """Compress ``parent``, time every variant again, and describe it all as markdown;
    ``what`` may name ``{scored}``, the rows every variant is scored on."""
    import tuneserve

    began = time.perf_counter()
    result = tuneserve.compress(parent, data, folder, epochs=epochs, track=False)
    seconds = time.perf_counter() - began
    times = _timed(result, args.repeats, data)
    described = what.format(scored=result.scored)
    return [*section(title, described, result, times, seconds), verdict(result, times), ""]


def digits(args, tmp: Path) -> list[str]:
    import tuneserve
    from tuneserve.data import load

    data = load("digits")
    parent = tuneserve.train(
        data, tmp / "digits-cnn", backbone="cnn", settings={"epochs": 30}, track=False
    ).package
    what = (
        f"Data: scikit-learn digits (8x8), {len(data)} images; every variant scored on the "
        "CNN's {scored} held-out test images. Teacher: 30 epochs; training-based methods "
        f"fine-tune {args.epochs} epochs."
    )
    folder = tmp / "digits-search"
    return searched(args, "Digits: the built-in CNN", what, parent, data, folder, args.epochs)


def text(args, tmp: Path) -> list[str]:
    from train_strategies import docstring_dataset

    import tuneserve

    data = docstring_dataset(args.per_class)
    parent = tuneserve.train(
        data,
        tmp / "minilm",
        backbone="minilm",
        strategy="full",
        settings={"epochs": args.teacher_epochs},
        track=False,
    ).package
    what = (
        f"Data: {len(data)} real docstring sentences of numpy / pandas / scikit-learn (3 "
        f"classes, at most {args.per_class} per class); every variant scored on the teacher's "
        "{scored} held-out texts. Teacher: strategy full, "
        f"{args.teacher_epochs} epochs, max 128 tokens; training-based methods fine-tune "
        f"{args.text_epochs} epochs."
    )
    title = "Text: MiniLM (all-MiniLM-L6-v2) fine-tuned on docstrings"
    return searched(args, title, what, parent, data, tmp / "minilm-search", args.text_epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("text", "digits"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--text-epochs", type=int, default=3)
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-compress-"))
    sections = []
    if args.only != "text":
        sections += digits(args, tmp)
    if args.only != "digits":
        sections += text(args, tmp)
    rerun = ".venv/bin/python benchmarks/compress.py" + (
        f" --only {args.only}" if args.only else ""
    )
    header = [
        "# Compression: size, latency and accuracy of every variant",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
        f"latency through tuneserve's runtime (ONNX Runtime, CPU), {args.repeats} timings of "
        "each variant, interleaved; median (range). Accuracy with a 95% bootstrap interval; "
        "the drop interval is paired (same resampled rows).",
        f"Rerun: `{rerun} --epochs {args.epochs} --text-epochs {args.text_epochs} "
        f"--teacher-epochs {args.teacher_epochs} --per-class {args.per_class} "
        f"--repeats {args.repeats}`",
        "",
        *READING,
    ]
    out = (
        Path(__file__).parent
        / "results"
        / ("compress.md" if args.only is None else f"compress-{args.only}.md")
    )
    report = "\n".join(header + sections)
    out.write_text(report)
    print(report)
    print(f"packages and reports under {tmp}")


if __name__ == "__main__":
    main()

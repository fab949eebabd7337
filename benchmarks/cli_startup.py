"""How fast does ``tuneserve --help`` answer? Lazy imports versus importing the stack.

Measures, in one run on this machine, the wall time of:
  * ``python -c pass``                       (the interpreter floor)
  * ``tuneserve --help``                      (ours)
  * ``python -c "import torch, onnxruntime, sklearn, pandas"``  (what an eager CLI would pay)
and reports median, min and max over repeated runs, and the ratio eager / ours.

Rerun: ``.venv/bin/python benchmarks/cli_startup.py [--repeats 15]``
Writes ``benchmarks/results/cli_startup.md``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def measure(cmd: list[str], repeats: int) -> list[float]:
    subprocess.run(cmd, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "tuneserve --help": [str(BIN / "tuneserve"), "--help"],
        "eager imports (torch, onnxruntime, sklearn, pandas)": [
            sys.executable,
            "-c",
            "import torch, onnxruntime, sklearn, pandas",
        ],
    }
    results = {name: measure(cmd, args.repeats) for name, cmd in cases.items()}
    med = {name: statistics.median(t) for name, t in results.items()}
    lines = [
        "# CLI start-up: `tuneserve --help`",
        "",
        f"Machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {args.repeats} runs each after one warm-up.",
        f"Rerun: `.venv/bin/python benchmarks/cli_startup.py --repeats {args.repeats}`",
        "",
        "| command | median s | min s | max s |",
        "|---|---:|---:|---:|",
    ]
    for name, times in results.items():
        lines.append(f"| {name} | {med[name]:.3f} | {min(times):.3f} | {max(times):.3f} |")
    eager = med["eager imports (torch, onnxruntime, sklearn, pandas)"]
    ours = med["tuneserve --help"]
    lines += [
        "",
        f"**eager imports / tuneserve --help = {eager / ours:.1f}x** (median); target: "
        f"`--help` under 1 s: {'met' if ours < 1.0 else 'NOT met'} ({ours:.3f} s).",
        "",
    ]
    out = Path(__file__).parent / "results" / "cli_startup.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""bf16 autocast versus fp32 for one training step on this CPU.

Measures, in one run, the median time of a training step (forward, backward, AdamW) with
and without ``torch.autocast("cpu", dtype=torch.bfloat16)`` for
  * MiniLM (all-MiniLM-L6-v2 with a head), batch 16 x 64 tokens: a transformer, what
    ``--precision auto`` turns bf16 on for;
  * the built-in CNN, batch 256 of 8x8 digits.
It reports whether the CPU computes bf16 natively (AVX512-BF16 / AMX), which is when
``--precision auto`` uses bf16 on CPU.

Rerun: ``.venv/bin/python benchmarks/cpu_precision.py [--repeats 15]``
Writes ``benchmarks/results/cpu_precision.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def timed_steps(step: Callable[[bool], None], bf16: bool, repeats: int) -> list[float]:
    step(bf16)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(bf16)
        times.append(time.perf_counter() - start)
    return times


def trainer(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], y: torch.Tensor):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(*inputs)
        torch.nn.functional.cross_entropy(out.float(), y).backward()
        opt.step()
        opt.zero_grad()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    from tuneserve.backbones import SmallCNN, TextClassifier, load_encoder
    from tuneserve.training.loop import cpu_has_native_bf16

    torch.manual_seed(0)
    ids = torch.randint(1000, 5000, (16, 64))
    cases = {
        "MiniLM, 16 x 64 tokens": trainer(
            TextClassifier(load_encoder("minilm"), 3).train(),
            (ids, torch.ones_like(ids)),
            torch.randint(0, 3, (16,)),
        ),
        "CNN, 256 digits 8x8": trainer(
            SmallCNN(10).train(), (torch.rand(256, 1, 8, 8),), torch.randint(0, 10, (256,))
        ),
    }
    lines = [
        "# bf16 autocast vs fp32 training steps on CPU",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; native bf16 (AVX512-BF16 / AMX): "
        f"{'yes' if cpu_has_native_bf16() else 'no'}. {args.repeats} steps each after a "
        "warm-up step; fp32 and bf16 alternate twice to even out drift.",
        f"Rerun: `.venv/bin/python benchmarks/cpu_precision.py --repeats {args.repeats}`",
        "",
        "| model | fp32 median s | fp32 range | bf16 median s | bf16 range | bf16 speed-up |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, step in cases.items():
        fp32, bf16 = [], []
        for _ in range(2):
            fp32 += timed_steps(step, False, args.repeats)
            bf16 += timed_steps(step, True, args.repeats)
        a, b = statistics.median(fp32), statistics.median(bf16)
        lines.append(
            f"| {name} | {a:.4f} | {min(fp32):.4f}-{max(fp32):.4f} | {b:.4f} | "
            f"{min(bf16):.4f}-{max(bf16):.4f} | {a / b:.2f}x |"
        )
    lines += [
        "",
        "`--precision auto` (the default for fine-tuning Hugging Face text and vision models) "
        "uses bf16 on a CPU with native bf16 and fp32 elsewhere; the small CNN gains little "
        "either way and keeps fp32 unless asked.",
        "",
    ]
    out = Path(__file__).parent / "results" / "cpu_precision.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

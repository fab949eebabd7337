"""What a package costs to run on this machine: size on disk and latency through the
runtime (preprocessing and ONNX Runtime, as the server runs it)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuneserve.exceptions import InvalidInputError
from tuneserve.package import Package
from tuneserve.runtime import Predictor

BATCH = 32
MIN_SECONDS = 0.3  # per measured batch size, after the warm-up
MIN_RUNS = 10


@dataclass(frozen=True)
class Cost:
    """Size and latency of a package, measured here.

    Attributes:
        size_mb: Every file of the package, in MB (10^6 bytes).
        latency_ms: Median milliseconds of one call with one input.
        latency_p90_ms: 90th percentile of the same calls.
        batch: The larger batch size measured.
        batch_latency_ms: Median milliseconds of one call with ``batch`` inputs.
        items_per_s: Inputs per second at ``batch``.
    """

    size_mb: float
    latency_ms: float
    latency_p90_ms: float
    batch: int
    batch_latency_ms: float
    items_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _times(predictor: Predictor, items: list[Any]) -> list[float]:
    for _ in range(3):  # warm-up: first calls allocate
        predictor.run(items)
    out: list[float] = []
    began = time.perf_counter()
    while len(out) < MIN_RUNS or time.perf_counter() - began < MIN_SECONDS:
        start = time.perf_counter()
        predictor.run(items)
        out.append((time.perf_counter() - start) * 1000)
    return out


def package_size_mb(package: Package) -> float:
    return sum(p.stat().st_size for p in Path(package.path).rglob("*") if p.is_file()) / 1e6


def package_cost(
    package: str | Path | Package | Predictor, inputs: Sequence[Any], batch: int = BATCH
) -> Cost:
    """Measure ``package`` on real ``inputs`` (rows, images or texts it accepts): one
    input per call, then ``batch`` inputs per call (cycling through ``inputs``)."""
    if len(inputs) == 0:
        raise InvalidInputError("package_cost needs at least one input to time the package on")
    if batch < 1:
        raise InvalidInputError(f"batch must be >= 1, got {batch}")
    predictor = package if isinstance(package, Predictor) else Predictor(package)
    rows = inputs.to_dict("records") if hasattr(inputs, "to_dict") else list(inputs)
    single = _times(predictor, rows[:1])
    many = _times(predictor, [rows[i % len(rows)] for i in range(batch)])
    batch_ms = statistics.median(many)
    return Cost(
        size_mb=round(package_size_mb(predictor.package), 3),
        latency_ms=statistics.median(single),
        latency_p90_ms=statistics.quantiles(single, n=10)[-1],
        batch=batch,
        batch_latency_ms=batch_ms,
        items_per_s=batch * 1000 / batch_ms,
    )

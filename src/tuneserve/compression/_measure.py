"""Measure a variant through the runtime, as it would be served: the headline metric on
the held-out rows with a bootstrap interval (and the drop from the uncompressed package,
paired on the same resamples), size on disk and gzipped, latency at batch 1 and 32."""

from __future__ import annotations

import gzip
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tuneserve.evaluation import package_cost
from tuneserve.package import Package
from tuneserve.runtime import Predictor

#: The headline metric per task: what the accuracy budget is on.
HEADLINE = {"classification": "accuracy", "regression": "r2"}


@dataclass
class Measurement:
    """One variant, measured here.

    Attributes:
        name: The variant (``int8-dynamic``, ``distill+int8-static-minmax``; ``original``
            for the package compressed).
        path: Its package folder.
        package_id: Its id.
        metric: ``accuracy`` (classification) or ``r2`` (regression).
        value, low, high: The metric on the held-out rows, with a 95% bootstrap interval.
        drop, drop_low, drop_high: The original's metric minus this one's, with a paired
            95% bootstrap interval (the same resampled rows for both).
        agreement: Share of rows where the variant predicts the original's label
            (classification).
        size_mb: The files the package serves with: the graph and the preprocessing assets
            (not ``extras/``, the torch weights kept for further training); gzip_mb:
            model.onnx gzipped (what unstructured sparsity shrinks).
        latency_ms, latency_p90_ms: One input per call (median, 90th percentile).
        batch_latency_ms, items_per_s: 32 inputs per call.
        parameters: Weights in the graph (initializer elements).
        steps: The methods applied, in order.
        details: What the methods recorded (sparsity reached, nodes left in float, ...).
    """

    name: str
    path: str
    package_id: str
    metric: str
    value: float
    low: float | None
    high: float | None
    drop: float
    drop_low: float | None
    drop_high: float | None
    agreement: float | None
    size_mb: float
    gzip_mb: float
    latency_ms: float
    latency_p90_ms: float
    batch_latency_ms: float
    items_per_s: float
    parameters: int
    steps: list[str]
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _score(task: str, y: np.ndarray, output: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The headline metric on each resample (``rows``: one resample of indices per row)."""
    if task == "classification":
        correct = (np.asarray(output).argmax(1) == y).astype(np.float64)
        return correct[rows].mean(axis=1)
    pred = np.asarray(output, dtype=np.float64).reshape(len(y))
    truth = y[rows]
    residual = ((truth - pred[rows]) ** 2).sum(axis=1)
    total = ((truth - truth.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    return 1.0 - residual / np.where(total > 0, total, 1.0)


def _interval(values: np.ndarray) -> tuple[float | None, float | None]:
    if len(values) < 2:
        return None, None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def served_size_mb(package: Package) -> float:
    """Megabytes of the graph and assets: what a server loads (``extras/`` is not)."""
    files = [name for name in package.manifest.files if not name.startswith("extras/")]
    return sum((package.path / name).stat().st_size for name in files) / 1e6


def _parameters(package: Package) -> int:
    import onnx

    model = onnx.load(str(package.graph_path), load_external_data=False)
    return int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))


def measure(
    name: str,
    package: Package,
    inputs: Any,
    y: np.ndarray,
    *,
    baseline: np.ndarray | None = None,
    labels: list[str] | None = None,
    rounds: int = 1000,
    seed: int = 0,
    batch: int = 32,
) -> tuple[Measurement, np.ndarray]:
    """Score ``package`` on the held-out ``inputs`` and ``y`` (label indices in the
    package's order, or values) and time it; ``baseline`` is the original's output on the
    same rows (the drop and agreement are measured against it), ``labels`` the original's
    class order (a variant that orders its classes otherwise is read in that order). Returns
    the measurement and the package's output."""
    from tuneserve.evaluation import in_label_order

    predictor = Predictor(package)
    output = predictor.run(inputs)
    task = package.manifest.task
    own = package.manifest.label_names
    if task == "classification" and labels is not None and own is not None and own != labels:
        output = in_label_order(output, own, labels)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(y), size=(max(rounds, 0), len(y)))
    full = np.arange(len(y))[None, :]
    value = float(_score(task, y, output, full)[0])
    low, high = _interval(_score(task, y, output, rows)) if rounds > 0 else (None, None)
    drop, drop_low, drop_high, agreement = 0.0, None, None, None
    if baseline is not None:
        drop = float(_score(task, y, baseline, full)[0]) - value
        if rounds > 0:
            drop_low, drop_high = _interval(
                _score(task, y, baseline, rows) - _score(task, y, output, rows)
            )
        if task == "classification":
            agreement = float(np.mean(output.argmax(1) == np.asarray(baseline).argmax(1)))
    cost = package_cost(predictor, inputs, batch=batch)
    compression = package.manifest.lineage.compression
    measurement = Measurement(
        name=name,
        path=str(package.path),
        package_id=package.id,
        metric=HEADLINE[task],
        value=value,
        low=low,
        high=high,
        drop=drop,
        drop_low=drop_low,
        drop_high=drop_high,
        agreement=agreement,
        size_mb=round(served_size_mb(package), 4),
        gzip_mb=round(len(gzip.compress(package.graph_path.read_bytes(), 6)) / 1e6, 3),
        latency_ms=cost.latency_ms,
        latency_p90_ms=cost.latency_p90_ms,
        batch_latency_ms=cost.batch_latency_ms,
        items_per_s=cost.items_per_s,
        parameters=_parameters(package),
        steps=list(compression.steps) if compression else [],
        details=dict(compression.details) if compression else {},
    )
    return measurement, output

"""Time-to-accuracy of the text strategies, and what the probe's feature cache saves.

Data, assembled offline from real text: the first sentence of the docstrings of public
functions and classes in numpy, pandas and scikit-learn, labeled by library (3 classes).

Measures in one run on this machine:
  * per strategy (probe, partial, full, lora) on MiniLM: seconds per epoch, seconds until
    validation accuracy first reaches the target, best validation and test accuracy;
  * the probe per epoch with the feature cache (head only) versus without it (the frozen
    encoder run over the training texts every epoch): median of repeats and the ratio;
  * the digits CNN: seconds to reach the target validation accuracy.

Rerun: ``.venv/bin/python benchmarks/train_strategies.py [--per-class 80] [--repeats 3]``
Writes ``benchmarks/results/train_strategies.md``.
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def docstring_dataset(per_class: int, seed: int = 0):
    import numpy
    import pandas
    import sklearn.cluster
    import sklearn.linear_model
    import sklearn.metrics
    import sklearn.preprocessing

    from tuneserve.data import Dataset

    sources = {
        "numpy": [numpy, numpy.linalg, numpy.random, numpy.fft],
        "pandas": [pandas, pandas.api.types],
        "sklearn": [sklearn.metrics, sklearn.linear_model, sklearn.preprocessing, sklearn.cluster],
    }
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for code, (_lib, modules) in enumerate(sources.items()):
        found = set()
        for module in modules:
            for name in dir(module):
                obj = getattr(module, name, None)
                doc = inspect.getdoc(obj) if not name.startswith("_") and callable(obj) else None
                first = doc.strip().split("\n\n")[0].replace("\n", " ") if doc else ""
                if 20 <= len(first) <= 300:
                    found.add(first)
        chosen = rng.permutation(sorted(found))[:per_class]
        texts += list(chosen)
        labels += [code] * len(chosen)
    return Dataset(
        name="docstrings",
        modality="text",
        task="classification",
        X=texts,
        y=np.array(labels),
        label_names=tuple(sources),
        source="python docstrings",
    )


def time_to(history: list[dict[str, float]], target: float) -> float | None:
    elapsed = 0.0
    for record in history:
        elapsed += record["epoch_seconds"]
        if record["val_accuracy"] >= target:
            return elapsed
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.85)
    args = parser.parse_args()

    from tuneserve.backbones import TextClassifier, load_encoder
    from tuneserve.data import load, split
    from tuneserve.training import CNNConfig, FeatureCache, default_config, train_cnn
    from tuneserve.training.encoder import embed_all
    from tuneserve.training.text import train_text

    data = docstring_dataset(args.per_class)
    parts = split(data, seed=0)
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for strategy in ("probe", "partial", "full", "lora"):
        config = default_config("minilm", strategy, patience=None)
        start = time.perf_counter()
        trained = train_text(
            parts.train,
            parts.validation,
            strategy=strategy,
            config=config,
            max_length=64,
            cache=FeatureCache(tmp / strategy),
        )
        total = time.perf_counter() - start
        test_acc = float(np.mean(trained.predict_proba(parts.test.X).argmax(1) == parts.test.y))
        per_epoch = statistics.median(r["epoch_seconds"] for r in trained.history)
        reach = time_to(trained.history, args.target)
        rows.append(
            (
                strategy,
                config.epochs,
                per_epoch,
                reach,
                total,
                max(r["val_accuracy"] for r in trained.history),
                test_acc,
            )
        )

    # probe per epoch: cached features (head only) vs the frozen encoder every epoch
    pre_cfg = default_config("minilm", "probe")
    from tuneserve.backbones import resolve_text_model
    from tuneserve.preprocessing import TextPreprocessor

    pre = TextPreprocessor(resolve_text_model("minilm"), max_length=64)
    model = TextClassifier(load_encoder("minilm"), 3)
    feed = pre.transform(parts.train.X)
    uncached, cached = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        feats = torch.from_numpy(embed_all(model, feed, "train"))
        encode = time.perf_counter() - t
        head = torch.nn.Linear(feats.shape[1], 3)
        opt = torch.optim.AdamW(head.parameters(), lr=pre_cfg.learning_rate)
        y = torch.from_numpy(parts.train.y)
        t = time.perf_counter()
        for idx in torch.randperm(len(y)).split(pre_cfg.batch_size):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(head(feats[idx]), y[idx]).backward()
            opt.step()
        head_epoch = time.perf_counter() - t
        cached.append(head_epoch)
        uncached.append(encode + head_epoch)

    digits = split(load("digits"), seed=0)
    cnn = train_cnn(digits.train, digits.validation, CNNConfig(epochs=30, patience=None))
    cnn_reach = time_to(cnn.history, 0.95)

    fmt = lambda v: "not reached" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [
        "# Training strategies: time to accuracy, and the probe's feature cache",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. Data: {len(data)} real docstring sentences from "
        f"numpy / pandas / scikit-learn ({args.per_class} per class), split "
        f"{len(parts.train)}/{len(parts.validation)}/{len(parts.test)}; MiniLM, max 64 tokens.",
        f"Rerun: `.venv/bin/python benchmarks/train_strategies.py --per-class {args.per_class} "
        f"--repeats {args.repeats}`",
        "",
        f"| strategy | epochs | s/epoch (median) | s to val acc >= {args.target} | total s | "
        "best val acc | test acc |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s, ep, pe, reach, total, val, test in rows:
        lines.append(
            f"| {s} | {ep} | {pe:.3f} | {fmt(reach)} | {total:.1f} | {val:.3f} | {test:.3f} |"
        )
    ratio = statistics.median(uncached) / statistics.median(cached)
    lines += [
        "",
        f"Probe, one epoch over the training texts ({args.repeats} repeats, median and range):",
        "",
        "| probe epoch | median s | min s | max s |",
        "|---|---:|---:|---:|",
        f"| without cache (encoder + head) | {statistics.median(uncached):.3f} | "
        f"{min(uncached):.3f} | {max(uncached):.3f} |",
        f"| with cache (head only) | {statistics.median(cached):.4f} | {min(cached):.4f} | "
        f"{max(cached):.4f} |",
        "",
        f"**cached probe epoch speed-up: {ratio:.0f}x** (target >= 20x: "
        f"{'met' if ratio >= 20 else 'NOT met'}). Total time includes loading the encoder "
        "and, for the probe, computing the features once.",
        "",
        f"Digits CNN (30 epochs, cosine, augmentation): {fmt(cnn_reach)} s to validation "
        f"accuracy >= 0.95; best {max(r['val_accuracy'] for r in cnn.history):.3f}.",
        "",
    ]
    out = Path(__file__).parent / "results" / "train_strategies.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Time-to-accuracy of the text strategies, and what the probe's feature cache saves.

Data, assembled offline from real text: the first sentence of the docstrings of public
functions and classes in numpy, pandas and scikit-learn, labeled by library (3 classes).

Measures in one run on this machine:
  * per strategy (probe, partial, full, lora) on MiniLM: seconds per epoch, seconds until
    validation accuracy first reaches the target, best validation and test accuracy;
  * the probe per epoch with the feature cache (head only) versus without it (the frozen
    encoder run over the training texts every epoch): median of repeats and the ratio;
  * digits: a small ViT is pretrained without labels (``tuneserve pretrain``, contrastive)
    on the training images, then each strategy fine-tunes it (``--from``); the same table
    and cache ratio, next to the built-in CNN trained from scratch.

Rerun: ``.venv/bin/python benchmarks/train_strategies.py [--per-class 80] [--repeats 3]
[--only text|digits]``
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
    parser.add_argument("--digits-target", type=float, default=0.9)
    parser.add_argument("--only", choices=("text", "digits"))
    args = parser.parse_args()
    sections = []
    if args.only != "digits":
        sections.append(text_section(args))
    if args.only != "text":
        sections.append(digits_section(args))
    header = [
        "# Training strategies: time to accuracy, and the probe's feature cache",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads.",
        f"Rerun: `.venv/bin/python benchmarks/train_strategies.py --per-class {args.per_class} "
        f"--repeats {args.repeats}`",
        "",
    ]
    out = Path(__file__).parent / "results" / "train_strategies.md"
    text = "\n".join(header + [line for section in sections for line in section])
    out.write_text(text)
    print(text)


def fmt(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f}"


def strategy_table(rows: list[tuple], target: float) -> list[str]:
    lines = [
        f"| strategy | epochs | s/epoch (median) | s to val acc >= {target} | total s | "
        "best val acc | test acc |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s, ep, pe, reach, total, val, test in rows:
        lines.append(
            f"| {s} | {ep} | {pe:.3f} | {fmt(reach)} | {total:.1f} | {val:.3f} | {test:.3f} |"
        )
    return lines


def cache_table(uncached: list[float], cached: list[float], what: str) -> list[str]:
    ratio = statistics.median(uncached) / statistics.median(cached)
    return [
        "",
        f"Probe, one epoch over the training {what} ({len(cached)} repeats, median and range):",
        "",
        "| probe epoch | median s | min s | max s |",
        "|---|---:|---:|---:|",
        f"| without cache (encoder + head) | {statistics.median(uncached):.3f} | "
        f"{min(uncached):.3f} | {max(uncached):.3f} |",
        f"| with cache (head only) | {statistics.median(cached):.4f} | {min(cached):.4f} | "
        f"{max(cached):.4f} |",
        "",
        f"**cached probe epoch speed-up: {ratio:.0f}x** (target >= 20x: "
        f"{'met' if ratio >= 20 else 'NOT met'}).",
    ]


def probe_epochs(model, feed, y, classes: int, repeats: int, lr: float, batch: int):
    """Per-epoch seconds of a probe: encoder + head (no cache) and head only (cache)."""
    from tuneserve.training.encoder import embed_all

    uncached, cached = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        feats = torch.from_numpy(embed_all(model, feed, "train"))
        encode = time.perf_counter() - t
        head = torch.nn.Linear(feats.shape[1], classes)
        opt = torch.optim.AdamW(head.parameters(), lr=lr)
        t = time.perf_counter()
        for idx in torch.randperm(len(y)).split(batch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(head(feats[idx]), y[idx]).backward()
            opt.step()
        head_epoch = time.perf_counter() - t
        cached.append(head_epoch)
        uncached.append(encode + head_epoch)
    return uncached, cached


def run_strategies(train_fn, parts, configs, target: float) -> list[tuple]:
    rows = []
    for strategy, config in configs.items():
        start = time.perf_counter()
        trained = train_fn(strategy, config)
        total = time.perf_counter() - start
        test_acc = float(np.mean(trained.predict_proba(parts.test.X).argmax(1) == parts.test.y))
        rows.append(
            (
                strategy,
                config.epochs,
                statistics.median(r["epoch_seconds"] for r in trained.history),
                time_to(trained.history, target),
                total,
                max(r["val_accuracy"] for r in trained.history),
                test_acc,
            )
        )
    return rows


def text_section(args: argparse.Namespace) -> list[str]:
    from tuneserve.backbones import TextClassifier, load_encoder, resolve_text_model
    from tuneserve.data import split
    from tuneserve.preprocessing import TextPreprocessor
    from tuneserve.training import FeatureCache, default_config
    from tuneserve.training.text import train_text

    data = docstring_dataset(args.per_class)
    parts = split(data, seed=0)
    tmp = Path(tempfile.mkdtemp())
    configs = {
        s: default_config("minilm", s, patience=None) for s in ("probe", "partial", "full", "lora")
    }
    rows = run_strategies(
        lambda strategy, config: train_text(
            parts.train,
            parts.validation,
            strategy=strategy,
            config=config,
            max_length=64,
            cache=FeatureCache(tmp / strategy),
        ),
        parts,
        configs,
        args.target,
    )
    pre = TextPreprocessor(resolve_text_model("minilm"), max_length=64)
    model = TextClassifier(load_encoder("minilm"), 3)
    probe = configs["probe"]
    uncached, cached = probe_epochs(
        model,
        pre.transform(parts.train.X),
        torch.from_numpy(parts.train.y),
        3,
        args.repeats,
        probe.learning_rate,
        probe.batch_size,
    )
    return [
        "## Text: MiniLM",
        "",
        f"Data: {len(data)} real docstring sentences from numpy / pandas / scikit-learn "
        f"({args.per_class} per class), split {len(parts.train)}/{len(parts.validation)}/"
        f"{len(parts.test)}; max 64 tokens. Total time includes loading the encoder and, for "
        "the probe, computing the features once.",
        "",
        *strategy_table(rows, args.target),
        *cache_table(uncached, cached, "texts"),
        "",
    ]


PRETRAIN_EPOCHS = 30


def _small_vit(folder: Path) -> Path:
    """A small ViT for 16x16 images, randomly initialized (no download), saved as a
    Hugging Face folder with its image processor config."""
    import json

    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=256,
        image_size=16,
        patch_size=4,
    )
    ViTModel(config).save_pretrained(folder)
    processor = {
        "image_processor_type": "ViTImageProcessor",
        "size": {"height": 16, "width": 16},
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def digits_section(args: argparse.Namespace) -> list[str]:
    from tuneserve.backbones import VisionClassifier
    from tuneserve.data import Unlabeled, load, split
    from tuneserve.package import Package
    from tuneserve.training import (
        CNNConfig,
        FeatureCache,
        default_config,
        pretrain,
        pretrain_defaults,
        train_cnn,
    )
    from tuneserve.training.encoder import encoder_from_package
    from tuneserve.training.vision import train_vision

    tmp = Path(tempfile.mkdtemp())
    parts = split(load("digits"), seed=0)
    vit = _small_vit(tmp / "vit")
    unlabeled = Unlabeled("digits-train", "image", list(parts.train.X), "digits")
    start = time.perf_counter()
    encoder = pretrain(
        unlabeled,
        tmp / "enc",
        backbone=str(vit),
        config=pretrain_defaults("vision", epochs=PRETRAIN_EPOCHS),
    )
    pretrain_s = time.perf_counter() - start
    source = Package.load(encoder.package.path)
    configs = {
        s: default_config(str(vit), s, modality="image", patience=None)
        for s in ("probe", "partial", "full", "lora")
    }
    rows = run_strategies(
        lambda strategy, config: train_vision(
            parts.train,
            parts.validation,
            backbone=str(vit),
            strategy=strategy,
            config=config,
            cache=FeatureCache(tmp / f"cache-{strategy}"),
            init=source,
        ),
        parts,
        configs,
        args.digits_target,
    )
    random_probe = run_strategies(
        lambda strategy, config: train_vision(
            parts.train,
            parts.validation,
            backbone=str(vit),
            strategy=strategy,
            config=config,
            cache=FeatureCache(tmp / "cache-random"),
        ),
        parts,
        {"probe": configs["probe"]},
        args.digits_target,
    )
    rows.append(("probe, random ViT (no pretraining)", *random_probe[0][1:]))
    model, _ = encoder_from_package(source, VisionClassifier, lambda _: None, "vision-model")
    probe = configs["probe"]
    uncached, cached = probe_epochs(
        model,
        source_preprocessor(source).transform(parts.train.X),
        torch.from_numpy(parts.train.y),
        10,
        args.repeats,
        probe.learning_rate,
        probe.batch_size,
    )
    start = time.perf_counter()
    cnn = train_cnn(parts.train, parts.validation, CNNConfig(epochs=30, patience=None))
    cnn_s = time.perf_counter() - start
    cnn_test = float(np.mean(cnn.predict_proba(parts.test.X).argmax(1) == parts.test.y))
    return [
        "## Digits: a small ViT pretrained without labels, then each strategy",
        "",
        f"Data: digits, split {len(parts.train)}/{len(parts.validation)}/{len(parts.test)}. "
        "ViT: 6 blocks of width 128, 16x16 input, patches of 4, random init; pretrained by "
        f"`tuneserve pretrain` (contrastive, {PRETRAIN_EPOCHS} epochs, on the training images "
        f"without their labels) in {pretrain_s:.1f} s. Each strategy then starts from that package "
        "(`train --from`); the last row is the probe on the untrained ViT.",
        "",
        *strategy_table(rows, args.digits_target),
        *cache_table(uncached, cached, "images"),
        "",
        f"Baseline: the built-in CNN from scratch, 30 epochs with augmentation: "
        f"{fmt(time_to(cnn.history, args.digits_target))} s to validation accuracy >= "
        f"{args.digits_target}, best {max(r['val_accuracy'] for r in cnn.history):.3f}, "
        f"test {cnn_test:.3f}, {cnn_s:.1f} s in all.",
        "",
    ]


def source_preprocessor(source):
    from tuneserve.preprocessing import preprocessor_from_spec

    return preprocessor_from_spec(source.manifest.preprocessing, source.assets_path)


if __name__ == "__main__":
    main()

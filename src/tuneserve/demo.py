"""The built-in demo: the whole pipeline so far, on real data, offline.

Trains the built-in CNN on scikit-learn's digits, writes a package, predicts test images
saved as PNG files through the torch-free runtime, and reports test accuracy; then does the
same for logistic regression on breast_cancer; shows transfer learning (digits 0-4 ->
5-9 from 10 images per class); registers the fine-tuned package in the MLflow registry and
promotes it to champion; compresses the digits CNN (quantization, pruning, distillation,
QAT), prints the trade-off and registers the chosen variant; serves the champion over HTTP
and calls it (simple JSON and the Open Inference Protocol).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rich.console import Console

    from tuneserve.data import Dataset
    from tuneserve.lineage import Lineage
    from tuneserve.training import TrainedModel


@dataclass
class DemoResult:
    """What the demo produced, for callers and tests."""

    cnn_package: Path
    cnn_test_accuracy: float
    cnn_parity: float
    sample_dir: Path
    tabular_package: Path
    tabular_test_accuracy: float
    transfer: dict[str, float]
    registered: str
    compressed: str | None = None


def _save_samples(images: list[np.ndarray], labels: list[str], folder: Path) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        path = folder / f"test{i:02d}_true{label}.png"
        pixels = np.round(img[:, :, 0] * 255).astype(np.uint8)  # (8, 8) grayscale
        Image.fromarray(pixels, mode="L").save(path)
        paths.append(path)
    return paths


def run_demo(out: Path | None = None, epochs: int = 30, seed: int = 0) -> DemoResult:
    """Run the demo, writing packages under ``out`` (default: ``$TUNESERVE_HOME/demo``);
    print what happens on stdout."""
    from tuneserve.home import tuneserve_home

    out = Path(out).expanduser().resolve() if out is not None else tuneserve_home() / "demo"
    from rich.console import Console
    from rich.table import Table

    from tuneserve.data import load, split
    from tuneserve.runtime import Predictor
    from tuneserve.training import CNNConfig, train_cnn, train_logistic_regression

    con = Console()
    con.rule("[bold]1. data: digits (scikit-learn, 8x8 grayscale images)")
    digits = load("digits")
    parts = split(digits, validation=0.1, test=0.2, seed=seed)
    con.print(
        f"{len(digits)} images, {digits.num_classes} classes, fingerprint "
        f"{digits.fingerprint[:23]}...; split {len(parts.train)} train / "
        f"{len(parts.validation)} validation / {len(parts.test)} test (stratified, seed {seed})"
    )

    con.rule("[bold]2. train the built-in CNN")
    trained = train_cnn(parts.train, parts.validation, CNNConfig(epochs=epochs, seed=seed))
    best = trained.best_epoch
    con.print(
        f"best epoch {best} of {len(trained.history)}: validation accuracy "
        f"{trained.metrics['val_accuracy']:.4f}"
    )
    memory_probs = trained.predict_proba(parts.test.X)
    memory_acc = float(np.mean(memory_probs.argmax(1) == parts.test.y))

    con.rule("[bold]3. export a model package (ONNX + manifest + checksums)")
    cnn_dir = out / "digits-cnn"
    package = trained.export(
        cnn_dir,
        parts.test.X,
        name="digits-cnn",
        metrics={"test_accuracy": memory_acc},
        lineage=_with_held_out(trained, digits, seed),
        torchscript=True,
        overwrite=True,
    )
    con.print(
        f"wrote {package.path} ({package.id}, {package.size_bytes() / 1e3:.0f} kB); ONNX vs "
        f"torch max |diff| on the test split: {package.manifest.graph.parity_max_abs_diff:.2e}"
    )

    con.rule("[bold]4. predict with the runtime (ONNX Runtime, no torch)")
    predictor = Predictor(package)
    labels = digits.label_names or ()
    sample_dir = out / "digit-samples"
    samples = _save_samples(parts.test.X[:10], [labels[c] for c in parts.test.y[:10]], sample_dir)
    table = Table("file", "true", "predicted", "confidence")
    for path, code, pred in zip(
        samples, parts.test.y[:10], predictor.predict(samples), strict=True
    ):
        assert pred.label is not None and pred.probabilities is not None
        ok = "" if pred.label == labels[code] else "  [red]x[/red]"
        table.add_row(
            path.name, labels[code], pred.label + ok, f"{pred.probabilities[pred.label]:.3f}"
        )
    con.print(table)
    runtime_probs = predictor.predict_proba(parts.test.X)
    test_acc = float(np.mean(runtime_probs.argmax(1) == parts.test.y))
    parity = float(np.max(np.abs(runtime_probs - memory_probs)))
    con.print(
        f"[bold green]digits CNN test accuracy (runtime): {test_acc:.4f}[/bold green] on "
        f"{len(parts.test)} held-out images; in-memory model: {memory_acc:.4f}; "
        f"max |probability diff| {parity:.2e}"
    )

    con.rule("[bold]5. a table: logistic regression on breast_cancer")
    cancer = load("breast_cancer")
    cparts = split(cancer, seed=seed)
    logreg = train_logistic_regression(cparts.train, cparts.validation)
    tab_pkg = logreg.export(
        out / "breast-cancer-logreg", cparts.test.X, name="breast-cancer-logreg", overwrite=True
    )
    tab_probs = Predictor(tab_pkg).predict_proba(cparts.test.X)
    tab_acc = float(np.mean(tab_probs.argmax(1) == cparts.test.y))
    con.print(f"[bold green]breast_cancer test accuracy (runtime): {tab_acc:.4f}[/bold green]")

    con.rule("[bold]6. transfer learning: digits 0-4 -> 5-9 with 10 labeled images per class")
    transfer, transfer_test = _transfer(out, epochs, seed)
    con.print(
        f"source CNN on digits 0-4: validation accuracy {transfer['source_val_accuracy']:.4f}\n"
        f"target 5-9, trained on {transfer['shots']} images per class, tested on "
        f"{transfer['test_rows']} held-out images:\n"
        f"  [bold]fine-tuned from the 0-4 CNN: {transfer['transfer_accuracy']:.4f}[/bold]\n"
        f"  [bold]same CNN from scratch:       {transfer['scratch_accuracy']:.4f}[/bold]\n"
        f"  transfer minus scratch: "
        f"{100 * (transfer['transfer_accuracy'] - transfer['scratch_accuracy']):+.1f} points"
    )

    con.rule("[bold]7. registry (MLflow): register the fine-tuned package, promote it")
    from tuneserve.registry import Registry

    registry = Registry()
    done = registry.register(out / "digits-5-9-finetuned", "digits-5-9")
    version = done.version.version
    registry.promote("digits-5-9", version, note="tuneserve demo")
    resolved = registry.resolve("models:/digits-5-9@champion")
    served = float(
        np.mean(Predictor(resolved).predict_proba(transfer_test.X).argmax(1) == transfer_test.y)
    )
    con.print(
        f"{'registered' if done.created else 'already registered as'} digits-5-9/{version} "
        "and promoted to champion"
    )
    con.print(f"store: {registry.store.uri}")
    con.print(f"models:/digits-5-9@champion -> {resolved} (checksums verified)")
    con.print(f"[bold]champion test accuracy (runtime): {served:.4f}[/bold]")

    con.rule("[bold]8. compress the digits CNN, register the chosen variant")
    compressed = _compress(con, package.path, out, digits, epochs, seed)

    con.rule("[bold]9. serving: the champion over HTTP (simple JSON and OIP) and gRPC")
    from tuneserve.demo_serve import serve_and_call

    serve_and_call(con, out, "digits-5-9", transfer_test.X[0])

    con.rule("[bold]10. a message queue: a worker answers from a Redis Stream")
    from tuneserve.demo_queue import queue_round_trip

    queue_round_trip(con, out, "digits-5-9", out / "digit-for-the-server.png")

    con.rule("[bold]next")
    con.print(f"tuneserve package show {cnn_dir}")
    con.print(f"open {out / 'digits-cnn-compressed' / 'report.html'}   # the compression report")
    con.print(f"tuneserve predict {cnn_dir} {sample_dir}")
    con.print("tuneserve data show digits")
    con.print("tuneserve registry show digits-5-9@champion    # tuneserve ui: the MLflow UI")
    return DemoResult(
        cnn_package=package.path,
        cnn_test_accuracy=test_acc,
        cnn_parity=parity,
        sample_dir=sample_dir,
        tabular_package=tab_pkg.path,
        tabular_test_accuracy=tab_acc,
        transfer=transfer,
        registered=f"digits-5-9/{version}",
        compressed=compressed,
    )


def _with_held_out(trained: TrainedModel, digits: Dataset, seed: int) -> Lineage:
    """The CNN's lineage with the split it was trained on and the rows it never saw, so that
    ``compress`` scores every variant on exactly those rows."""
    from tuneserve.data import split_indices
    from tuneserve.lineage import HeldOut, Split

    test_rows = split_indices(digits, validation=0.1, test=0.2, seed=seed)[2]
    return trained.lineage.model_copy(
        update={
            "data_fingerprint": digits.fingerprint,
            "split": Split(seed=seed, validation=0.1, test=0.2),
            "held_out": HeldOut(
                data_fingerprint=digits.fingerprint,
                rows=[int(i) for i in test_rows],
                what=f"the held-out test split (20% of rows, seed {seed})",
            ),
        }
    )


def _compress(
    con: Console, package: Path, out: Path, digits: Dataset, epochs: int, seed: int
) -> str | None:
    """Compress the digits CNN within one point of accuracy; print the trade-off and
    register the chosen variant as ``digits``."""
    from tuneserve.compression import CompressionError, compress, print_trade_off
    from tuneserve.registry import Registry

    try:
        result = compress(
            package,
            digits,
            out / "digits-cnn-compressed",
            max_accuracy_drop=0.01,
            epochs=max(3, epochs // 3),
            seed=seed,
            overwrite=True,
        )
    except CompressionError as exc:
        con.print(f"[yellow]{exc}[/yellow]")
        return None
    print_trade_off(con, result)
    con.print(f"[bold]chosen {result.why}[/bold]", soft_wrap=True)
    assert result.package is not None
    done = Registry().register(result.package, "digits", "the compressed digits CNN")
    con.print(
        f"{'registered' if done.created else 'already registered as'} "
        f"digits/{done.version.version} (report: {result.report})"
    )
    return f"digits/{done.version.version}"


def _transfer(
    out: Path, epochs: int, seed: int, shots: int = 10
) -> tuple[dict[str, float], Dataset]:
    """Pretrain on digits 0-4, fine-tune on 5-9 from ``shots`` images per class, and train
    the same CNN from scratch on the same images; both are scored on the same test images.
    The fine-tuned model is written to ``out/digits-5-9-finetuned``."""
    from tuneserve.data import load
    from tuneserve.training import CNNConfig, train, train_cnn

    digits = load("digits")
    source = train(
        digits.select_classes(["0", "1", "2", "3", "4"]),
        out / "digits-0-4",
        config=CNNConfig(epochs=epochs, seed=seed),
        seed=seed,
        overwrite=True,
    )
    target = digits.select_classes(["5", "6", "7", "8", "9"])
    few, rest = target.sample_per_class(shots, seed=seed)
    validation, test = rest.sample_per_class(shots, seed=seed + 1)
    config = CNNConfig(epochs=max(epochs, 40), patience=15, batch_size=16, seed=seed)
    tuned = train_cnn(few, validation, config, init=source.package)
    tuned.export(out / "digits-5-9-finetuned", test.X, name="digits-5-9", overwrite=True)
    scratch = train_cnn(few, validation, config)

    def accuracy(model: TrainedModel) -> float:
        return float(np.mean(model.predict_proba(test.X).argmax(1) == test.y))

    scores = {
        "shots": shots,
        "test_rows": len(test),
        "source_val_accuracy": source.trained.metrics["val_accuracy"],
        "transfer_accuracy": accuracy(tuned),
        "scratch_accuracy": accuracy(scratch),
    }
    return scores, test

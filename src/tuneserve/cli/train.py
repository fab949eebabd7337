"""``tuneserve train DATA``: turn a pretrained model into a classifier for your data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._output import console, print_json


def train(
    data: str = typer.Argument(..., help="Built-in name, image folder, or CSV/TSV/Parquet/JSONL."),
    out: Path = typer.Option(..., "--out", "-o", help="Package directory to write."),
    backbone: str | None = typer.Option(
        None,
        "--backbone",
        "-b",
        help="cnn | mlp | logreg | linear-svm | sgd | random-forest | hist-gradient-boosting | "
        "minilm | a Hugging Face id or path (text encoder, or vision model for images). "
        "Default per data type.",
    ),
    strategy: str | None = typer.Option(
        None, "--strategy", "-s", help="probe | partial | full | lora (text); default per backbone."
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Most epochs."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    learning_rate: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    optimizer: str | None = typer.Option(None, "--optimizer", help="adamw | sgd"),
    schedule: str | None = typer.Option(None, "--schedule", help="constant | cosine | step"),
    warmup: float | None = typer.Option(None, "--warmup-epochs", help="Linear warm-up epochs."),
    accumulate: int | None = typer.Option(None, "--grad-accumulation", min=1),
    clip: float | None = typer.Option(
        None, "--clip-grad-norm", help="Clip gradients to this norm."
    ),
    class_weights: bool = typer.Option(False, "--class-weights", help="Reweight rare classes."),
    precision: str | None = typer.Option(None, "--precision", help="off | auto | bf16 | fp16"),
    patience: int | None = typer.Option(None, "--patience", min=1, help="Early-stopping patience."),
    unfreeze: int = typer.Option(2, "--unfreeze", min=1, help="Blocks trained by 'partial'."),
    layer_decay: float | None = typer.Option(
        None, "--layer-decay", help="Layer-wise LR decay per block below the head (e.g. 0.8)."
    ),
    max_length: int = typer.Option(128, "--max-length", min=8, help="Text: tokens kept."),
    seed: int = typer.Option(0, "--seed", help="Seed for the split and training."),
    checkpoint_dir: Path | None = typer.Option(
        None, "--checkpoint-dir", help="Checkpoint every epoch here (default: OUT.checkpoints)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    init: Path | None = typer.Option(
        None, "--from", help="Start from this package's backbone (supervised transfer)."
    ),
    update: Path | None = typer.Option(
        None,
        "--update",
        help="Continue this sgd or mlp package on DATA (new labeled rows); keeps its classes "
        "and preprocessing.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing package at --out."),
    label_column: str | None = typer.Option(None, "--label-column"),
    text_column: str | None = typer.Option(None, "--text-column"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train on DATA and write a package (parity-checked, scored on a held-out test split)."""
    from tuneserve.data import load
    from tuneserve.training import default_config
    from tuneserve.training import train as run_train

    if update is not None and (init or backbone or strategy):
        from tuneserve.exceptions import InvalidInputError

        raise InvalidInputError(
            "--update continues the package's own model; drop --backbone, --strategy and --from"
        )
    dataset = load(data, label_column=label_column, text_column=text_column)
    if update is not None:
        _update(dataset, update, out, epochs, learning_rate, seed, force, as_json)
        return
    from tuneserve.training.api import _source, resolve_backbone

    source = _source(init, dataset.modality) if init is not None else None
    name, spec, chosen = resolve_backbone(dataset.modality, backbone, strategy, source)
    config = None
    if spec.family == "torch":
        config = default_config(
            name,
            chosen,
            modality=dataset.modality,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            optimizer=optimizer,
            schedule=schedule,
            warmup_epochs=warmup,
            grad_accumulation=accumulate,
            clip_grad_norm=clip,
            class_weights=class_weights or None,
            mixed_precision=precision,
            patience=patience,
            layer_decay=layer_decay,
            seed=seed,
        )
    ckpt = checkpoint_dir or out.with_name(out.name + ".checkpoints")
    result = run_train(
        dataset,
        out,
        backbone=name,
        strategy=chosen,
        config=config,
        seed=seed,
        max_length=max_length,
        unfreeze=unfreeze,
        checkpoint_dir=ckpt if spec.family == "torch" else None,
        resume=resume,
        overwrite=force,
        init=source,
    )
    if checkpoint_dir is None and ckpt.exists():  # only kept to resume an interrupted run
        import shutil

        shutil.rmtree(ckpt, ignore_errors=True)
    m = result.package.manifest
    summary = {
        "package": str(result.package.path),
        "package_id": result.package.id,
        "backbone": name,
        "strategy": chosen,
        "validation": result.trained.metrics,
        "test": result.test_metrics,
        "best_epoch": m.lineage.training_config.get("best_epoch"),
        "epochs_run": len(result.trained.history),
        "parity_max_abs_diff": m.graph.parity_max_abs_diff,
    }
    if as_json:
        print_json(summary)
        return
    con = console()
    con.print(f"[bold]{dataset.name}[/bold]: {name} / {chosen}, {len(dataset)} rows")
    if summary["epochs_run"]:
        con.print(f"best epoch {summary['best_epoch']} of {summary['epochs_run']}")
    for split_name, values in (
        ("validation", result.trained.metrics),
        ("test", result.test_metrics),
    ):
        con.print(f"{split_name}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    parity = m.graph.parity_max_abs_diff or 0.0
    con.print(f"wrote {result.package.path} ({result.package.id}); parity {parity:.1e}")


def _update(
    dataset: Any,
    package: Path,
    out: Path,
    epochs: int | None,
    learning_rate: float | None,
    seed: int,
    force: bool,
    as_json: bool,
) -> None:
    """``train DATA --update PACKAGE``: continue the package on new data, before vs after."""
    from tuneserve.package import Package
    from tuneserve.training import TrainConfig
    from tuneserve.training import update as run_update
    from tuneserve.training.update import DEFAULT_PASSES

    source = Package.load(package)
    config = None
    if source.manifest.lineage.training_config.get("backbone") == "mlp":
        config = TrainConfig(
            learning_rate=learning_rate or 1e-4, epochs=epochs or 30, patience=10, seed=seed
        )
    result = run_update(
        dataset,
        source,
        out,
        config=config,
        passes=epochs or DEFAULT_PASSES,
        seed=seed,
        overwrite=force,
        checkpoint_dir=None,
    )
    before = result.trained.config["update"]["before"]
    summary = {
        "package": str(result.package.path),
        "package_id": result.package.id,
        "parent": source.id,
        "backbone": result.trained.config.get("backbone"),
        "before": before,
        "test": result.test_metrics,
        "validation": result.trained.metrics,
        "best_epoch": result.trained.config.get("best_epoch"),
    }
    if as_json:
        print_json(summary)
        return
    con = console()
    con.print(f"[bold]{dataset.name}[/bold]: updated {source.path} ({source.id})")
    for key, value in result.test_metrics.items():
        con.print(f"{key}: {before[key]:.4f} before, {value:.4f} after")
    con.print(f"wrote {result.package.path} ({result.package.id})")

"""``tuneserve train DATA``: turn a pretrained model into a classifier for your data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._checkpoints import run_checkpoints
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
        None,
        "--strategy",
        "-s",
        help="auto | probe | partial | full | lora (text and vision encoders; default auto: "
        "measures each here and fine-tunes what fits --time-budget); default per backbone.",
    ),
    time_budget: str = typer.Option(
        "3m",
        "--time-budget",
        help="Training time for loop-trained models: 90s, 3m, 1h, seconds, or none. A loop "
        "stops before an epoch that would not fit (best epoch kept); auto chooses what fits.",
    ),
    guard: bool = typer.Option(
        True,
        "--guard/--no-guard",
        help="With --from: also train from scratch (cnn, mlp: and with the body frozen "
        "first) and keep the best on validation. --no-guard: plain transfer only.",
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
        None,
        "--from",
        help="Start from this package's backbone (supervised transfer): a folder or a "
        "registry reference, models:/NAME@champion.",
    ),
    update: Path | None = typer.Option(
        None,
        "--update",
        help="Continue this sgd or mlp package (a folder or models:/NAME@champion) on DATA "
        "(new labeled rows); keeps its classes and preprocessing.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing package at --out."),
    track: bool | None = typer.Option(
        None, "--track/--no-track", help="Log the run to MLflow (default: on; TUNESERVE_TRACKING)."
    ),
    label_column: str | None = typer.Option(None, "--label-column"),
    text_column: str | None = typer.Option(None, "--text-column"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train on DATA and write a package (parity-checked, scored on a held-out test split)."""
    from tuneserve.data import load
    from tuneserve.stages import train as run_train
    from tuneserve.training.budget import parse_time_budget

    seconds = parse_time_budget(time_budget)  # refused before the data is read
    loop = {
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "optimizer": optimizer,
        "schedule": schedule,
        "warmup_epochs": warmup,
        "grad_accumulation": accumulate,
        "clip_grad_norm": clip,
        "class_weights": class_weights or None,
        "mixed_precision": precision,
        "patience": patience,
        "layer_decay": layer_decay,
    }
    if update is not None:
        if init or backbone or strategy:
            from tuneserve.exceptions import InvalidInputError

            raise InvalidInputError(
                "--update continues the package's own model; drop --backbone, --strategy and --from"
            )
        _update(
            data,
            update,
            out,
            loop,
            seed,
            force,
            as_json,
            checkpoint_dir,
            resume,
            label_column,
            track,
        )
        return
    dataset = load(data, label_column=label_column, text_column=text_column)
    with run_checkpoints(out, checkpoint_dir) as ckpt:
        result = run_train(
            dataset,
            out,
            backbone=backbone,
            strategy=strategy,
            settings=loop,
            seed=seed,
            max_length=max_length,
            unfreeze=unfreeze,
            checkpoint_dir=ckpt,
            resume=resume,
            overwrite=force,
            init=init,
            track=track,
            time_budget=seconds,
            guard=guard,
        )
    m = result.package.manifest
    trained = m.lineage.backbone
    summary = {
        "package": str(result.package.path),
        "package_id": result.package.id,
        "backbone": trained.name if trained else None,
        "strategy": trained.strategy if trained else None,
        "validation": result.validation_metrics,
        "test": result.test_metrics,
        "best_epoch": m.lineage.best_epoch,
        "epochs_run": len(m.lineage.history),
        "parity_max_abs_diff": m.graph.parity_max_abs_diff,
        "mlflow_run_id": result.run_id,
        **{k: v for k, v in m.lineage.details.items() if k in ("auto", "guard", "time_budget")},
    }
    if as_json:
        print_json(summary)
        return
    con = console()
    con.print(
        f"[bold]{dataset.name}[/bold]: {summary['backbone']} / {summary['strategy']}, "
        f"{len(dataset)} rows"
    )
    for line in _choices(m.lineage.details):
        con.print(line, markup=False)
    if summary["epochs_run"]:
        con.print(f"best epoch {summary['best_epoch']} of {summary['epochs_run']}")
    for split_name, values in (
        ("validation", result.validation_metrics),
        ("test", result.test_metrics),
    ):
        con.print(f"{split_name}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    parity = m.graph.parity_max_abs_diff or 0.0
    con.print(f"wrote {result.package.path} ({result.package.id}); parity {parity:.1e}")
    if result.run_id:
        con.print(f"tracked as MLflow run {result.run_id} (tuneserve ui shows it)")


def _choices(details: dict[str, Any]) -> list[str]:
    """What auto chose and measured, the --from guard's outcome, and a budget that ended
    training: one line each."""
    from tuneserve.training.budget import budget_message
    from tuneserve.training.guard import guard_message

    lines = []
    auto = details.get("auto")
    if isinstance(auto, dict):
        steps = ", ".join(
            f"{name} {m['step_seconds']:.2f} s/step (~{m['epoch_seconds']:.0f} s/epoch)"
            for name, m in auto.get("measured", {}).items()
        )
        lines.append(f"auto: {auto['reason']}")
        if steps:
            lines.append(f"auto measured: {steps}")
        kept_val = {k: v for k, v in auto.items() if k.endswith("_val")}
        scores = ", ".join(
            f"{k.removesuffix('_val')} {v.get('val_accuracy', v.get('val_loss', 0.0)):.4f}"
            for k, v in kept_val.items()
        )
        lines.append(f"auto kept {auto['kept']} (validation: {scores}) in {auto['seconds']:.0f} s")
    for message in (guard_message(details), budget_message(details)):
        if message:
            lines.append(message)
    return lines


def _update(
    data: str,
    package: Path,
    out: Path,
    loop: dict[str, Any],
    seed: int,
    force: bool,
    as_json: bool,
    checkpoint_dir: Path | None,
    resume: bool,
    label_column: str | None,
    track: bool | None,
) -> None:
    """``train DATA --update PACKAGE``: continue the package on new data, before vs after."""
    from tuneserve.data import load
    from tuneserve.exceptions import InvalidInputError
    from tuneserve.package import Package
    from tuneserve.stages import registered
    from tuneserve.stages import update as run_update
    from tuneserve.training import DEFAULT_PASSES, MLP_UPDATE, TrainConfig

    path, parent_version = registered(package)  # a folder, or models:/NAME@ALIAS
    source = Package.load(path)
    # the new rows are read as the package reads them (a regression target with few
    # distinct values must not turn into classes)
    task = source.manifest.task
    as_task = task if task != "embedding" and Path(data).expanduser().is_file() else None
    dataset = load(data, label_column=label_column, task=as_task)
    config = None
    recorded = source.manifest.lineage.backbone
    mlp = recorded is not None and recorded.name == "mlp"
    if mlp:
        given = {k: v for k, v in loop.items() if v is not None}
        config = TrainConfig(**{"seed": seed, **MLP_UPDATE, **given})
    else:
        ignored = [k for k, v in loop.items() if v is not None and k != "epochs"]
        if ignored or checkpoint_dir or resume:
            raise InvalidInputError(
                f"an sgd update takes --epochs (passes of partial_fit) only; drop "
                f"{', '.join(ignored + ['checkpoint options'] * bool(checkpoint_dir or resume))}"
            )
    with run_checkpoints(out, checkpoint_dir) as ckpt:
        result = run_update(
            dataset,
            source,
            out,
            config=config,
            passes=loop["epochs"] or DEFAULT_PASSES,
            seed=seed,
            overwrite=force,
            checkpoint_dir=ckpt if mlp else None,
            resume=resume,
            track=track,
            parent_version=parent_version,
        )
    before = result.before
    m = result.package.manifest
    summary = {
        "package": str(result.package.path),
        "package_id": result.package.id,
        "parent": source.id,
        "backbone": recorded.name if recorded else None,
        "before": before,
        "test": result.test_metrics,
        "validation": {k: v for k, v in m.metrics.items() if k.startswith("val_")},
        "best_epoch": m.lineage.best_epoch,
        "mlflow_run_id": result.run_id,
    }
    if as_json:
        print_json(summary)
        return
    con = console()
    con.print(f"[bold]{dataset.name}[/bold]: updated {source.path} ({source.id})")
    for key, value in result.test_metrics.items():
        con.print(f"{key}: {before[key]:.4f} before, {value:.4f} after")
    con.print(f"wrote {result.package.path} ({result.package.id})")
    if result.run_id:
        con.print(f"tracked as MLflow run {result.run_id} (tuneserve ui shows it)")

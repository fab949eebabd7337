"""``tuneserve pretrain UNLABELED --out B``: learn a feature extractor without labels."""

from __future__ import annotations

from pathlib import Path

import typer

from ._checkpoints import run_checkpoints
from ._output import console, print_json


def pretrain(
    data: str = typer.Argument(
        ...,
        help="Built-in name (labels ignored), image folder, .txt (a text per line) or a "
        "table file with a text column.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Embedding package to write."),
    backbone: str | None = typer.Option(
        None,
        "--backbone",
        "-b",
        help="cnn (images, default) | a Hugging Face vision model | minilm (text, default) | "
        "a Hugging Face text encoder.",
    ),
    objective: str | None = typer.Option(
        None, "--objective", help="contrastive (default) | denoise (cnn only)."
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=1),
    batch_size: int | None = typer.Option(None, "--batch-size", min=2),
    learning_rate: float | None = typer.Option(None, "--lr"),
    precision: str | None = typer.Option(None, "--precision", help="off | auto | bf16 | fp16"),
    max_length: int = typer.Option(128, "--max-length", min=8, help="Text: tokens kept."),
    text_column: str | None = typer.Option(None, "--text-column"),
    seed: int = typer.Option(0, "--seed"),
    checkpoint_dir: Path | None = typer.Option(
        None, "--checkpoint-dir", help="Checkpoint every epoch here (default: OUT.checkpoints)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    force: bool = typer.Option(False, "--force", help="Replace an existing package at --out."),
    track: bool | None = typer.Option(
        None, "--track/--no-track", help="Log the run to MLflow (default: on; TUNESERVE_TRACKING)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Pretrain on unlabeled data; then `tuneserve train DATA --from OUT` fine-tunes it."""
    from tuneserve.data import load_unlabeled
    from tuneserve.stages import pretrain as run_pretrain
    from tuneserve.training import pretrain_defaults, resolve_backbone

    unlabeled = load_unlabeled(data, text_column=text_column)
    config = None
    if unlabeled.modality in ("image", "text"):
        _, spec = resolve_backbone(unlabeled.modality, backbone)
        config = pretrain_defaults(
            spec.family,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            mixed_precision=precision,
            seed=seed,
        )
    with run_checkpoints(out, checkpoint_dir) as ckpt:
        result = run_pretrain(
            unlabeled,
            out,
            backbone=backbone,
            objective=objective,
            config=config,
            seed=seed,
            max_length=max_length,
            checkpoint_dir=ckpt,
            resume=resume,
            overwrite=force,
            track=track,
        )
    m = result.package.manifest
    summary = {
        "package": str(result.package.path),
        "package_id": result.package.id,
        "backbone": m.lineage.backbone.name if m.lineage.backbone else None,
        "objective": result.objective,
        "items": len(unlabeled),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "validation": m.metrics,
        "embedding_size": m.lineage.details.get("embedding_size"),
        "parity_max_abs_diff": m.graph.parity_max_abs_diff,
        "mlflow_run_id": result.run_id,
    }
    if as_json:
        print_json(summary)
        return
    con = console()
    con.print(
        f"[bold]{unlabeled.name}[/bold]: {len(unlabeled)} unlabeled {unlabeled.modality} items, "
        f"{summary['backbone']} / {result.objective}"
    )
    con.print(f"best epoch {result.best_epoch} of {len(result.history)}, {m.metrics}")
    con.print(
        f"wrote {result.package.path} ({result.package.id}). Next: tuneserve train DATA "
        f"--from {result.package.path} --out MODEL"
    )

"""``tuneserve cv DATA --backbone B --folds K``: K-fold cross-validation."""

from __future__ import annotations

from pathlib import Path

import typer

from ._output import console, print_json


def cv(
    data: str = typer.Argument(..., help="Labeled data: a built-in name, a folder or a file."),
    backbone: str | None = typer.Option(None, "--backbone", "-b", help="As in tuneserve train."),
    strategy: str | None = typer.Option(None, "--strategy", "-s"),
    folds: int = typer.Option(5, "--folds", "-k", min=2),
    seed: int = typer.Option(0, "--seed"),
    validation: float = typer.Option(
        0.1, "--validation", help="Share of each fold's training rows kept for early stopping."
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=1),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Keep the fold packages, oof.npz, cv.json and report.html."
    ),
    resume: bool = typer.Option(False, "--resume", help="Reuse the folds finished in --out."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Resamples (pooled CI)."),
    label_column: str | None = typer.Option(None, "--label-column"),
    text_column: str | None = typer.Option(None, "--text-column"),
    track: bool | None = typer.Option(None, "--track/--no-track", help="Log to MLflow."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Stratified, seeded K-fold cross-validation: one model per fold, each scored through
    ONNX Runtime on the fold it never saw; mean, std and 95% interval per metric, and the
    out-of-fold predictions kept for model selection."""
    from rich.table import Table

    from tuneserve.stages import cross_validate

    result = cross_validate(
        data,
        backbone=backbone,
        strategy=strategy,
        folds=folds,
        seed=seed,
        validation=validation,
        settings={"epochs": epochs} if epochs else None,
        out=out,
        resume=resume,
        overwrite=force,
        bootstrap=bootstrap,
        label_column=label_column,
        text_column=text_column,
        track=track,
    )
    if as_json:
        print_json(result.to_dict())
        return
    con = console()
    con.print(
        f"{folds}-fold cross-validation of {result.backbone} ({result.strategy}) on "
        f"{result.data}: {len(result.y)} rows"
    )
    table = Table("metric", "mean", "std", "95% interval (folds)", "pooled out-of-fold",
                  show_edge=False)  # fmt: skip
    for name, values in result.summary.items():
        table.add_row(
            name,
            f"{values['mean']:.4f}",
            f"{values['std']:.4f}",
            f"{values['low']:.4f} - {values['high']:.4f}",
            f"{result.pooled[name].value:.4f}" if name in result.pooled else "",
        )
    con.print(table)
    if out is not None:
        con.print(f"wrote {out}: fold-0..fold-{folds - 1}, oof.npz, cv.json, report.html")

"""``tuneserve evaluate PACKAGE DATA``: metrics with 95% intervals, through the runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._output import console, print_json

ROWS_HELP = (
    "auto: the training run's held-out test split when DATA is the data the package was "
    "trained on, else every row; test: that split or an error; all: every row."
)


def interval(estimate: Any) -> str:
    if estimate.low is None:
        return ""
    return f"{estimate.low:.4f} - {estimate.high:.4f}"


def evaluate(
    package: Path = typer.Argument(..., help="A package folder."),
    data: str = typer.Argument(..., help="Labeled data: a built-in name, a folder or a file."),
    rows: str = typer.Option("auto", "--rows", help=ROWS_HELP),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Resamples for the 95% CI."),
    seed: int = typer.Option(0, "--seed"),
    label_column: str | None = typer.Option(None, "--label-column"),
    text_column: str | None = typer.Option(None, "--text-column"),
    report: Path | None = typer.Option(
        None, "--report", help="Write an HTML report with plots (confusion matrix, ROC, ...)."
    ),
    track: bool | None = typer.Option(
        None, "--track/--no-track", help="Log to MLflow (default: on unless TUNESERVE_TRACKING=0)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Score a package on labeled data: accuracy, precision/recall/F1 (macro, micro,
    weighted, binary, per class), confusion matrix, ROC-AUC, log loss, calibration error;
    MSE/MAE/R² for regression; each with a bootstrap 95% interval."""
    from rich.table import Table

    from tuneserve.stages import evaluate as run

    result = run(
        package,
        data,
        rows=rows,
        bootstrap=bootstrap,
        seed=seed,
        label_column=label_column,
        text_column=text_column,
        report=report,
        track=track,
    )
    if as_json:
        print_json(result.to_dict())
        return
    out = console()
    out.print(f"[bold]{result.name}[/bold] on {result.data}: {len(result.y)} rows, {result.rows}")
    table = Table("metric", "value", "95% interval", show_edge=False)
    for name, estimate in result.metrics.items():
        table.add_row(name, f"{estimate.value:.4f}", interval(estimate))
    out.print(table)
    classes = result.details.get("per_class", {})
    if classes:
        per = Table("class", "precision", "recall", "f1", "support", show_edge=False)
        for name, row in classes.items():
            per.add_row(
                name,
                f"{row['precision']:.3f}",
                f"{row['recall']:.3f}",
                f"{row['f1']:.3f}",
                str(row["support"]),
            )
        out.print(per)
        matrix = result.details["confusion_matrix"]
        confusion = Table("true \\ predicted", *classes, show_edge=False)
        for name, counts in zip(classes, matrix, strict=True):
            confusion.add_row(name, *map(str, counts))
        out.print(confusion)
    if report is not None:
        out.print(f"report: {report}")

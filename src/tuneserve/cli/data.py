"""``tuneserve data ...``: look at a data set before training on it."""

from __future__ import annotations

from typing import Any

import typer

from ._output import console, print_json

app = typer.Typer(help="Inspect data sets.", no_args_is_help=True)

LABEL_COLUMN = typer.Option(None, "--label-column", help="Label column (default: detected).")
TEXT_COLUMN = typer.Option(None, "--text-column", help="Text column: load the file as text.")


@app.command("show")
def show(
    source: str = typer.Argument(
        ...,
        help="Built-in name (digits, breast_cancer, wine, iris, diabetes), image folder, "
        "or a CSV/TSV/Parquet/JSONL file.",
    ),
    label_column: str | None = LABEL_COLUMN,
    text_column: str | None = TEXT_COLUMN,
    task: str | None = typer.Option(None, "--task", help="classification or regression."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Summarize a data set: rows, task, classes and balance, inputs, fingerprint."""
    from tuneserve.data import load
    from tuneserve.exceptions import InvalidInputError

    if task not in (None, "classification", "regression"):
        raise InvalidInputError(f"--task must be classification or regression, got {task!r}")
    dataset = load(source, label_column=label_column, text_column=text_column, task=task)  # type: ignore[arg-type]
    summary = dataset.summary()
    if as_json:
        print_json(summary)
        return
    _print_summary(summary)


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    out = console()
    out.print(f"[bold]{summary['name']}[/bold]  ({summary['source']})")
    out.print(
        f"{summary['rows']} rows, {summary['modality']}, {summary['task']}"
        + (f", {summary['classes']} classes" if "classes" in summary else "")
    )
    out.print(f"fingerprint {summary['fingerprint']}")
    if "class_counts" in summary:
        table = Table("class", "rows", "share")
        total = summary["rows"]
        for name, count in summary["class_counts"].items():
            table.add_row(name, str(count), f"{100 * count / total:.1f}%")
        out.print(table)
        out.print(f"imbalance (largest / smallest class): {summary['imbalance_ratio']}")
    if "target" in summary:
        t = summary["target"]
        out.print(
            f"target: mean {t['mean']:.4g}, std {t['std']:.4g}, "
            f"range [{t['min']:.4g}, {t['max']:.4g}]"
        )
    if "features" in summary:
        feats = summary["features"]
        shown = ", ".join(f"{k} ({v})" for k, v in list(feats.items())[:12])
        more = f" ... and {len(feats) - 12} more" if len(feats) > 12 else ""
        out.print(f"{len(feats)} features: {shown}{more}")
    if "image_shapes" in summary:
        out.print(f"image shapes (h x w x c): {summary['image_shapes']}")
    if "words_per_text" in summary:
        w = summary["words_per_text"]
        out.print(
            f"text column {summary['text_column']!r}: {w['mean']} words on average, max {w['max']}"
        )
        if summary.get("ignored_columns"):
            out.print(f"other columns, not used: {summary['ignored_columns']}")

"""``tuneserve compare P1 P2 ... DATA``: the same rows for every package, a table, and
whether the best is significantly better than the runner-up."""

from __future__ import annotations

import typer

from ._output import console, print_json
from .evaluate import ROWS_HELP, interval


def compare(
    items: list[str] = typer.Argument(..., help="Two or more package folders, then the data."),
    metric: str | None = typer.Option(
        None, "--metric", "-m", help="Rank by this metric (default: accuracy, or mse)."
    ),
    rows: str = typer.Option("auto", "--rows", help=ROWS_HELP),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Resamples for the 95% CI."),
    seed: int = typer.Option(0, "--seed"),
    cost: bool = typer.Option(True, "--cost/--no-cost", help="Measure size and latency too."),
    label_column: str | None = typer.Option(None, "--label-column"),
    text_column: str | None = typer.Option(None, "--text-column"),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Evaluate packages on the same rows, rank them, and test the best against the
    runner-up: McNemar's exact test for accuracy, a paired bootstrap for other metrics."""
    from rich.table import Table

    from tuneserve.evaluation import compare as run
    from tuneserve.exceptions import InvalidInputError

    if len(items) < 3:
        raise InvalidInputError(
            f"compare takes two or more packages and then the data; got {len(items)} "
            "argument(s). Example: tuneserve compare p1 p2 digits"
        )
    result = run(
        items[:-1],
        items[-1],
        metric=metric,
        rows=rows,
        bootstrap=bootstrap,
        seed=seed,
        cost=cost,
        label_column=label_column,
        text_column=text_column,
    )
    if as_json:
        print_json(result.to_dict())
        return
    out = console()
    first = result.evaluations[0]
    out.print(f"on {first.data}: {len(first.y)} rows, {first.rows}")
    extra = ["accuracy", "f1_macro"] if first.task == "classification" else ["mae", "r2"]
    extra = [m for m in extra if m != result.metric]
    columns = ["#", "package", result.metric, "95% interval", *extra]
    if cost:
        columns += ["size MB", "ms (1)", f"ms ({result.costs[0].batch if result.costs[0] else 0})"]
    table = Table(*columns, show_edge=False)
    for rank, (e, c) in enumerate(zip(result.evaluations, result.costs, strict=True), 1):
        chosen = e.metrics[result.metric]
        cells = [str(rank), e.name, f"{chosen.value:.4f}", interval(chosen)]
        cells += [f"{e.metrics[m].value:.4f}" if m in e.metrics else "" for m in extra]
        if c is not None:
            cells += [f"{c.size_mb:.2f}", f"{c.latency_ms:.2f}", f"{c.batch_latency_ms:.2f}"]
        table.add_row(*cells)
    out.print(table)
    if result.significance is not None:
        out.print(result.significance.sentence())

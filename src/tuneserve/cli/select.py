"""``tuneserve select P1 P2 ... --data DATA --method M --out DIR``: one package from many."""

from __future__ import annotations

from pathlib import Path

import typer

from ._output import console, print_json

METHOD_HELP = (
    "filter: the best candidate meeting every --require; soft-vote, hard-vote, weighted "
    "(weights fit on held-out rows), greedy (ensemble selection, Caruana 2004), stacking "
    "(logistic regression on the members' held-out probabilities): an ensemble package; "
    "hybrid: --require, then --combine on the survivors."
)


def select(
    candidates: list[Path] = typer.Argument(..., help="Candidate package folders."),
    data: str = typer.Option(..., "--data", "-d", help="Labeled data to choose on."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the chosen package."),
    method: str = typer.Option("greedy", "--method", help=METHOD_HELP),
    require: list[str] = typer.Option(
        [], "--require", help="A rule: 'f1_macro>=0.9', 'latency_ms<=5', 'size_mb<=30'."
    ),
    combine: str = typer.Option("greedy", "--combine", help="The ensemble method of hybrid."),
    metric: str | None = typer.Option(None, "--metric", "-m", help="Default: accuracy."),
    rows: str = typer.Option("auto", "--rows"),
    rounds: int = typer.Option(25, "--rounds", min=0, help="Greedy selection rounds."),
    init: int = typer.Option(1, "--init", min=1, help="Greedy: start from the N best."),
    bags: int = typer.Option(1, "--bags", min=1, help="Greedy: bagged selection."),
    seed: int = typer.Option(0, "--seed"),
    oof: list[Path] = typer.Option(
        [],
        "--oof",
        help="A tuneserve cv --out folder per candidate, in order: fit the ensemble on their "
        "out-of-fold predictions of the rows not scored.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out package."),
    label_column: str | None = typer.Option(None, "--label-column"),
    text_column: str | None = typer.Option(None, "--text-column"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Choose one package among candidates: filter by rules on metrics, latency and size,
    combine them into an ensemble, or both. The result runs like any package."""
    from tuneserve.selection import select as run

    result = run(
        candidates,
        data,
        out,
        method=method,
        rules=require,
        combine=combine,
        metric=metric,
        rows=rows,
        rounds=rounds,
        init=init,
        bags=bags,
        seed=seed,
        oof=oof or None,
        overwrite=force,
        label_column=label_column,
        text_column=text_column,
    )
    if as_json:
        print_json(result.to_dict())
        return
    con = console()
    for rule, names in result.removed.items():
        con.print(f"{rule} removed {', '.join(names)}")
    con.print(f"survivors: {', '.join(result.survivors)}")
    unused = [name for name in result.survivors if name not in result.members]
    if unused and result.method != "filter":
        con.print(f"left out (weight 0): {', '.join(unused)}")
    weights: list[float | None] = (
        [*result.weights] if result.weights else [None] * len(result.members)
    )
    for name, weight in zip(result.members, weights, strict=True):
        share = f" (weight {weight:.3f})" if weight is not None else ""
        con.print(f"member {name}{share}: {result.metric} {result.scores.get(name, 0):.4f}")
    rows_note = f" on {result.rows['report']} held-out rows" if result.rows else ""
    con.print(
        f"{result.method}: {result.metric} {result.scores['result']:.4f}{rows_note}; "
        f"wrote {result.package.path} ({result.package.id})"
    )

"""``tuneserve tune DATA --out DIR``: search training hyperparameters (Optuna) and keep the
best trial's package in ``DIR/best``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._output import console, print_json, shown


def _print(result: Any) -> None:
    out = console()
    c = result.counts
    out.print(
        f"study [bold]{shown(result.study)}[/bold] in {shown(result.storage)}: "
        f"{c.get('complete', 0)} complete, {c.get('pruned', 0)} pruned, "
        f"{c.get('fail', 0)} failed; {result.compute} epochs/steps of compute"
    )
    if result.requeued:
        out.print(f"re-ran trials an earlier run left unfinished: {result.requeued}")
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in result.best_params.items())  # fmt: skip
    out.print(
        f"best: trial {result.best_trial}, validation {result.metric} "
        f"{result.best_value:.4f} ({shown(params)})"
    )
    if result.package is not None:
        out.print(f"package: {shown(result.package.path)}")
    else:
        out.print(
            f"the best package was written by another worker: {shown(result.best_package_at)}"
        )
    out.print(f"report: {shown(result.report)}")


def tune(
    data: str = typer.Argument(..., help="Built-in name, image folder, or CSV/TSV/Parquet/JSONL."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for best/, report.html, trials/."),
    backbone: list[str] | None = typer.Option(
        None,
        "--backbone",
        "-b",
        help="A backbone to search (repeat it to let several compete). Default per data type.",
    ),
    trials: int | None = typer.Option(
        None,
        "--trials",
        "-n",
        help="Trials in all, over every worker and resumed run (default 20).",
    ),
    timeout: str | None = typer.Option(
        None, "--timeout", help="Time this run may spend: 90s, 10m, 1h (running trials stop)."
    ),
    sampler: str = typer.Option("tpe", "--sampler", help="grid | random | tpe | gp | cmaes"),
    pruner: str = typer.Option(
        "hyperband", "--pruner", help="none | median | asha | hyperband (TPE + Hyperband ~ BOHB)"
    ),
    folds: int | None = typer.Option(
        None, "--folds", help="K-fold cross-validation inside train + validation per trial."
    ),
    metric: str | None = typer.Option(
        None, "--metric", help="Validation metric to optimise (default accuracy; mse)."
    ),
    space: Path | None = typer.Option(
        None, "--space", help="YAML/JSON file narrowing or replacing the default space."
    ),
    storage: str | None = typer.Option(
        None,
        "--storage",
        help="Database URL shared by workers (postgresql://...); default SQLite in "
        "TUNESERVE_HOME. A study of the same name there is continued.",
    ),
    study: str | None = typer.Option(None, "--study", help="Study name (default from the data)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the split and the sampler."),
    register: str | None = typer.Option(
        None, "--register", help="Register the best package under this model name."
    ),
    force: bool = typer.Option(False, "--force", help="Use an --out that holds other files."),
    track: bool | None = typer.Option(
        None, "--track/--no-track", help="Log the study and each trial to MLflow (default on)."
    ),
    label_column: str | None = typer.Option(None, "--label-column"),
    text_column: str | None = typer.Option(None, "--text-column"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Search hyperparameters of one or more backbones; write the best package to OUT/best
    and an HTML report to OUT/report.html. Rerun the same command to resume."""
    from tuneserve.data import load
    from tuneserve.stages import tune as run_tune

    dataset = load(data, label_column=label_column, text_column=text_column)
    result = run_tune(
        dataset,
        out,
        backbones=backbone or None,
        trials=trials,
        timeout=timeout,
        sampler_name=sampler,
        pruner_name=pruner,
        folds=folds,
        metric=metric,
        space=space,
        storage=storage,
        study=study,
        seed=seed,
        force=force,
        track=track,
        register=register,
        print_trials=not as_json,
    )
    if as_json:
        print_json(result.to_dict())
    else:
        _print(result)

"""``tuneserve demo``: the pipeline so far on the built-in digits data."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path | None = typer.Option(
        None, "--out", help="Where packages go (default: $TUNESERVE_HOME/demo, ./.tuneserve/demo)."
    ),
    epochs: int = typer.Option(30, "--epochs", min=1, help="CNN training epochs (max)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the split and training."),
) -> None:
    """Train the digits CNN, write a package, predict test images, print test accuracy."""
    from tuneserve.demo import run_demo

    run_demo(out=out, epochs=epochs, seed=seed)

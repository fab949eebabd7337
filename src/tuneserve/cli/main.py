"""Entry point: ``tuneserve``. Heavy libraries load inside commands, so ``--help`` is instant."""

from __future__ import annotations

import os
import sys
import traceback

import typer

from tuneserve._version import __version__

from . import (
    compare,
    compress,
    cv,
    data,
    demo,
    evaluate,
    package,
    predict,
    pretrain,
    registry,
    select,
    serve,
    train,
    tune,
    ui,
    worker,
)

app = typer.Typer(
    name="tuneserve",
    help="Fine-tune, evaluate, package and serve classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data.app, name="data")
app.add_typer(package.app, name="package")
app.add_typer(registry.app, name="registry")
app.command("train")(train.train)
app.command("pretrain")(pretrain.pretrain)
app.command("predict")(predict.predict)
app.command("evaluate")(evaluate.evaluate)
app.command("compare")(compare.compare)
app.command("cv")(cv.cv)
app.command("select")(select.select)
app.command("compress")(compress.compress)
app.command("tune")(tune.tune)
app.command("demo")(demo.demo)
app.command("ui")(ui.ui)
app.command("serve")(serve.serve)
app.command("worker")(worker.worker)
app.command("submit")(worker.submit)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tuneserve {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """tuneserve: turn a pretrained model into a served classifier."""
    if debug:
        os.environ["TUNESERVE_DEBUG"] = "1"


def _debug() -> bool:
    return "--debug" in sys.argv or os.environ.get("TUNESERVE_DEBUG") == "1"


def run() -> None:
    """Console-script entry: one clear line per error, the traceback only with ``--debug``."""
    from tuneserve.exceptions import TuneserveError

    if "--debug" in sys.argv[1:]:  # accepted anywhere, not only before the command
        sys.argv = [a for i, a in enumerate(sys.argv) if i == 0 or a != "--debug"]
        os.environ["TUNESERVE_DEBUG"] = "1"
    try:
        app(prog_name="tuneserve")
    except TuneserveError as exc:
        if _debug():
            traceback.print_exc()
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg="yellow", err=True)
        sys.exit(130)
    except Exception as exc:
        if _debug():
            traceback.print_exc()
        typer.secho(
            f"error: internal error {type(exc).__name__}: {exc} "
            "(rerun with --debug for the traceback, and please report it)",
            fg="red",
            err=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    run()

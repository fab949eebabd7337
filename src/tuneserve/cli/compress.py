"""``tuneserve compress PACKAGE --data DATA --out DIR``: smaller, faster variants of a
package, measured, and the most compressed one within the accuracy budget chosen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ._output import console, print_json


def _settings(pairs: list[str] | None) -> dict[str, dict[str, Any]]:
    """``METHOD.KEY=VALUE`` pairs (values read as JSON where they parse: 3, 0.5, true)."""
    from tuneserve.exceptions import InvalidInputError

    out: dict[str, dict[str, Any]] = {}
    for pair in pairs or []:
        key, eq, raw = pair.partition("=")
        method, dot, name = key.partition(".")
        if not (eq and dot and method and name):
            raise InvalidInputError(
                f"--set takes METHOD.KEY=VALUE, got {pair!r}. Hint: --set distill.temperature=4"
            )
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(method.strip(), {})[name.strip()] = value
    return out


def _unlabeled(path: Path | None, modality: str) -> Any:
    if path is None:
        return None
    if modality == "table":
        from tuneserve.data import read_frame

        return read_frame(path)
    from tuneserve.data import load_unlabeled

    return load_unlabeled(str(path)).X


def _print(result: Any) -> None:
    from tuneserve.compression import print_trade_off

    print_trade_off(console(), result)


def compress(
    package: str = typer.Argument(
        ..., help="Package folder, or a registry reference such as models:/NAME@champion."
    ),
    data: str = typer.Option(
        ...,
        "--data",
        "-d",
        help="Labeled data: the package's training data (its held-out "
        "rows score every variant), or other labeled data of the same kind.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for variants, report, chosen/."),
    max_accuracy_drop: float = typer.Option(
        0.01, "--max-accuracy-drop", help="Largest accuracy (R² for regression) drop, a fraction."
    ),
    latency_ms: float | None = typer.Option(
        None, "--latency-ms", help="Largest median latency at batch 1, ms."
    ),
    size_mb: float | None = typer.Option(None, "--size-mb", help="Largest package size, MB."),
    prefer: str = typer.Option(
        "latency", "--prefer", help="Most compressed means: latency | throughput | size."
    ),
    methods: str | None = typer.Option(
        None,
        "--methods",
        help="Comma-separated: int8-dynamic, int8-static, fp16, shorten, distill, prune, sparse, "
        "qat (default: every one that applies, and their compositions).",
    ),
    unlabeled: Path | None = typer.Option(
        None, "--unlabeled", help="Inputs without labels whose teacher soft labels distill too."
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="Fine-tuning epochs of training-based methods."
    ),
    settings: list[str] | None = typer.Option(
        None, "--set", help="A method's setting, METHOD.KEY=VALUE (repeatable)."
    ),
    seed: int = typer.Option(0, "--seed"),
    register: str | None = typer.Option(
        None, "--register", help="Register the chosen variant under this model name."
    ),
    force: bool = typer.Option(False, "--force", help="Start over in an existing --out."),
    track: bool | None = typer.Option(
        None, "--track/--no-track", help="Log each variant to MLflow (default: on)."
    ),
    label_column: str | None = typer.Option(None, "--label-column"),
    text_column: str | None = typer.Option(None, "--text-column"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Compress PACKAGE: quantize, prune, distill; measure every variant on held-out rows;
    write the most compressed one within the budget to OUT/chosen."""
    from tuneserve.compression import CompressionError
    from tuneserve.package import Package
    from tuneserve.stages import compress as run
    from tuneserve.stages import registered

    source, _ = registered(package)
    loaded = source if isinstance(source, Package) else Package.load(source)
    try:
        result = run(
            loaded,
            data,
            out,
            track=track,
            register=register,
            max_accuracy_drop=max_accuracy_drop,
            latency_ms=latency_ms,
            size_mb=size_mb,
            prefer=prefer,
            methods=methods.split(",") if methods else None,
            unlabeled=_unlabeled(unlabeled, loaded.manifest.modality),
            settings=_settings(settings),
            epochs=epochs,
            seed=seed,
            label_column=label_column,
            text_column=text_column,
            overwrite=force,
        )
    except CompressionError as exc:
        if as_json:
            print_json(exc.result.to_dict())
        else:
            _print(exc.result)
        raise
    if as_json:
        print_json({**result.to_dict(), "run_ids": result.run_ids})
        return
    _print(result)
    console().print(f"[bold]chosen[/bold] {result.why}", soft_wrap=True)
    console().print(f"package: {result.package.path if result.package else '-'}")
    if register is not None:
        console().print(f"registered as {register} (tuneserve registry show {register})")

"""``tuneserve predict PACKAGE INPUT...``: run a package on files, tables or strings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ._output import console, print_json, shown
from ._signature import REQUIRE, TRUSTED, check_signature


def _path(item: str) -> Path | None:
    """``item`` as an existing path, or None (a JSON row or a sentence is no file name)."""
    try:
        path = Path(item).expanduser()
        return path if path.exists() else None
    except (OSError, ValueError, RuntimeError):  # too long, a NUL byte, or an unknown ~user
        return None


def _image_inputs(items: list[str]) -> tuple[list[Any], list[str]]:
    from tuneserve.data import list_images
    from tuneserve.exceptions import InvalidInputError, NotFoundError

    paths: list[Path] = []
    for item in items:
        path = _path(item)
        if path is not None and path.is_dir():
            found = list_images(path)
            if not found:
                raise InvalidInputError(f"folder {path} holds no images (.png, .jpg, .jpeg, .bmp)")
            paths.extend(found)
        elif path is not None and path.is_file():
            paths.append(path)
        else:
            raise NotFoundError(f"image {item!r} not found; pass image files or folders of them")
    return list(paths), [str(p) for p in paths]


def _table_inputs(items: list[str]) -> tuple[list[Any], list[str]]:
    from tuneserve.data import TABLE_SUFFIXES, read_frame
    from tuneserve.exceptions import InvalidInputError

    rows: list[Any] = []
    names: list[str] = []
    for item in items:
        path = _path(item)
        if path is not None and path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
            frame = read_frame(path)
            rows.extend(frame.to_dict("records"))
            names.extend(f"{path.name}:{i}" for i in range(len(frame)))
            continue
        try:
            parsed = json.loads(item)
        except json.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict | list):
            raise InvalidInputError(
                f"cannot read table input {item[:60]!r}: pass a CSV/TSV/Parquet/JSONL file, a "
                "JSON row such as '{\"column\": 1.5}', or a JSON array of rows"
            )
        # a JSON array of rows (dicts or lists) is many rows; a flat list is one row
        many = isinstance(parsed, list) and all(isinstance(r, dict | list) for r in parsed)
        for row in parsed if many and parsed else [parsed]:
            rows.append(row)
            names.append(f"row {len(names)}")
    return rows, names


def _text_inputs(items: list[str], text_column: str | None) -> tuple[list[Any], list[str]]:
    from tuneserve.data import TABLE_SUFFIXES, read_frame, read_text_lines, refuse_blank
    from tuneserve.exceptions import DataError, InvalidInputError

    texts: list[str] = []
    names: list[str] = []
    for item in items:
        path = _path(item)
        if path is None:
            texts.append(item)
            names.append(item if len(item) <= 40 else item[:37] + "...")
        elif path.is_file() and path.suffix.lower() == ".txt":
            lines = read_text_lines(path)
            texts.extend(lines)
            names.extend(f"{path.name}:{i + 1}" for i in range(len(lines)))
        elif path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
            frame = read_frame(path)
            column = text_column or ("text" if "text" in frame.columns else None)
            if column is None or column not in frame.columns:
                raise DataError(
                    f"no text column in {path}; columns are {list(frame.columns)}. "
                    "Hint: pass --text-column NAME"
                )
            refuse_blank(frame[column], path, f"empty text in column {column!r}", "fill them in")
            texts.extend(frame[column].astype(str).tolist())
            names.extend(f"{path.name}:{i}" for i in range(len(frame)))
        else:
            kind = "folder" if path.is_dir() else "file"
            raise InvalidInputError(
                f"{item!r} is a {kind}, but this package reads text: pass strings, a .txt "
                "file (one text per line) or a CSV/TSV/Parquet/JSONL file with a text column"
            )
    return texts, names


def predict(
    package: str = typer.Argument(..., help="Package directory."),
    inputs: list[str] = typer.Argument(
        ...,
        help="Image files or folders; a CSV/Parquet/JSONL file or JSON rows for tables; "
        "strings, a .txt file (one text per line) or a CSV for text.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Inputs per ONNX Runtime call."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="Classes shown per input (table view)."),
    text_column: str | None = typer.Option(None, "--text-column", help="Text column of a CSV."),
    require_signature: bool = REQUIRE,
    trusted_key: list[str] | None = TRUSTED,
) -> None:
    """Predict with a package (ONNX Runtime; torch is never loaded)."""
    from tuneserve.progress import with_progress
    from tuneserve.runtime import Predictor

    check_signature(package, require_signature, trusted_key)
    predictor = Predictor(package, batch_size=batch_size)
    modality = predictor.manifest.modality
    if modality == "image":
        raw, names = _image_inputs(inputs)
    elif modality == "table":
        raw, names = _table_inputs(inputs)
    else:
        raw, names = _text_inputs(inputs, text_column)
    predictions = with_progress("predicting", len(raw), lambda step: predictor.predict(raw, step))
    if as_json:
        print_json(
            {
                "model": predictor.manifest.name,
                "package_id": predictor.package.id,
                "predictions": [
                    {"input": n, **p.to_dict()} for n, p in zip(names, predictions, strict=True)
                ],
            }
        )
        return
    from rich.table import Table

    if predictor.manifest.task == "embedding":
        table = Table("input", "dimensions", "embedding (first 6)")
        for n, p in zip(names, predictions, strict=True):
            assert p.embedding is not None
            head = ", ".join(f"{v:.3f}" for v in p.embedding[:6])
            table.add_row(
                shown(n), str(len(p.embedding)), head + (", ..." if len(p.embedding) > 6 else "")
            )
    elif predictor.manifest.task == "regression":
        table = Table("input", "prediction")
        for n, p in zip(names, predictions, strict=True):
            table.add_row(shown(n), f"{p.value:.6g}")
    else:
        table = Table("input", "label", "confidence", f"top {top_k}")
        for n, p in zip(names, predictions, strict=True):
            assert p.probabilities is not None and p.label is not None
            top = sorted(p.probabilities.items(), key=lambda kv: -kv[1])[:top_k]
            table.add_row(
                shown(n),
                shown(p.label),
                f"{p.probabilities[p.label]:.3f}",
                ", ".join(f"{shown(k)} {v:.2f}" for k, v in top),
            )
    console().print(table)

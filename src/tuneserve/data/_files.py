"""Tables and text from CSV, TSV, Parquet, JSONL and JSON files, with column detection."""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np
import pandas as pd

from tuneserve.exceptions import DataError

from ._dataset import LABEL_COLUMN_CANDIDATES, Dataset, Task

#: A free-text column with one of these names is the text even beside other columns.
TEXT_COLUMN_NAMES = ("text", "sentence", "document", "content", "review", "body", "message")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson", ".json")
#: An integer label with at most this many distinct values is read as classification.
MAX_INTEGER_CLASSES = 50


def read_frame(path: Path) -> pd.DataFrame:
    """Read a file into a DataFrame by its suffix; a parse failure names the file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
            if len(frame.columns) == 1 and ";" in str(frame.columns[0]):
                frame = pd.read_csv(path, sep=";", decimal=",")  # a European-style CSV
        elif suffix == ".tsv":
            frame = pd.read_csv(path, sep="\t")
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix in (".jsonl", ".ndjson"):
            frame = pd.read_json(path, lines=True)
        elif suffix == ".json":
            frame = pd.read_json(path)
        else:
            raise DataError(
                f"cannot read {path}: unknown file type {suffix!r}; tuneserve reads "
                f"{', '.join(TABLE_SUFFIXES)} files and image folders"
            )
    except DataError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path} is empty; it needs a header line and rows") from exc
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(
            f"cannot read {path}: {exc}. Hint: check the file's format (UTF-8, comma- or "
            "semicolon-separated CSV, tab-separated .tsv, one JSON object per line in .jsonl)"
        ) from exc
    if len(frame) == 0:
        raise DataError(f"{path} has a header but no rows")
    return clean_columns(frame, path)


def clean_columns(frame: pd.DataFrame, where: Path | str) -> pd.DataFrame:
    """Column names as strings, each used once (else which column is meant is a guess)."""
    frame.columns = [str(c) for c in frame.columns]
    repeated = sorted(set(frame.columns[frame.columns.duplicated()]))
    if repeated:
        raise DataError(
            f"{where} has more than one column named {', '.join(map(repr, repeated))}; "
            "each column needs its own name. Hint: rename or drop the repeats"
        )
    return frame


def pick_column(frame: pd.DataFrame, wanted: str | None, path: Path | str, what: str) -> str:
    """The ``what`` column of ``frame`` (``label`` or ``text``): ``wanted``, else (for
    labels) the first column named like a label.

    Raises:
        DataError: ``wanted`` is not a column (naming the closest one), or no column is
            named like a label.
    """
    columns = list(frame.columns)
    if wanted is not None:
        if wanted in columns:
            return wanted
        close = difflib.get_close_matches(wanted, columns, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataError(
            f"{what} column {wanted!r} not found in {path}; columns are {columns}.{hint} "
            f"Hint: pass --{what}-column with one of them"
        )
    lowered = {c.lower(): c for c in columns}
    for candidate in LABEL_COLUMN_CANDIDATES:
        if candidate in lowered:
            return lowered[candidate]
    raise DataError(
        f"no label column in {path}; columns are {columns}, and none is named "
        f"{' / '.join(LABEL_COLUMN_CANDIDATES)}. Hint: pass --label-column NAME"
    )


def _is_free_text(series: pd.Series) -> bool:
    """True for a string column that reads as sentences rather than categories."""
    if not (pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)):
        return False
    values = series.dropna().astype(str)
    if len(values) == 0:
        return False
    words = values.str.split().str.len()
    return bool(words.mean() >= 3 or (values.nunique() > 0.5 * len(values) and words.mean() > 1))


def read_text_lines(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped.

    Raises:
        DataError: the file is not UTF-8 or holds no text.
    """
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise DataError(f"cannot read {path}: not UTF-8 text ({exc})") from exc
    lines = [ln for ln in lines if ln]
    if not lines:
        raise DataError(f"{path} holds no text; write one text per line")
    return lines


def refuse_blank(values: pd.Series, path: Path | str, what: str, fix: str) -> None:
    """Raise a DataError naming the rows whose value is missing or blank."""
    blank = values.isna() | values.astype(str).str.strip().eq("")
    if blank.any():
        rows = np.flatnonzero(blank.to_numpy())
        shown = ", ".join(str(r) for r in rows[:10]) + (" ..." if len(rows) > 10 else "")
        raise DataError(
            f"{len(rows)} row(s) of {path} have {what} (0-based rows {shown}). "
            f"Hint: drop those rows or {fix}"
        )


def detect_text_column(frame: pd.DataFrame, features: list[str]) -> str | None:
    """The text column of a text data set, or None for a table.

    Text when the only feature column holds free text, or when exactly one column holds
    free text and it is named like text (text, sentence, review, ...) or every other column
    is an id (a distinct value per row).
    """
    free = [c for c in features if _is_free_text(frame[c])]
    if len(free) != 1:
        return None
    column = free[0]
    others = [c for c in features if c != column]
    if not others:
        return column
    # beside other columns, text must vary like text (not a few long category names)
    if frame[column].nunique() < 0.5 * len(frame):
        return None
    ids = all(_is_id(frame[c]) for c in others)
    return column if column.lower() in TEXT_COLUMN_NAMES or ids else None


def _is_id(series: pd.Series) -> bool:
    """A distinct integer or one-word string per row (not a measurement)."""
    if series.nunique(dropna=False) != len(series):
        return False
    if pd.api.types.is_integer_dtype(series):
        return True
    return bool(
        pd.api.types.is_object_dtype(series) and series.astype(str).str.fullmatch(r"\S+").all()
    )


def _infer_task(labels: pd.Series) -> Task:
    if pd.api.types.is_bool_dtype(labels) or not pd.api.types.is_numeric_dtype(labels):
        return "classification"
    values = labels.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        return "regression"  # then refused as an infinite target, naming the rows
    integral = bool(np.all(np.equal(np.mod(values, 1), 0)))
    distinct = len(np.unique(values))
    if integral and distinct <= MAX_INTEGER_CLASSES and distinct <= max(len(values) / 2, 2):
        return "classification"
    return "regression"


def _encode_labels(labels: pd.Series) -> tuple[np.ndarray, tuple[str, ...]]:
    if pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels):
        values = labels.to_numpy(dtype=np.float64)
        if np.all(np.mod(values, 1) == 0):
            labels = pd.Series(values.astype(np.int64))
        classes = np.unique(labels.to_numpy())
        names = tuple(str(c) for c in classes)
    else:
        names = tuple(sorted({str(v) for v in labels}))
    lookup = {name: code for code, name in enumerate(names)}
    codes = np.array([lookup[str(v)] for v in labels], dtype=np.int64)
    return codes, names


def load_file(
    path: Path,
    label_column: str | None = None,
    text_column: str | None = None,
    task: Task | None = None,
) -> Dataset:
    """Load a labeled table or text data set from one file.

    The label is ``label_column`` or the first column named label / target / class / y.
    The file is text when ``text_column`` is given, or when the only other column holds
    free text; otherwise it is a table of all other columns.

    Raises:
        DataError: unreadable file, no rows, missing column, NaN labels, a single class,
            or empty texts. The message names the file, the column and the rows.
    """
    frame = read_frame(path)
    return load_frame(frame, path, path.stem, label_column, text_column, task)


def load_frame(
    frame: pd.DataFrame,
    path: Path | str,
    name: str,
    label_column: str | None = None,
    text_column: str | None = None,
    task: Task | None = None,
) -> Dataset:
    """A labeled data set from a table read from ``path`` (or described by it, e.g. "the
    DataFrame"), as :func:`load_file` does."""
    label = pick_column(frame, label_column, path, "label")
    labels = frame[label]
    refuse_blank(labels, path, f"no value in label column {label!r}", "fill in their labels")
    features = [c for c in frame.columns if c != label]
    if not features:
        raise DataError(f"{path} has only the label column {label!r}; add feature columns")

    if text_column is not None:
        text_column = pick_column(frame, text_column, path, "text")
        if text_column == label:
            raise DataError(f"column {label!r} cannot be both the text and the label")
    else:
        text_column = detect_text_column(frame, features)

    task = task or _infer_task(labels)
    if task == "classification":
        y, names = _encode_labels(labels)
        if len(names) < 2:
            raise DataError(
                f"label column {label!r} of {path} holds a single class ({names[0]!r}); "
                "classification needs at least 2. Hint: add examples of another class"
            )
        label_names: tuple[str, ...] | None = names
    else:
        try:
            y = labels.to_numpy(dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise DataError(
                f"label column {label!r} of {path} is not numeric, so it cannot be a regression "
                "target. Hint: drop --task regression to classify"
            ) from exc
        if not np.isfinite(y).all():
            rows = np.flatnonzero(~np.isfinite(y))
            raise DataError(
                f"{len(rows)} row(s) of {path} have an infinite regression target in column "
                f"{label!r} (0-based rows {', '.join(map(str, rows[:10]))}). Hint: fix or drop them"
            )
        label_names = None

    if text_column is not None:
        texts = frame[text_column]
        refuse_blank(texts, path, f"empty text in column {text_column!r}", "remove them")
        return Dataset(
            name=name,
            modality="text",
            task=task,
            X=texts.astype(str).tolist(),
            y=y,
            label_names=label_names,
            source=str(path),
            label_column=label,
            text_column=text_column,
            meta={"ignored_columns": [c for c in features if c != text_column]},
        )
    return Dataset(
        name=name,
        modality="table",
        task=task,
        X=frame[features].reset_index(drop=True),
        y=y,
        label_names=label_names,
        source=str(path),
        label_column=label,
    )

"""Data sets: built-in, image folders, tables and text files; splits and K-fold."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from tuneserve.exceptions import InvalidInputError, NotFoundError

from ._builtin import BUILTIN_DATASETS, load_builtin
from ._dataset import LABEL_COLUMN_CANDIDATES, Dataset, Modality, Task
from ._files import (
    TABLE_SUFFIXES,
    clean_columns,
    load_file,
    load_frame,
    read_frame,
    read_text_lines,
    refuse_blank,
)
from ._images import list_images, load_image_folder
from ._splits import Splits, holdout, holdout_indices, kfold, kfold_indices, split, split_indices
from ._unlabeled import DEFAULT_HOLDOUT, Unlabeled, load_unlabeled

#: What the training, evaluation and selection functions take as data: a Dataset, or
#: anything :func:`load` reads.
DataLike = Dataset | str | Path | pd.DataFrame

__all__ = [
    "BUILTIN_DATASETS",
    "DEFAULT_HOLDOUT",
    "LABEL_COLUMN_CANDIDATES",
    "TABLE_SUFFIXES",
    "DataLike",
    "Dataset",
    "Modality",
    "Splits",
    "Task",
    "Unlabeled",
    "holdout",
    "holdout_indices",
    "kfold",
    "kfold_indices",
    "list_images",
    "load",
    "load_unlabeled",
    "read_frame",
    "read_text_lines",
    "refuse_blank",
    "split",
    "split_indices",
]


def load(
    source: str | os.PathLike[str] | pd.DataFrame,
    *,
    label_column: str | None = None,
    text_column: str | None = None,
    task: Task | None = None,
) -> Dataset:
    """Load a labeled data set from a built-in name, an image folder, or a file.

    Args:
        source: ``digits``, ``breast_cancer``, ``wine``, ``iris``, ``diabetes``; a folder
            with one sub-folder of images per class; a CSV / TSV / Parquet / JSONL / JSON
            file with a label column; or a pandas DataFrame with a label column (a table,
            or text when its only other column holds free text, as for files).
        label_column: The label column of a file (default: one named label, target, class
            or y).
        text_column: Treat the file as text with this column (default: detected when the
            only feature column holds free text).
        task: Force ``classification`` or ``regression`` (default: inferred from labels).

    Raises:
        NotFoundError: ``source`` is neither a built-in name nor an existing path.
        DataError: the data cannot be used; the message says why and how to fix it.
    """
    if isinstance(source, pd.DataFrame):
        return _load_dataframe(source, label_column, text_column, task)
    if not isinstance(source, str | os.PathLike):
        raise InvalidInputError(
            f"data must be a built-in name, a path or a pandas DataFrame; got "
            f"{type(source).__name__}. Hint: for arrays, build a DataFrame with a label column"
        )
    if str(source).strip() == "":
        raise NotFoundError(
            f"data source is empty; pass a built-in name ({', '.join(BUILTIN_DATASETS)}), "
            "an image folder or a file"
        )
    file_options = {"label_column": label_column, "text_column": text_column, "task": task}
    given = [f"--{k.replace('_', '-')}" for k, v in file_options.items() if v is not None]
    try:
        path = Path(source).expanduser()
    except RuntimeError as exc:  # "~user" for a user that does not exist
        raise NotFoundError(f"data source {str(source)!r} not found: {exc}") from exc
    if given and (str(source) in BUILTIN_DATASETS or path.is_dir()):
        kind = "built-in data sets" if str(source) in BUILTIN_DATASETS else "image folders"
        raise InvalidInputError(
            f"{', '.join(given)} apply only to CSV/TSV/Parquet/JSONL files, not to {kind} "
            f"like {str(source)!r}. Hint: drop the option"
        )
    if isinstance(source, str) and source in BUILTIN_DATASETS:
        return load_builtin(source)
    if not path.exists():
        raise NotFoundError(
            f"data source {str(source)!r} not found: no such file or folder, and not a built-in "
            f"data set ({', '.join(BUILTIN_DATASETS)})"
        )
    if path.is_dir():
        return load_image_folder(path)
    return load_file(path, label_column=label_column, text_column=text_column, task=task)


def _load_dataframe(
    frame: pd.DataFrame, label_column: str | None, text_column: str | None, task: Task | None
) -> Dataset:
    from tuneserve.exceptions import DataError

    if len(frame) == 0:
        raise DataError("the DataFrame has no rows")
    frame = clean_columns(frame.reset_index(drop=True), "the DataFrame")  # a copy: ours
    return load_frame(frame, "the DataFrame", "dataframe", label_column, text_column, task)

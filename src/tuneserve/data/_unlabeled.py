"""Unlabeled data for self-supervised pretraining: images or texts, no labels needed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuneserve.exceptions import DataError, InvalidInputError, NotFoundError
from tuneserve.preprocessing import read_image

from ._builtin import BUILTIN_DATASETS, load_builtin
from ._files import detect_text_column, pick_column, read_frame, read_text_lines, refuse_blank
from ._images import list_images

#: Share of unlabeled items held out to measure the objective's validation loss.
DEFAULT_HOLDOUT = 0.1
#: Fewest items to pretrain on: two to train on and two to validate with.
MIN_ITEMS = 4
#: Files read as one text per line.
TEXT_LINE_SUFFIXES = (".txt",)


@dataclass(frozen=True, eq=False)
class Unlabeled:
    """Inputs without labels: a list of images ``(h, w, c)`` in [0, 1], or of strings."""

    name: str
    modality: str
    X: list[Any]
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.X)

    @property
    def fingerprint(self) -> str:
        """A content hash of the inputs (checkpoints of a resumed run must match it)."""
        h = hashlib.sha256(f"unlabeled|{self.modality}".encode())
        for item in self.X:
            if isinstance(item, str):
                h.update(item.encode() + b"\0")
            else:
                h.update(str(item.shape).encode())
                h.update(np.ascontiguousarray(item, dtype=np.float32).tobytes())
        return "sha256:" + h.hexdigest()

    def holdout(self, fraction: float, seed: int) -> tuple[Unlabeled, Unlabeled]:
        """A seeded random split into (train, validation); each part has 2 items or more."""
        if len(self) < MIN_ITEMS:
            raise DataError(
                f"{self.name} has {len(self)} item(s); pretraining needs {MIN_ITEMS} or more "
                "(a contrastive loss compares each item with the others)"
            )
        order = np.random.default_rng(seed).permutation(len(self))
        n_val = min(len(self) - 2, max(2, round(len(self) * fraction)))
        pick = lambda idx, tag: Unlabeled(  # noqa: E731
            f"{self.name}[{tag}]", self.modality, [self.X[i] for i in idx], self.source
        )
        return pick(order[n_val:], "train"), pick(order[:n_val], "validation")


def load_unlabeled(source: str | Path, *, text_column: str | None = None) -> Unlabeled:
    """Load inputs to pretrain on, ignoring labels where there are any.

    Args:
        source: A built-in data set (``digits``; its labels are not used); a folder of
            images (flat, or in sub-folders); a ``.txt`` file with one text per line; or a
            CSV / TSV / Parquet / JSONL / JSON file with a text column.
        text_column: The text column of a file (default: ``text``, else the only column of
            free text).

    Raises:
        NotFoundError: no such data set, folder or file.
        DataError: no images or texts in it, or a blank text.
    """
    if isinstance(source, str) and source in BUILTIN_DATASETS:
        data = load_builtin(source)
        if data.modality == "table":
            raise InvalidInputError(
                f"pretrain learns from images or text; {source} is table data. Hint: for "
                "tables, train directly, or use --update to add new rows later"
            )
        return Unlabeled(data.name, data.modality, list(data.X), source)
    path = Path(source).expanduser()
    if not path.exists():
        raise NotFoundError(
            f"unlabeled data {str(source)!r} not found: no such file or folder, and not a "
            f"built-in data set ({', '.join(BUILTIN_DATASETS)})"
        )
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise DataError(f"folder {path} holds no images; pretraining reads image files")
        try:
            images = [read_image(f) for f in files]
        except InvalidInputError as exc:
            raise DataError(str(exc)) from exc
        return Unlabeled(path.name, "image", images, str(path), {"files": [str(f) for f in files]})
    if path.suffix.lower() in TEXT_LINE_SUFFIXES:
        return Unlabeled(path.name, "text", read_text_lines(path), str(path))
    frame = read_frame(path)
    if text_column is None and "text" not in frame.columns:
        text_column = detect_text_column(frame, list(frame.columns))
        if text_column is None:
            raise DataError(
                f"no text column found in {path}; columns are {list(frame.columns)}. "
                "Hint: pass --text-column NAME"
            )
    column = pick_column(frame, text_column or "text", path, "text")
    refuse_blank(frame[column], path, "no text", "fill them in")
    return Unlabeled(path.name, "text", frame[column].astype(str).tolist(), str(path))

"""Image folders: one sub-folder per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tuneserve.exceptions import DataError, InvalidInputError
from tuneserve.preprocessing import IMAGE_SUFFIXES, read_image

from ._dataset import Dataset


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, hidden files skipped."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def load_image_folder(root: Path) -> Dataset:
    """Load ``root/<class>/<image>`` files; class names are the sub-folder names.

    Raises:
        DataError: no class sub-folders, an empty class folder, a single class, or an
            unreadable image (the message names the file).
    """
    from tuneserve.progress import progress_bar

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"image folder {root} has no class sub-folders; expected {root}/<class name>/<image>. "
            "Hint: put each class's images in a folder named after the class"
        )
    files: list[tuple[Path, int]] = []
    for code, class_dir in enumerate(class_dirs):
        images = list_images(class_dir)
        if not images:
            raise DataError(
                f"class folder {class_dir} has no images ({', '.join(IMAGE_SUFFIXES)}). "
                "Hint: add images to it or remove the folder"
            )
        files.extend((path, code) for path in images)
    if len(class_dirs) < 2:
        raise DataError(
            f"image folder {root} holds a single class ({class_dirs[0].name!r}); classification "
            "needs at least 2. Hint: add a sub-folder with images of another class"
        )
    arrays: list[np.ndarray] = []
    with progress_bar(f"reading {root.name}", total=len(files)) as advance:
        for path, _ in files:
            try:
                arrays.append(read_image(path))
            except InvalidInputError as exc:
                raise DataError(str(exc)) from exc
            advance(1)
    return Dataset(
        name=root.name,
        modality="image",
        task="classification",
        X=arrays,
        y=np.array([code for _, code in files], dtype=np.int64),
        label_names=tuple(d.name for d in class_dirs),
        source=str(root),
        meta={"files": [str(p) for p, _ in files]},
    )

"""Real data sets that ship inside scikit-learn (no download)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ._dataset import Dataset

BUILTIN_DATASETS = ("digits", "breast_cancer", "wine", "iris", "diabetes")


def _loader(name: str) -> Callable[..., Any]:
    from sklearn import datasets

    return getattr(datasets, f"load_{name}")


def load_builtin(name: str) -> Dataset:
    """Load one of :data:`BUILTIN_DATASETS`.

    ``digits`` is an image data set: 1,797 grayscale 8x8 images, pixel values 0-16 scaled to
    [0, 1]. ``diabetes`` is a regression table; the others are classification tables.
    """
    bunch = _loader(name)()
    if name == "digits":
        images = (bunch.images.astype(np.float32) / 16.0)[:, :, :, None]  # (n, 8, 8, 1)
        return Dataset(
            name=name,
            modality="image",
            task="classification",
            X=list(images),
            y=bunch.target.astype(np.int64),
            label_names=tuple(str(c) for c in bunch.target_names),
            source=name,
        )
    frame = pd.DataFrame(bunch.data, columns=[str(c) for c in bunch.feature_names])
    if name == "diabetes":
        return Dataset(
            name=name,
            modality="table",
            task="regression",
            X=frame,
            y=bunch.target.astype(np.float64),
            label_names=None,
            source=name,
        )
    return Dataset(
        name=name,
        modality="table",
        task="classification",
        X=frame,
        y=bunch.target.astype(np.int64),
        label_names=tuple(str(c) for c in bunch.target_names),
        source=name,
    )

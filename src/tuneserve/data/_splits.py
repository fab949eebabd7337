"""Seeded, stratified train/validation/test splits and K-fold."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tuneserve.exceptions import DataError, InvalidInputError

from ._dataset import Dataset


@dataclass(frozen=True)
class Splits:
    """The three parts of a data set; every class appears in each (classification)."""

    train: Dataset
    validation: Dataset
    test: Dataset


def _check_fractions(validation: float, test: float) -> None:
    for name, value in (("validation", validation), ("test", test)):
        if not 0.0 < value < 1.0:
            raise InvalidInputError(f"{name} fraction must be in (0, 1), got {value}")
    if validation + test >= 1.0:
        raise InvalidInputError(
            f"validation + test fractions must leave rows for training, got "
            f"{validation} + {test} = {validation + test}"
        )


def _check_class_sizes(data: Dataset, needed: int, purpose: str) -> None:
    for name, count in data.class_counts().items():
        if count < needed:
            raise DataError(
                f"class {name!r} of {data.name} has {count} example(s); {purpose} needs at least "
                f"{needed} per class. Hint: add examples of {name!r} or remove that class"
            )


def split(data: Dataset, validation: float = 0.1, test: float = 0.2, seed: int = 0) -> Splits:
    """Split into train / validation / test, stratified by class for classification.

    The same ``seed`` and data always give the same split.

    Raises:
        DataError: a class has fewer than 3 examples, or a part would hold fewer rows
            than there are classes.
    """
    from sklearn.model_selection import train_test_split

    _check_fractions(validation, test)
    indices = np.arange(len(data))
    stratify = data.y if data.task == "classification" else None
    if data.task == "classification":
        _check_class_sizes(data, 3, "a stratified train/validation/test split")
        k = data.num_classes
        for name, frac in (("validation", validation), ("test", test)):
            if int(np.floor(len(data) * frac)) < k:
                raise DataError(
                    f"a {name} fraction of {frac} gives {int(len(data) * frac)} rows of "
                    f"{data.name}, fewer than its {k} classes. Hint: raise --{name} or add data"
                )
    rest, test_idx = train_test_split(
        indices, test_size=test, random_state=seed, stratify=stratify, shuffle=True
    )
    stratify_rest = data.y[rest] if stratify is not None else None
    train_idx, val_idx = train_test_split(
        rest,
        test_size=validation / (1.0 - test),
        random_state=seed,
        stratify=stratify_rest,
        shuffle=True,
    )
    return Splits(
        train=data.subset(np.sort(train_idx), name=f"{data.name}[train]"),
        validation=data.subset(np.sort(val_idx), name=f"{data.name}[validation]"),
        test=data.subset(np.sort(test_idx), name=f"{data.name}[test]"),
    )


def kfold(data: Dataset, k: int = 5, seed: int = 0) -> Iterator[tuple[Dataset, Dataset]]:
    """Yield ``(train, held_out)`` for each of ``k`` folds, stratified for classification.

    Every row is held out exactly once.

    Raises:
        DataError: a class has fewer than ``k`` examples.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    if k < 2:
        raise InvalidInputError(f"K-fold needs k >= 2, got {k}")
    if k > len(data):
        raise DataError(f"K-fold with k={k} needs at least {k} rows; {data.name} has {len(data)}")
    if data.task == "classification":
        _check_class_sizes(data, k, f"{k}-fold cross-validation")
        splitter: StratifiedKFold | KFold = StratifiedKFold(k, shuffle=True, random_state=seed)
    else:
        splitter = KFold(k, shuffle=True, random_state=seed)
    for fold, (train_idx, held_idx) in enumerate(splitter.split(np.zeros(len(data)), data.y)):
        yield (
            data.subset(train_idx, name=f"{data.name}[fold {fold} train]"),
            data.subset(held_idx, name=f"{data.name}[fold {fold} held out]"),
        )

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


def _allocate(counts: np.ndarray, fraction: float) -> np.ndarray:
    """Rows per class for a part: at least one each, ``round(n * fraction)`` in total where
    possible, shared out by largest remainder so the total stays on target. A fraction of 0
    takes no rows."""
    if fraction <= 0:
        return np.zeros_like(counts)
    exact = counts * fraction
    take = np.maximum(np.floor(exact).astype(np.int64), 1)
    target = max(round(float(counts.sum()) * fraction), len(counts))
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    i = 0
    while take.sum() < target:
        take[order[i % len(order)]] += 1
        i += 1
    while take.sum() > target:  # the one-per-class minimum overshot: trim the largest excess
        excess = np.where(take > 1, take - exact, -np.inf)
        take[int(np.argmax(excess))] -= 1
    return take


def _stratified_indices(
    y: np.ndarray, validation: float, test: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    classes, counts = np.unique(y, return_counts=True)
    n_test, n_val = _allocate(counts, test), _allocate(counts, validation)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for c, count, t, v in zip(classes, counts, n_test, n_val, strict=True):
        while t + v > count - 1:  # keep at least one training example (count >= 3)
            if t >= v:
                t -= 1
            else:
                v -= 1
        idx = rng.permutation(np.flatnonzero(y == c))
        parts[0].append(idx[t + v :])
        parts[1].append(idx[t : t + v])
        parts[2].append(idx[:t])
    train, val, tst = (np.sort(np.concatenate(p)) for p in parts)
    return train, val, tst


def split(data: Dataset, validation: float = 0.1, test: float = 0.2, seed: int = 0) -> Splits:
    """Split into train / validation / test, stratified by class for classification.

    Every class appears in every part (so a class needs 3 examples); each part's share of a
    class follows the fractions as closely as whole rows allow. The same ``seed`` and data
    always give the same split.

    Raises:
        DataError: a class has fewer than 3 examples, or regression data has fewer than 3 rows.
    """
    train_idx, val_idx, test_idx = split_indices(data, validation, test, seed)
    return Splits(
        train=data.subset(train_idx, name=f"{data.name}[train]"),
        validation=data.subset(val_idx, name=f"{data.name}[validation]"),
        test=data.subset(test_idx, name=f"{data.name}[test]"),
    )


def split_indices(
    data: Dataset, validation: float = 0.1, test: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The row indices of :func:`split`: ``(train, validation, test)``."""
    _check_fractions(validation, test)
    rng = np.random.default_rng(seed)
    if data.task == "classification":
        _check_class_sizes(data, 3, "a stratified train/validation/test split")
        return _stratified_indices(data.y, validation, test, rng)
    if len(data) < 3:
        raise DataError(
            f"{data.name} has {len(data)} rows; a train/validation/test split needs 3 or more"
        )
    return _stratified_indices(np.zeros(len(data), dtype=np.int64), validation, test, rng)


def kfold(data: Dataset, k: int = 5, seed: int = 0) -> Iterator[tuple[Dataset, Dataset]]:
    """Yield ``(train, held_out)`` for each of ``k`` folds, stratified for classification.

    Every row is held out exactly once.

    Raises:
        DataError: a class has fewer than ``k`` examples.
    """
    for fold, (train_idx, held_idx) in enumerate(kfold_indices(data, k, seed)):
        yield (
            data.subset(train_idx, name=f"{data.name}[fold {fold} train]"),
            data.subset(held_idx, name=f"{data.name}[fold {fold} held out]"),
        )


def holdout(data: Dataset, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split off ``fraction`` of the rows (stratified, every class in both parts), e.g. a
    validation set inside a cross-validation fold.

    Raises:
        DataError: a class has fewer than 2 examples.
    """
    kept, held = holdout_indices(data, fraction, seed)
    return data.subset(kept, name=f"{data.name}[train]"), data.subset(
        held, name=f"{data.name}[held]"
    )


def holdout_indices(data: Dataset, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The row indices of :func:`holdout`: ``(kept, held)``."""
    if not 0.0 < fraction < 1.0:
        raise InvalidInputError(f"the held-out fraction must be in (0, 1), got {fraction}")
    if data.task == "classification":
        _check_class_sizes(data, 2, "a stratified holdout")
        y = data.y
    else:
        if len(data) < 2:
            raise DataError(f"{data.name} has {len(data)} rows; a holdout needs 2 or more")
        y = np.zeros(len(data), dtype=np.int64)
    kept, held, _ = _stratified_indices(y, fraction, 0.0, np.random.default_rng(seed))
    return kept, held


def kfold_indices(
    data: Dataset, k: int = 5, seed: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The row indices of :func:`kfold`: ``(train, held_out)`` per fold."""
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
    yield from splitter.split(np.zeros(len(data)), data.y)

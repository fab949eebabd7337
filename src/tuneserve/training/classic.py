"""scikit-learn models on tables (the full set of estimators comes with strategies)."""

from __future__ import annotations

from sklearn.linear_model import LogisticRegression

from tuneserve.data import Dataset
from tuneserve.exceptions import DataError
from tuneserve.preprocessing import TablePreprocessor

from ._result import TrainedModel


def train_logistic_regression(
    train: Dataset, validation: Dataset | None = None, *, C: float = 1.0, max_iter: int = 2000
) -> TrainedModel:
    """Fit a standardized logistic regression on a classification table.

    Raises:
        DataError: the data is not a classification table.
    """
    if train.modality != "table" or train.task != "classification":
        raise DataError(
            f"logistic regression needs a classification table; {train.name} is "
            f"{train.modality} {train.task}"
        )
    preprocessor = TablePreprocessor().fit(train.X)
    model = LogisticRegression(C=C, max_iter=max_iter)
    model.fit(preprocessor.transform(train.X)["input"], train.y)
    metrics = {}
    if validation is not None:
        val = preprocessor.transform(validation.X)["input"]
        metrics["val_accuracy"] = float(model.score(val, validation.y))
    return TrainedModel(
        model=model,
        preprocessor=preprocessor,
        task="classification",
        label_names=train.label_names,
        data_fingerprint=train.fingerprint,
        config={"trainer": "train_logistic_regression", "C": C, "max_iter": max_iter},
        metrics=metrics,
    )

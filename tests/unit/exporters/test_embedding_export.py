"""Exporting an embedding package: what the exporters refuse before any work."""

from __future__ import annotations

import pytest

from tuneserve.exceptions import InvalidInputError
from tuneserve.exporters import export_sklearn, export_torch


def test_embedding_exports_refuse_labels_and_estimators(tmp_path, cancer_model, cancer_splits):
    with pytest.raises(InvalidInputError, match="scikit-learn estimators export as"):
        export_sklearn(
            cancer_model.model,
            cancer_model.preprocessor,
            tmp_path / "x",
            task="embedding",
            sample_inputs=cancer_splits.test.X,
        )
    with pytest.raises(InvalidInputError, match="an embedding package has no labels"):
        export_torch(
            object(),  # refused before the model is touched
            cancer_model.preprocessor,
            tmp_path / "y",
            task="embedding",
            sample_inputs=cancer_splits.test.X,
            label_names=["a", "b"],
        )

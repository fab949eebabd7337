"""The train/serve parity promise: a package predicts what the in-memory model predicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tuneserve.exceptions import ExportError
from tuneserve.exporters import PARITY_TOLERANCE, export_sklearn, export_torch, export_torchscript
from tuneserve.package import Package
from tuneserve.preprocessing import TablePreprocessor
from tuneserve.runtime import Predictor


def test_torch_cnn_package_matches_memory_on_test_split(
    digits_model, digits_splits, digits_package
):
    test = digits_splits.test
    expected = digits_model.predict_proba(test.X)
    actual = Predictor(digits_package, batch_size=50).predict_proba(test.X)
    assert actual.shape == (len(test), 10)
    assert np.max(np.abs(actual - expected)) <= PARITY_TOLERANCE
    np.testing.assert_allclose(actual.sum(axis=1), 1.0, atol=1e-5)
    # and the model learned something real
    assert np.mean(actual.argmax(1) == test.y) > 0.85


def test_sklearn_package_matches_memory_on_test_split(cancer_model, cancer_splits, cancer_package):
    test = cancer_splits.test
    expected = cancer_model.predict_proba(test.X)
    predictor = Predictor(cancer_package)
    actual = predictor.predict_proba(test.X)
    assert np.max(np.abs(actual - expected)) <= PARITY_TOLERANCE
    # rows as dicts and as lists give the same answer as the DataFrame
    rows = test.X.to_dict("records")
    np.testing.assert_allclose(predictor.predict_proba(rows), actual, atol=1e-7)
    lists = test.X.to_numpy().tolist()
    np.testing.assert_allclose(predictor.predict_proba(lists), actual, atol=1e-7)
    assert np.mean(actual.argmax(1) == test.y) > 0.9


def test_sklearn_regressor_parity(tmp_path):
    from sklearn.linear_model import Ridge

    from tuneserve.data import load, split

    parts = split(load("diabetes"), seed=1)
    pre = TablePreprocessor().fit(parts.train.X)
    model = Ridge().fit(pre.transform(parts.train.X)["input"], parts.train.y)
    pkg = export_sklearn(
        model, pre, tmp_path / "ridge", task="regression", sample_inputs=parts.test.X
    )
    values = Predictor(pkg).run(parts.test.X)
    expected = model.predict(pre.transform(parts.test.X)["input"])
    assert values.shape == (len(parts.test),)
    # float32 graph vs float64 sklearn, on targets in the hundreds: relative 1e-6
    np.testing.assert_allclose(values, expected, rtol=1e-5)
    assert pkg.manifest.graph.output_kind == "prediction"


def test_torchscript_export_matches_torch(digits_model, digits_splits, tmp_path):
    path = export_torchscript(
        digits_model.model, digits_model.preprocessor, digits_splits.test.X[:4], tmp_path / "m.pt"
    )
    loaded = torch.jit.load(str(path))
    x = torch.from_numpy(digits_model.preprocessor.transform(digits_splits.test.X)["input"])
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), digits_model.model(x).numpy(), atol=1e-5)
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_package_carries_torchscript_extra(digits_package):
    pkg = Package.load(digits_package)
    assert "extras/model.torchscript.pt" in pkg.manifest.files
    scripted = torch.jit.load(str(pkg.path / "extras/model.torchscript.pt"))
    assert isinstance(scripted, torch.jit.ScriptModule)


def test_text_package_with_tokenizer_parity(text_model, text_package):
    model, pre, texts, labels = text_model
    pkg = Package.load(text_package)
    assert pkg.manifest.graph.inputs == ["input_ids", "attention_mask"]
    assert (pkg.path / "assets/tokenizer.json").is_file()
    predictor = Predictor(pkg, batch_size=4)  # batches of different padded lengths
    feed = {k: torch.from_numpy(v) for k, v in pre.transform(texts).items()}
    with torch.no_grad():
        expected = torch.softmax(model(**feed), -1).numpy()
    assert np.max(np.abs(predictor.predict_proba(texts) - expected)) <= PARITY_TOLERANCE
    assert [p.label for p in predictor.predict(texts)] == [
        "positive" if y else "negative" for y in labels
    ]
    # a longer text than any seen at export still runs (dynamic sequence axis), truncated
    long = " ".join(["wonderful"] * 200)
    assert predictor.predict([long])[0].label in ("negative", "positive")


def test_export_refuses_a_model_that_breaks_parity(tmp_path, digits_splits):
    class Flaky(nn.Module):
        """Differs between tracing and running: dropout left in training mode."""

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.fc(x.flatten(1))
            return logits + torch.rand_like(logits) * 10  # not a function of the input

    from tuneserve.preprocessing import ImagePreprocessor

    pre = ImagePreprocessor().fit(digits_splits.train.X)
    with pytest.raises(ExportError, match="disagrees with the original"):
        export_torch(
            Flaky(),
            pre,
            tmp_path / "flaky",
            task="classification",
            sample_inputs=digits_splits.test.X[:16],
            label_names=[str(i) for i in range(10)],
        )
    assert not (tmp_path / "flaky").exists()


def test_sklearn_export_refuses_classes_out_of_order(tmp_path, cancer_splits):
    from sklearn.linear_model import LogisticRegression

    pre = TablePreprocessor().fit(cancer_splits.train.X)
    x = pre.transform(cancer_splits.train.X)["input"]
    model = LogisticRegression(max_iter=500).fit(x, np.where(cancer_splits.train.y == 0, 5, 7))
    with pytest.raises(ExportError, match=r"classes_ are \[5, 7\]"):
        export_sklearn(
            model,
            pre,
            tmp_path / "bad",
            task="classification",
            sample_inputs=cancer_splits.test.X,
            label_names=["malignant", "benign"],
        )


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer"])
def test_logistic_regression_parity_on_every_builtin_table(name, tmp_path):
    from tuneserve.data import load, split
    from tuneserve.training import train_logistic_regression

    parts = split(load(name), seed=3)
    model = train_logistic_regression(parts.train, parts.validation)
    pkg = model.export(tmp_path / name, parts.test.X)
    probs = Predictor(pkg).predict_proba(parts.test.X)
    assert np.max(np.abs(probs - model.predict_proba(parts.test.X))) <= PARITY_TOLERANCE
    assert np.mean(probs.argmax(1) == parts.test.y) > 0.85

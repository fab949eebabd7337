"""``evaluate`` on real packages through ONNX Runtime: held-out rows, reports, tracking."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
from sklearn import metrics

from tuneserve.data import load, split
from tuneserve.exceptions import InvalidInputError
from tuneserve.runtime import Predictor


@pytest.fixture(scope="module")
def wine_package(tmp_path_factory):
    from tuneserve import train

    out = tmp_path_factory.mktemp("eval") / "wine"
    train("wine", out=out, backbone="logreg")
    return out


def test_scores_the_held_out_test_split_through_the_runtime(wine_package):
    from tuneserve.evaluation import evaluate

    result = evaluate(wine_package, "wine", bootstrap=50)
    test = split(load("wine"), seed=0).test  # the split train() used
    assert "held-out test split" in result.rows and len(result.y) == len(test)
    proba = Predictor(wine_package).predict_proba(test.X)
    np.testing.assert_allclose(result.output, proba)
    assert result.metrics["accuracy"].value == pytest.approx(
        metrics.accuracy_score(test.y, proba.argmax(1))
    )
    assert sum(c["support"] for c in result.details["per_class"].values()) == len(test)
    assert np.asarray(result.details["confusion_matrix"]).sum() == len(test)
    every = evaluate(wine_package, "wine", rows="all", bootstrap=0)
    assert every.rows == "all rows" and len(every.y) == len(load("wine"))
    doc = result.to_dict()
    assert doc["n"] == len(test) and set(doc["metrics"]["f1_macro"]) == {"value", "low", "high"}


def test_the_runtime_reports_progress_per_batch(wine_package):
    rows = load("wine").X
    steps: list[int] = []
    Predictor(wine_package, batch_size=64).run(rows, progress=steps.append)
    assert steps == [64, 64, len(rows) - 128]


def test_a_dataframe_of_the_training_rows_is_the_training_data(wine_package, tmp_path):
    from tuneserve import train
    from tuneserve.evaluation import evaluate

    wine = load("wine")
    frame = wine.X.assign(label=[wine.label_names[code] for code in wine.y])
    result = evaluate(wine_package, frame, bootstrap=0)  # the rows "wine" holds: test split
    assert "held-out test split" in result.rows and len(result.y) == len(split(wine).test)
    trained = train(frame.sample(frac=1, random_state=1), out=tmp_path / "df", backbone="logreg")
    again = evaluate(trained.package, frame, bootstrap=0)  # other row order: other data
    assert again.rows.startswith("all rows") and len(again.y) == len(frame)


def test_other_data_is_scored_whole_and_test_rows_need_the_training_data(wine_package):
    from tuneserve.evaluation import evaluate

    data = load("wine").subset(np.arange(0, 178, 2), name="wine-even")
    result = evaluate(wine_package, data, bootstrap=0)
    assert result.rows.startswith("all rows (not the package's training data)")
    with pytest.raises(InvalidInputError, match="not the data package 'wine' was trained on"):
        evaluate(wine_package, data, rows="test")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("iris", "classes the package 'wine' does not know: setosa"),
        ("diabetes", "does classification but diabetes is regression"),
        ("digits", "takes table inputs but digits holds image"),
    ],
)
def test_data_that_does_not_fit_the_package_is_refused(wine_package, data, message):
    from tuneserve.evaluation import evaluate

    with pytest.raises(InvalidInputError, match=message):
        evaluate(wine_package, data, bootstrap=0)


def test_html_report_with_embedded_plots_and_an_mlflow_run(wine_package, tmp_path, monkeypatch):
    from tuneserve import evaluate  # the API layer: the evaluation, then its MLflow run
    from tuneserve.registry._store import client, current_store, experiment_id

    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    report = tmp_path / "out" / "wine.html"
    evaluate(wine_package, "wine", bootstrap=20, report=report, track=True)
    page = report.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 4  # confusion matrix, ROC, per class, reliability
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "http" not in page.replace("http-equiv", "")  # nothing to fetch: readable offline
    assert not list(report.parent.glob(".*tmp*"))  # written whole, no temporary left

    store = current_store()
    mlflow = client(store)
    runs = mlflow.search_runs([experiment_id(mlflow, store)])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["tuneserve.kind"] == "evaluate"
    assert run.data.metrics["eval_accuracy"] == pytest.approx(
        evaluate(wine_package, "wine", bootstrap=0, track=False).metrics["accuracy"].value
    )
    assert "eval_accuracy_low" in run.data.metrics
    artifacts = [a.path for a in mlflow.list_artifacts(run.info.run_id)]
    assert artifacts == ["report.html"]

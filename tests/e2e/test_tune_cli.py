"""``tuneserve tune`` as a user runs it: a separate process, the best package registered, the
study and each trial in MLflow, and bad input as one clear line."""

from __future__ import annotations

import json

import pytest
from test_cli import assert_one_line_error, tuneserve


def test_tune_registers_the_best_and_nests_each_trial_under_the_study_run(tmp_path) -> None:
    from tuneserve.registry._store import client, current_store, experiment_id

    out = tmp_path / "iris"
    proc = tuneserve(
        "tune", "iris", "--out", str(out), "--backbone", "logreg", "--backbone", "sgd",
        "--trials", "4", "--sampler", "random", "--study", "iris-cli", "--register",
        "iris-tuned", "--track",
    )  # fmt: skip
    assert "study iris-cli" in proc.stdout and "best: trial" in proc.stdout
    assert f"report: {out / 'report.html'}" in proc.stdout
    # no terminal: one line per finished trial instead of a bar
    assert sum(line.startswith("trial ") for line in proc.stdout.splitlines()) == 4
    record = json.loads((out / "tune.json").read_text())
    manifest = json.loads((out / "best" / "manifest.json").read_text())
    assert manifest["lineage"]["tuning"]["study"] == "iris-cli"
    assert manifest["lineage"]["tuning"]["trial"] == record["best_trial"]
    shown = json.loads(tuneserve("registry", "show", "iris-tuned/1", "--json").stdout)
    assert shown[0]["package_id"] == manifest["package_id"]

    store = current_store()
    mlflow = client(store)
    runs = mlflow.search_runs([experiment_id(mlflow, store)], max_results=1000)
    study = [r for r in runs if r.data.tags.get("tuneserve.kind") == "tune"
             and r.data.tags.get("tuneserve.study", "").endswith("#iris-cli")]  # fmt: skip
    assert len(study) == 1 and study[0].info.status == "FINISHED"
    parent = study[0].info.run_id
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    trials = [r for r in nested if r.data.tags.get("tuneserve.kind") == "tune-trial"]
    assert len(trials) == 4
    assert {r.data.tags["tuneserve.trial"] for r in trials} == {"0", "1", "2", "3"}
    assert any(r.data.tags.get("tuneserve.package_id") == manifest["package_id"] for r in nested)
    assert "best_accuracy" in study[0].data.metrics


@pytest.mark.slow
def test_a_space_file_narrows_the_search(tmp_path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("C: {low: 0.5, high: 2.0}\nmax_iter: 500\n")
    args = ["tune", "wine", "--out", str(tmp_path / "w"), "--backbone", "logreg"]
    out = json.loads(tuneserve(*args, "--trials", "2", "--space", str(space), "--json").stdout)
    assert 0.5 <= out["best_params"]["C"] <= 2.0
    assert set(out["best_params"]) == {"C"}  # max_iter is fixed, not searched
    config = json.loads((tmp_path / "w" / "best" / "manifest.json").read_text())["lineage"]
    assert config["config"]["max_iter"] == 500


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_bad_input_is_one_line(tmp_path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("learning_rat: {low: 0.001, high: 0.01}\n")
    base = ["tune", "wine", "--backbone", "mlp", "--out", str(tmp_path / "x")]
    assert_one_line_error(
        tuneserve(*base, "--space", str(space), check=False),
        "unknown parameter 'learning_rat'",
        "learning_rate",
    )
    space.write_text("epochs: {low: 9, high: 2}\n")
    assert_one_line_error(
        tuneserve(*base, "--space", str(space), check=False), "[9, 2] is inverted"
    )
    assert_one_line_error(
        tuneserve(*base, "--metric", "mse", check=False), "unknown metric 'mse'", "accuracy"
    )
    assert_one_line_error(
        tuneserve(*base, "--timeout", "soon", check=False), "--timeout 'soon' is not a duration"
    )
    assert_one_line_error(
        tuneserve(*base, "--storage", "postgresql://me:secret@127.0.0.1:9/db", check=False),
        "cannot reach the study storage postgresql://me:***@127.0.0.1:9/db",
    )
    assert not (tmp_path / "x").exists()

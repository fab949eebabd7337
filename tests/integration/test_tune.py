"""``tuneserve.tune``: real Optuna studies on real data, each trial a real package.

Kept small (tables, few epochs) so the whole file runs in well under a minute."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from tuneserve.data import load
from tuneserve.exceptions import InvalidInputError
from tuneserve.package import Package
from tuneserve.tuning import TuneError, tune

#: an MLP space where some learning rates are far too small: the pruner has work to do
MLP_SPACE = {
    "learning_rate": {"low": 1e-6, "high": 3e-2, "log": True},
    "epochs": 12,
    "patience": 12,
    "batch_size": 32,
}


def _storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


def _study(tmp_path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=_storage(tmp_path))


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_mlp_study_prunes_bad_trials_and_keeps_only_the_best_package(tmp_path) -> None:
    out = tmp_path / "wine"
    result = tune(
        "wine",
        out,
        backbones=["mlp"],
        trials=8,
        sampler_name="random",
        pruner_name="median",
        space=MLP_SPACE,
        storage=_storage(tmp_path),
        study="wine-mlp",
    )
    study = _study(tmp_path, "wine-mlp")
    states = [t.state for t in study.trials]
    assert len(study.trials) == 8
    assert optuna.trial.TrialState.PRUNED in states, [t.intermediate_values for t in study.trials]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    # a pruned trial stopped before its 12 epochs, and left neither checkpoint nor package
    assert all(len(t.intermediate_values) < 12 for t in pruned)
    assert not any((out / "trials" / ".checkpoints").glob("trial-*"))
    kept = sorted(p.name for p in (out / "trials").glob("trial-*"))
    assert kept == [f"trial-{result.best_trial:04d}"]
    # the best is the study's best, and its package says where it came from
    assert result.best_value == pytest.approx(study.best_value)
    lineage = result.package.manifest.lineage
    assert lineage.tuning.study == "wine-mlp" and lineage.tuning.trial == result.best_trial
    assert lineage.tuning.params == study.best_params
    assert lineage.config["learning_rate"] == pytest.approx(study.best_params["learning_rate"])
    Package.load(out / "best")  # verified: checksums hold
    assert result.compute == sum(len(t.intermediate_values) for t in study.trials)
    record = json.loads((out / "tune.json").read_text())
    assert record["best_trial"] == result.best_trial
    html = (out / "report.html").read_text()
    assert "wine-mlp" in html and "<img" in html


def test_scikit_learn_trials_use_training_rows_as_fidelity(tmp_path) -> None:
    result = tune(
        "breast_cancer",
        tmp_path / "rf",
        backbones=["random-forest"],
        trials=3,
        sampler_name="random",
        pruner_name="none",
        space={"n_estimators": {"low": 20, "high": 60}},
        storage=_storage(tmp_path),
        study="rf",
    )
    study = _study(tmp_path, "rf")
    assert study.user_attrs["fidelity"] == "rows"
    # 1/9, 1/3 and all of the training rows: three rungs per trial
    assert all(sorted(t.intermediate_values) == [1, 2, 3] for t in study.trials)
    assert (
        result.package.manifest.lineage.config["n_estimators"] == study.best_params["n_estimators"]
    )


def test_folds_report_each_fold_and_the_best_is_trained_once_more(tmp_path) -> None:
    result = tune(
        "iris",
        tmp_path / "cv",
        backbones=["logreg"],
        trials=2,
        folds=3,
        sampler_name="random",
        pruner_name="none",
        storage=_storage(tmp_path),
        study="cv",
    )
    study = _study(tmp_path, "cv")
    assert all(sorted(t.intermediate_values) == [1, 2, 3] for t in study.trials)
    assert not (tmp_path / "cv" / "trials").exists() or not any(
        (tmp_path / "cv" / "trials").glob("trial-*")
    )
    assert result.package.manifest.lineage.tuning.trial == study.best_trial.number
    assert result.package.manifest.lineage.config["C"] == pytest.approx(study.best_params["C"])


def test_several_backbones_compete_and_grid_searches_every_point(tmp_path) -> None:
    result = tune(
        "iris",
        tmp_path / "grid",
        backbones=["logreg", "sgd"],
        sampler_name="grid",
        pruner_name="none",
        space={"replace": True, "logreg": {"C": [0.1, 10.0]}, "sgd": {"alpha": [1e-4, 1e-2]}},
        storage=_storage(tmp_path),
        study="grid",
    )
    study = _study(tmp_path, "grid")
    points = {
        (t.params["model"], t.params.get("logreg.C"), t.params.get("sgd.alpha"))
        for t in study.trials
    }
    # each model's own grid, each point once: 2 + 2 trials, not the 2 x 2 x 2 product
    assert len(study.trials) == 4 == len(points)
    assert {t.params["model"] for t in study.trials} == {"logreg", "sgd"}
    assert result.package.manifest.lineage.backbone.name == study.best_params["model"]


@pytest.mark.parametrize(
    "sampler",
    [
        "gp",
        pytest.param("cmaes", marks=pytest.mark.slow),
        pytest.param("tpe", marks=pytest.mark.slow),
    ],
)
def test_each_sampler_runs(tmp_path, sampler) -> None:
    result = tune(
        "iris",
        tmp_path / sampler,
        backbones=["logreg"],
        trials=3,
        sampler_name=sampler,
        storage=_storage(tmp_path),
        study=sampler,
    )
    assert result.counts["complete"] == 3
    assert _study(tmp_path, sampler).user_attrs["sampler"] == sampler


def test_a_rerun_continues_the_study_up_to_the_total(tmp_path) -> None:
    common = dict(
        backbones=["logreg"],
        sampler_name="random",
        storage=_storage(tmp_path),
        study="again",
    )
    tune("iris", tmp_path / "again", trials=2, **common)
    result = tune("iris", tmp_path / "again", trials=4, **common)
    assert len(_study(tmp_path, "again").trials) == 4
    assert result.counts.get("complete", 0) + result.counts.get("pruned", 0) == 4
    # the same study name on other data is refused, not mixed in
    with pytest.raises(TuneError, match="another data"):
        tune("wine", tmp_path / "again", trials=5, **common)


def test_bad_input_is_refused_before_any_trial(tmp_path) -> None:
    kw = dict(backbones=["mlp"], storage=_storage(tmp_path), trials=1)
    with pytest.raises(InvalidInputError, match=r"unknown parameter 'lr'.*valid: .*learning_rate"):
        tune("wine", tmp_path / "a", space={"lr": [0.1]}, **kw)
    with pytest.raises(InvalidInputError, match=r"\[0.1, 0.01\] is inverted"):
        tune("wine", tmp_path / "b", space={"learning_rate": {"low": 0.1, "high": 0.01}}, **kw)
    with pytest.raises(InvalidInputError, match=r"\[3, 3\] is empty"):
        tune("wine", tmp_path / "c", space={"epochs": {"low": 3, "high": 3}}, **kw)
    with pytest.raises(InvalidInputError, match=r"unknown metric 'r2'.*known: accuracy"):
        tune("wine", tmp_path / "d", metric="r2", **kw)
    with pytest.raises(InvalidInputError, match="optimizer must be one of"):
        tune("wine", tmp_path / "e", space={"optimizer": ["adamw", "lion"]}, **kw)
    with pytest.raises(InvalidInputError, match="--sampler 'bayes' is not known"):
        tune("wine", tmp_path / "f", sampler_name="bayes", **kw)
    with pytest.raises(TuneError, match="cannot reach the study storage postgresql://u:\\*\\*\\*@"):
        tune("wine", tmp_path / "g", backbones=["mlp"], storage="postgresql://u:pw@127.0.0.1:1/x")
    assert not any((tmp_path / n).exists() for n in "abcdef")


def test_a_timeout_shorter_than_one_trial_says_how_long_one_takes(tmp_path) -> None:
    slow = {"epochs": 400, "patience": 400, "learning_rate": 1e-3, "batch_size": 8}
    with pytest.raises(TuneError) as caught:
        tune(
            load("wine"),
            tmp_path / "t",
            backbones=["mlp"],
            timeout=1.5,
            space=slow,
            storage=_storage(tmp_path),
            study="t",
        )
    message = str(caught.value)
    assert "--timeout 1.5s ended before any trial finished" in message
    assert "of 400 epochs" in message and "an epoch takes" in message


@pytest.mark.slow
def test_text_strategies_compete_on_minilm(tmp_path) -> None:
    """MiniLM on real sentences (the first line of library docstrings, labelled by library):
    the strategy is a parameter, each with its own learning rate."""
    import inspect

    import numpy
    import pandas as pd
    import sklearn.linear_model

    rows = []
    for module in (numpy, pd, sklearn.linear_model):
        lines = [
            inspect.getdoc(obj).strip().splitlines()[0]
            for name, obj in sorted(vars(module).items())
            if not name.startswith("_") and callable(obj) and inspect.getdoc(obj)
        ]
        rows += [{"text": t, "label": module.__name__} for t in lines if len(t) > 15][:20]
    pd.DataFrame(rows).to_csv(tmp_path / "docs.csv", index=False)
    result = tune(
        str(tmp_path / "docs.csv"),
        tmp_path / "text",
        trials=3,
        sampler_name="random",
        pruner_name="none",
        space={"strategy": ["probe", "partial"], "epochs": 2, "max_length": 32},
        storage=_storage(tmp_path),
        study="text",
    )
    study = _study(tmp_path, "text")
    assert {t.params["model"] for t in study.trials} <= {"minilm/probe", "minilm/partial"}
    best = result.package.manifest.lineage
    assert best.backbone.strategy == study.best_params["model"].split("/")[1]
    assert best.config["max_length"] == 32 and best.config["epochs"] == 2


def test_a_study_whose_every_trial_fails_stops_and_names_the_error(tmp_path) -> None:
    with pytest.raises(TuneError, match=r"no trial .* finished; first error: training diverged"):
        tune(
            "iris",
            tmp_path / "nan",
            backbones=["mlp"],
            trials=2,
            space={"learning_rate": 1e12, "epochs": 2},
            storage=_storage(tmp_path),
            study="nan",
        )
    study = _study(tmp_path, "nan")
    assert len(study.trials) == 5  # stopped after five failures in a row, not for ever


def test_a_trial_interrupted_twice_continues_from_its_first_checkpoints(tmp_path) -> None:
    from tuneserve.training import on_epoch

    kw = dict(
        backbones=["mlp"],
        trials=1,
        space={"epochs": 9, "patience": 9, "learning_rate": 1e-3, "batch_size": 16},
        storage=_storage(tmp_path),
        study="ctrl-c",
    )

    def interrupt_at(epoch: int):
        def callback(record: dict[str, float]) -> None:
            if record["epoch"] == epoch:
                raise KeyboardInterrupt

        return callback

    for epoch in (3, 6):  # Ctrl-C after epoch 3, and again after epoch 6
        with on_epoch(interrupt_at(epoch)), pytest.raises(KeyboardInterrupt):
            tune("wine", tmp_path / "out", **kw)
    result = tune("wine", tmp_path / "out", **kw)
    study = _study(tmp_path, "ctrl-c")
    last = study.trials[-1]
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL", "COMPLETE"]
    assert last.user_attrs["retried_from"] == 0 and result.requeued == [0]
    assert sorted(last.intermediate_values) == [7, 8, 9]  # went on after epoch 6
    assert not any((tmp_path / "out" / "trials" / ".checkpoints").iterdir())


def test_backbones_of_one_study_are_pruned_on_one_scale(tmp_path) -> None:
    """Regression: an MLP learns standardized targets; a forest's row rungs are measured the
    same way, so a pruner ranks both on one scale."""
    tune(
        "diabetes",
        tmp_path / "mixed",
        backbones=["mlp", "random-forest"],
        trials=4,
        sampler_name="random",
        pruner_name="none",
        space={"mlp": {"epochs": 3}, "random-forest": {"n_estimators": 20}},
        storage=_storage(tmp_path),
        study="mixed",
    )
    study = _study(tmp_path, "mixed")
    firsts = [t.intermediate_values[1] for t in study.trials]
    assert {t.params["model"] for t in study.trials} == {"mlp", "random-forest"}
    assert all(0 < v < 3 for v in firsts), firsts  # standardized MSE, not raw (~3000)
    assert all(t.value > 1000 for t in study.trials)  # the trial's value is the raw mse


def test_a_study_is_not_continued_with_other_folds(tmp_path) -> None:
    kw = dict(backbones=["logreg"], trials=1, storage=_storage(tmp_path), study="f")
    tune("iris", tmp_path / "f", folds=3, **kw)
    with pytest.raises(TuneError, match=r"another split \(--seed, --folds\)"):
        tune("iris", tmp_path / "f", **kw)


def test_a_trial_is_never_pruned_after_its_last_epoch(tmp_path) -> None:
    """ASHA's rungs (1, 3, 9, ... epochs) know no last epoch: a trial that has done all its
    epochs is kept, not pruned with its work thrown away."""
    from tuneserve.tuning import Setup, build_space
    from tuneserve.tuning._objective import Objective

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return True

    wine = load("wine")
    for epochs, state in ((1, "COMPLETE"), (2, "PRUNED")):
        space = build_space("table", "classification", ["mlp"], {"epochs": epochs})
        setup = Setup(wine, space, "accuracy", trials_dir=tmp_path / f"e{epochs}", study="p")
        study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
        study.optimize(Objective(setup), n_trials=1)
        assert study.trials[0].state.name == state
        assert sorted(study.trials[0].intermediate_values) == [1]


def test_a_grid_ends_with_its_last_point(tmp_path) -> None:
    result = tune(
        "iris",
        tmp_path / "g",
        backbones=["logreg"],
        trials=5,
        sampler_name="grid",
        space={"C": [0.1, 1.0]},
        storage=_storage(tmp_path),
        study="g",
    )
    assert result.counts == {"complete": 2}

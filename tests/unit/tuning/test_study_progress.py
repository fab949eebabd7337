"""The progress of a running study: the bar's counts through Optuna's callback, and one plain
line per finished trial."""

from __future__ import annotations

import optuna
import pytest

from tuneserve.tuning._progress import study_progress, trial_line

optuna.logging.set_verbosity(optuna.logging.ERROR)


class Broken(RuntimeError):
    pass


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("backbone", "cnn")
    trial.set_user_attr("strategy", "full")
    trial.set_user_attr("seconds", 1.25)
    if trial.number == 1:
        trial.set_user_attr("error", "no memory left")
        raise Broken("no memory left")
    if trial.number == 2:
        trial.report(0.1, 1)
        raise optuna.TrialPruned()
    return x


def run(trials: int | None, timeout: float | None) -> optuna.Study:
    study = optuna.create_study(
        study_name="digits-tune", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    with study_progress(study, trials=trials, timeout=timeout) as callback:
        study.optimize(objective, n_trials=4, callbacks=[callback], catch=(Broken,))
    return study


@pytest.mark.parametrize(
    ("trials", "timeout", "shown"),
    [(4, None, "3/4"), (None, 600.0, "0/600"), (None, None, "3/?")],
)
def test_bar_counts_trials_or_seconds(trials, timeout, shown, monkeypatch, capsys):
    monkeypatch.setenv("TUNESERVE_PROGRESS", "1")
    monkeypatch.setenv("COLUMNS", "200")  # rich draws 80 columns on a captured stream
    study = run(trials, timeout)
    err = capsys.readouterr().err
    assert "tuning digits-tune" in err and shown in err
    # the failed trial is no trial done: Optuna's MaxTrialsCallback(states=DONE) replaces it
    assert "done=3" in err and "pruned=1" in err and "failed=1" in err
    assert f"best={study.best_value:.4g}" in err


def test_callback_is_harmless_without_a_bar(monkeypatch, capsys):
    monkeypatch.setenv("TUNESERVE_PROGRESS", "0")
    study = run(None, 0.5)
    assert len(study.trials) == 4 and capsys.readouterr().err == ""


def test_trial_line_says_state_value_params_and_time():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=3, catch=(Broken,))
    done, failed, pruned = study.trials
    line = trial_line(done, "val_accuracy")
    assert line.startswith(f"trial 0 complete: val_accuracy={done.value:.4g} (cnn/full; x=")
    assert line.endswith(" 1.2 s")
    assert trial_line(failed, "val_accuracy").endswith("1.2 s: no memory left")
    assert trial_line(pruned, "val_accuracy").startswith("trial 2 pruned at rung 1: ")

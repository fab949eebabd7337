"""The study's HTML report, on real in-memory Optuna studies: every section, one image per
plot, the pruned and failed trials in the table, why a plot is missing, a masked password."""

from __future__ import annotations

import html
import re

import matplotlib
import optuna
import pytest

from tuneserve.redact import mask_url
from tuneserve.tuning._report import tune_report

optuna.logging.set_verbosity(optuna.logging.ERROR)

SECTIONS = (
    "Optimization history",
    "Parameter importances",
    "Parallel coordinates",
    "Intermediate values",
    "Trials, best first",
)


class Broken(RuntimeError):
    pass


def objective(trial: optuna.Trial) -> float:
    backbone = trial.suggest_categorical("backbone", ["cnn", "mlp"])
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    width = trial.suggest_int("width", 8, 64)
    trial.set_user_attr("backbone", backbone)
    trial.set_user_attr("strategy", "full")
    trial.set_user_attr("seconds", 0.5)
    if trial.number == 3:
        trial.set_user_attr("error", "out of memory at batch 64")
        raise Broken("out of memory")
    value = 0.0
    for epoch in range(1, 5):
        value = min(1.0, lr * 10 * epoch + width / 1000 + (0.1 if backbone == "cnn" else 0))
        trial.report(value, epoch)
        if trial.should_prune():
            trial.set_user_attr("steps", epoch)
            raise optuna.TrialPruned()
    trial.set_user_attr("steps", 4)
    trial.set_user_attr("package", f"trials/trial-{trial.number:04d}")
    return value


def study_of(n: int, **attrs: object) -> optuna.Study:
    study = optuna.create_study(
        study_name="digits-tune",
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    study.optimize(objective, n_trials=n, catch=(Broken,))
    return study


@pytest.fixture(scope="module")
def searched() -> optuna.Study:
    study = study_of(
        16,
        metric="val_accuracy",
        direction="maximize",
        data="digits",
        sampler="random",
        pruner="median",
        fidelity="epoch",
        storage="postgresql://tune:s3cret@db.example:5432/studies",
        started_at="2026-11-30T10:00:00+00:00",
    )
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.PRUNED in states and optuna.trial.TrialState.FAIL in states
    return study


@pytest.fixture
def fast_plots(monkeypatch):
    """Figures closed instead of rendered (a PNG costs ~0.5 s here); the full report test
    renders every plot for real."""
    from tuneserve.evaluation import pyplot

    def image(fig):
        pyplot().close(fig)
        return '<img alt="plot">'

    monkeypatch.setattr("tuneserve.evaluation.plot_image", image)


@pytest.fixture(scope="module")
def report(searched, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "tune.html"
    assert tune_report(searched, out) == out
    return out


def trial_rows(page: str) -> list[str]:
    table = page.split("Trials, best first", 1)[1]
    return re.findall(r"<tr[^>]*><td>(\d+)</td><td>(\w+)</td>", table)


def test_every_section_with_an_image_per_plot(searched, report):
    page = report.read_text()
    assert page.startswith("<!doctype html>") and "digits-tune on digits" in page
    for section in (*SECTIONS, "Slices"):
        assert f"<h2>{section}</h2>" in page
    images = re.findall(r'<img alt="plot" src="data:image/png;base64,([^"]+)">', page)
    assert len(images) == 5  # history, importances, coordinates, intermediate, slices
    assert "Not drawn" not in page
    assert "val_accuracy (maximize)" in page and "RandomSampler" not in page  # the attr wins
    complete = sum(t.state.name == "COMPLETE" for t in searched.trials)
    pruned = sum(t.state.name == "PRUNED" for t in searched.trials)
    assert f"{complete} complete, {pruned} pruned, 1 failed, 0 running" in page
    compute = sum(len(t.intermediate_values) or 1 for t in searched.trials)
    assert f"{compute} epochs over all trials" in page
    assert f"(trial {searched.best_trial.number})" in page
    assert list(report.parent.iterdir()) == [report]  # no temporary file left


def test_table_is_best_first_with_pruned_and_failed_trials(searched, report):
    page = report.read_text()
    rows = trial_rows(page)
    assert len(rows) == len(searched.trials)
    assert rows[0] == (str(searched.best_trial.number), "complete")
    states = [state for _, state in rows]
    assert states == sorted(states, key=["complete", "pruned", "fail"].index)
    assert "pruned" in states and "(at rung " in page
    assert "out of memory at batch 64" in page
    assert f"trials/trial-{searched.best_trial.number:04d}" in page
    assert "cnn / full" in page or "mlp / full" in page


def test_storage_hint_masks_the_password(report):
    page = html.unescape(report.read_text())
    assert "s3cret" not in page
    assert "optuna-dashboard 'postgresql://tune:***@db.example:5432/studies'" in page


def test_no_hint_without_storage_and_plots_restore_the_style(fast_plots, tmp_path):
    before = dict(matplotlib.rcParams)
    page = tune_report(study_of(6), tmp_path / "r.html").read_text()
    assert "optuna-dashboard" not in page
    assert "value (maximize)" in page  # no metric attr: Optuna's own name and direction
    assert dict(matplotlib.rcParams) == before  # Optuna's plt.style.use("ggplot") undone


@pytest.mark.parametrize("n", [0, 1])
def test_too_few_trials_say_why_instead_of_raising(n, fast_plots, tmp_path):
    page = tune_report(study_of(n), tmp_path / "r.html", title="Tiny").read_text()
    assert "<h1>Tiny</h1>" in page
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in page
    why = f"Not drawn: needs at least 2 complete trials; this study has {n}"
    assert page.count(why) == 2  # importances and parallel coordinates
    if n == 0:
        assert "<img" not in page and "No trial has completed yet" in page
        assert "Not drawn: no trial reported intermediate values" in page
        assert "No trials yet." in page
    else:
        assert page.count("<img") == 2  # history and intermediate values


def test_importances_of_a_flat_objective_say_why(fast_plots, tmp_path):
    # every trial scores the same: Optuna's evaluator warns that importances would be equal
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: 0 * t.suggest_float("x", 0, 2) + 1.0, n_trials=4)
    page = tune_report(study, tmp_path / "r.html").read_text()
    assert "Not drawn: the trials do not tell the parameters apart" in page
    assert "Parameter importances will be equal" in page


def test_importances_of_two_trials_are_drawn(fast_plots, tmp_path):
    page = tune_report(study_of(2), tmp_path / "r.html").read_text()
    assert page.count("<img") == 5 and "Not drawn" not in page


def test_importances_of_identical_trials_say_why(fast_plots, tmp_path):
    study = optuna.create_study()
    for _ in range(3):
        study.enqueue_trial({"x": 1.0})
    study.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=3)
    page = tune_report(study, tmp_path / "r.html").read_text()
    assert "Not drawn: every complete trial has the same parameters" in page


def test_mask_url():
    assert mask_url("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_url("sqlite:////home/me/studies.db") == "sqlite:////home/me/studies.db"
    assert mask_url("mysql://root@h/db") == "mysql://root@h/db"
    assert mask_url("postgresql://u:pa/s@s@h/db") == "postgresql://u:***@h/db"  # unencoded


def test_a_zero_can_be_best_and_running_trials_are_counted(fast_plots, tmp_path):
    study = optuna.create_study(direction="minimize")
    for loss in (2.0, 0.0, 1.0):
        study.enqueue_trial({"x": loss})
    study.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=3)
    study.ask()  # a trial another worker is running
    page = tune_report(study, tmp_path / "r.html").read_text()
    assert "value (minimize)" in page and "<td>0 (trial 1)</td>" in page
    assert "3 complete, 0 pruned, 0 failed, 1 running" in page
    assert [n for n, _ in trial_rows(page)] == ["1", "2", "0", "3"]


def test_mask_url_hides_a_password_in_the_query_string():
    assert (
        mask_url("postgresql://u@h/db?password=s3cret&x=1")
        == "postgresql://u@h/db?password=***&x=1"
    )
    assert "s3cret" not in mask_url("postgresql://h/db?sslmode=require&sslpassword=s3cret")

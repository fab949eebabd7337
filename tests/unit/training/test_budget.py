"""``--time-budget``: parsing, and a budget ending a long loop early with the lineage saying so."""

from __future__ import annotations

import math

import pytest

from tuneserve.exceptions import InvalidInputError
from tuneserve.training import TrainConfig, train
from tuneserve.training.budget import Budget, budget_message, format_seconds, parse_time_budget


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("90s", 90.0), ("3m", 180.0), ("1h", 3600.0), ("180", 180.0), (" 2.5M ", 150.0), (45, 45.0)],
)
def test_durations_parse_to_seconds(given, seconds):
    assert parse_time_budget(given) == seconds


@pytest.mark.parametrize("given", [None, "none", "off"])
def test_none_means_no_budget(given):
    assert parse_time_budget(given) is None


@pytest.mark.parametrize("given", ["0", "-5", "abc", "3 minutes", "", 0, -5, math.nan, True])
def test_bad_budgets_name_the_rule_and_the_value(given):
    with pytest.raises(InvalidInputError, match=r"--time-budget must be a duration > 0") as info:
        parse_time_budget(given)
    assert repr(given) in str(info.value)


def test_format_seconds():
    assert [format_seconds(s) for s in (90, 180, 5400, 7.5)] == ["90s", "3m", "1.5h", "7.5s"]


def test_the_budget_stops_before_an_epoch_that_would_not_fit():
    budget = Budget(10.0)
    budget.start -= 9.5  # half a second left: an epoch of one second would not fit
    assert 0 < budget.left() < 0.5
    assert budget.after_epoch({"epoch": 1.0, "epoch_seconds": 1.0}) is True
    assert budget.stopped_after == 1
    assert Budget(None).after_epoch({"epoch": 1.0, "epoch_seconds": 1e9}) is False
    fresh = Budget(3600.0)
    assert fresh.after_epoch({"epoch": 1.0, "epoch_seconds": 0.01}) is False


def test_a_budget_of_a_second_ends_a_long_run_and_the_lineage_says_so(tmp_path):
    config = TrainConfig(epochs=100_000, patience=None, batch_size=64)
    result = train("wine", tmp_path / "mlp", backbone="mlp", config=config, time_budget=1)
    lineage = result.package.manifest.lineage
    record = lineage.details["time_budget"]
    assert record["seconds"] == 1.0 and record["ended_training"] is True
    assert record["epochs_planned"] == 100_000
    assert 1 <= record["epochs_run"] == len(lineage.history) < 100_000
    assert lineage.config["time_budget"] == 1.0  # in the recorded settings
    assert 1 <= lineage.best_epoch <= record["epochs_run"]  # the best epoch was kept
    assert "ended training after epoch" in (budget_message(lineage.details) or "")
    # without a budget the same settings would run every epoch: not here, only its record
    unbudgeted = train(
        "wine", tmp_path / "short", backbone="mlp", config=TrainConfig(epochs=3), time_budget=None
    )
    assert "time_budget" not in unbudgeted.package.manifest.lineage.details
    assert len(unbudgeted.package.manifest.lineage.history) == 3

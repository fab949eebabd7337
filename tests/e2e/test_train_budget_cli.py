"""``tuneserve train --time-budget`` as a user types it."""

from __future__ import annotations

import json

import pytest
from test_cli import assert_one_line_error, tuneserve


# every bad value is checked in-process (tests/unit/training/test_budget.py); here the one a
# shell user is likeliest to trip on, a negative number, as one line from a real process
@pytest.mark.parametrize("value", ["-5", pytest.param("abc", marks=pytest.mark.slow)])
def test_a_bad_time_budget_is_one_line_naming_the_rule_and_the_fix(value, tmp_path):
    out = tmp_path / "x"
    proc = tuneserve("train", "wine", "--out", str(out), f"--time-budget={value}", check=False)
    assert_one_line_error(
        proc, "--time-budget must be a duration > 0", f"got {value!r}", "--time-budget 5m"
    )
    assert not out.exists()


@pytest.mark.slow  # 10-25 s: a CLI start, a training run and an export
def test_a_time_budget_ends_a_long_run_and_says_so(tmp_path):
    out = tmp_path / "mlp"
    args = ["train", "wine", "--out", str(out), "-b", "mlp", "--epochs", "100000"]
    proc = tuneserve(*args, "--patience", "100000", "--time-budget", "2s", "--no-track")
    assert "the time budget of 2s ended training after epoch" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["lineage"]["details"]["time_budget"]["ended_training"] is True

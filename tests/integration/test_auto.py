"""Strategy ``auto``: measures each fine-tuning strategy here, chooses what fits the budget,
keeps the best of it and the probe; all of it in the lineage."""

from __future__ import annotations

import pytest

from tuneserve.data import load
from tuneserve.training import plan, train
from tuneserve.training.auto import CANDIDATES


@pytest.fixture(scope="module")
def digits_small():
    return load("digits").sample_per_class(30, seed=0)[0]


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_auto_is_the_default_and_records_its_choice(tiny_vit, digits_small, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    result = train(digits_small, tmp_path / "auto", backbone=str(tiny_vit), time_budget=10)
    lineage = result.package.manifest.lineage
    assert lineage.backbone.strategy == "auto"
    auto = lineage.details["auto"]
    assert set(auto["measured"]) == set(CANDIDATES)
    rows = len(result.splits.train)
    for measured in auto["measured"].values():
        assert measured["step_seconds"] > 0
        assert measured["steps_per_epoch"] == -(-rows // measured["batch_size"])
        assert measured["epoch_seconds"] >= 2 * measured["step_seconds"]
    assert auto["chose"] in (*CANDIDATES, "probe") and auto["reason"]
    assert auto["budget_seconds"] == 10.0
    assert auto["kept"] in ("probe", auto["chose"])
    assert lineage.config["strategy_kept"] == auto["kept"]
    if auto["chose"] != "probe":  # the chosen strategy trained from the probe's head
        assert auto["epochs"] >= 1 and f"{auto['chose']}_val" in auto
        assert isinstance(auto["budget_ended_fine_tuning"], bool)
    assert lineage.details["time_budget"]["seconds"] == 10.0
    kept = auto[f"{auto['kept']}_val"]
    assert result.validation_metrics["val_accuracy"] == kept["val_accuracy"]
    # the probe is never better on validation than what was kept
    assert auto["probe_val"]["val_accuracy"] <= kept["val_accuracy"]


def test_settings_given_to_auto_reach_the_chosen_strategy(tiny_vit):
    chosen = plan("image", backbone=str(tiny_vit), settings={"epochs": 2, "batch_size": 8})
    assert chosen.strategy.name == "auto"
    from tuneserve.training.auto import _given

    assert _given(chosen) == {"epochs": 2, "batch_size": 8}

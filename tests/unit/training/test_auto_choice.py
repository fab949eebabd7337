"""``auto``'s choice rule on given measurements (no model, no clock)."""

from __future__ import annotations

from tuneserve.training.auto import MAX_EPOCHS, MIN_EPOCHS, SAFETY, Measurement, choose


def _m(strategy: str, epoch_seconds: float) -> Measurement:
    # 10 steps of epoch_seconds / 10, no validation pass
    return Measurement(strategy, epoch_seconds / 10, 16, 10, 0.0)


MEASURED = {"full": _m("full", 20.0), "lora": _m("lora", 16.0), "partial": _m("partial", 8.0)}


def test_full_fine_tuning_when_its_epochs_fit():
    choice = choose(MEASURED, 100.0)
    # 0.85 * 100 s holds 4 epochs of 20 s
    assert (choice.strategy, choice.epochs) == ("full", 4)
    assert "full: 4 epochs of ~20.0 s" in choice.reason


def test_epochs_are_capped():
    choice = choose(MEASURED, 10_000.0)
    assert (choice.strategy, choice.epochs) == ("full", MAX_EPOCHS["full"])


def test_one_epoch_from_the_probe_s_head_is_enough_to_try():
    assert MIN_EPOCHS == 1
    choice = choose(MEASURED, 30.0)  # 25.5 s: one epoch of full
    assert (choice.strategy, choice.epochs) == ("full", 1)


def test_a_cheaper_strategy_when_full_does_not_fit_often_enough():
    # 0.85 * 40 = 34 s: one epoch of full (20 s), two of lora (16 s)
    choice = choose(MEASURED, 40.0, min_epochs=2)
    assert (choice.strategy, choice.epochs) == ("lora", 2)
    assert "full ~20 s/epoch" in choice.reason
    assert choose(MEASURED, 25.0, min_epochs=2).strategy == "partial"  # 21 s: 2 x 8 s


def test_the_probe_alone_when_nothing_fits():
    choice = choose(MEASURED, 9.0)  # 7.65 s: not one epoch of partial (8 s)
    assert (choice.strategy, choice.epochs) == ("probe", 0)
    assert "probe only" in choice.reason and "--time-budget" in choice.reason
    assert choose({}, 1000.0).strategy == "probe"


def test_the_rule_uses_the_safety_margin_and_the_validation_pass():
    slow_validation = {"full": Measurement("full", 1.0, 16, 10, 10.0)}  # 20 s an epoch
    assert choose(slow_validation, 2 * 20.0 / SAFETY + 0.01, min_epochs=2).epochs == 2
    assert choose(slow_validation, 2 * 20.0 / SAFETY - 0.01, min_epochs=2).strategy == "probe"

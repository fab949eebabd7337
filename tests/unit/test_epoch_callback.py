"""The loop's per-epoch callbacks: what a search prunes by and a time budget stops by."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tuneserve.training import TrainConfig, fit, on_epoch, on_step


def _data(n: int = 64) -> tuple[tuple[tuple[torch.Tensor, ...], torch.Tensor], ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return ((x[:48],), y[:48]), ((x[48:],), y[48:])


def test_every_epoch_is_reported_to_nested_callbacks_outermost_first() -> None:
    train, val = _data()
    seen: list[tuple[str, float]] = []
    config = TrainConfig(epochs=4, batch_size=16, patience=None)
    with (
        on_epoch(lambda r: seen.append(("outer", r["epoch"]))),
        on_epoch(lambda r: seen.append(("inner", r["epoch"]))),
    ):
        result = fit(nn.Linear(4, 2), train, val, config)
    assert [s for s in seen if s[0] == "outer"] == [("outer", float(e)) for e in range(1, 5)]
    assert seen[:2] == [("outer", 1.0), ("inner", 1.0)]
    assert len(result.history) == 4 and not result.stopped_early
    # outside the block nothing is called
    fit(nn.Linear(4, 2), train, val, config)
    assert len(seen) == 8


def test_a_callback_returning_true_stops_and_keeps_the_best_epoch() -> None:
    train, val = _data()
    config = TrainConfig(epochs=10, batch_size=16, patience=None)
    with on_epoch(lambda r: r["epoch"] >= 3):
        result = fit(nn.Linear(4, 2), train, val, config)
    assert len(result.history) == 3 and result.stopped_early
    assert 1 <= result.best_epoch <= 3


def test_a_callback_that_raises_stops_training_with_its_exception() -> None:
    train, val = _data()

    class Pruned(Exception):
        pass

    def prune(record: dict[str, float]) -> None:
        if record["epoch"] == 2:
            raise Pruned

    with on_epoch(prune), pytest.raises(Pruned):
        fit(nn.Linear(4, 2), train, val, TrainConfig(epochs=5, batch_size=16))


def test_a_step_callback_cuts_the_epoch_and_ends_training() -> None:
    train, val = _data()  # 48 rows: 12 steps of 4 per epoch
    steps: list[int] = []

    def third_step() -> bool:
        steps.append(1)
        return len(steps) == 3

    with on_step(third_step):
        result = fit(nn.Linear(4, 2), train, val, TrainConfig(epochs=5, batch_size=4))
    assert len(steps) == 3 and len(result.history) == 1 and result.stopped_early
    assert result.best_epoch == 1 and "val_accuracy" in result.history[0]


def test_a_time_budget_ends_within_a_step_not_an_epoch() -> None:
    import time

    from tuneserve.training.budget import Budget

    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 64, generator=g)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 2))
    budget = Budget(0.5)
    started = time.perf_counter()
    with budget.watching():  # one epoch of 20,000 single-row steps takes many seconds
        result = fit(model, ((x,), y), ((x[:100],), y[:100]), TrainConfig(epochs=3, batch_size=1))
    took = time.perf_counter() - started
    assert len(result.history) == 1 and budget.stopped_after == 1
    assert took < 3.0, took  # the deadline, one step, and the validation pass

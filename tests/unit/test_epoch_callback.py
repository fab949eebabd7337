"""The loop's per-epoch callbacks: what a search prunes by and a time budget stops by."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tuneserve.training import TrainConfig, fit, on_epoch


def _data(n: int = 64) -> tuple[tuple[tuple[torch.Tensor, ...], torch.Tensor], ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return ((x[:48],), y[:48]), ((x[48:],), y[48:])


def test_every_epoch_is_reported_to_nested_callbacks_outermost_first() -> None:
    train, val = _data()
    seen: list[tuple[str, float]] = []
    config = TrainConfig(epochs=4, batch_size=16, patience=None)
    with on_epoch(lambda r: seen.append(("outer", r["epoch"]))):
        with on_epoch(lambda r: seen.append(("inner", r["epoch"]))):
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

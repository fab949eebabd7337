"""The new head of a model trained from a package: drawn from the run's seed."""

from __future__ import annotations

import torch

from tuneserve.data import load
from tuneserve.exporters import load_weights
from tuneserve.training import TrainConfig, train


def test_mlp_from_package_head_follows_the_seed(tmp_path):
    wine = load("wine")
    source = train(wine, tmp_path / "src", backbone="mlp", config=TrainConfig(epochs=2))
    heads = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        config = TrainConfig(epochs=1, learning_rate=1e-9, seed=seed)
        result = train(wine, tmp_path / name, init=source.package.path, config=config, guard=False)
        weights = load_weights(result.package)
        heads.append(weights[[k for k in weights if k.endswith(".weight")][-1]])
    assert heads[0].shape[0] == 3  # the head: one output per wine class
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])

"""The new head of a model trained from a package: drawn from the run's seed."""

from __future__ import annotations

from tuneserve.data import load
from tuneserve.training import TrainConfig, train


def test_mlp_from_package_head_follows_the_seed(tmp_path):
    wine = load("wine")
    source = train(wine, tmp_path / "src", backbone="mlp", config=TrainConfig(epochs=2))
    heads = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        config = TrainConfig(epochs=1, learning_rate=1e-9, seed=seed)
        result = train(wine, tmp_path / name, init=source.package.path, config=config)
        heads.append(result.trained.model.net[-1].weight.detach().clone())
    assert bool((heads[0] == heads[1]).all()) and not bool((heads[0] == heads[2]).all())

"""Transfer learning on text with the bundled MiniLM: probe (cached features), partial, full."""

from __future__ import annotations

import numpy as np
import pytest

from tuneserve.exceptions import InvalidInputError
from tuneserve.exporters import PARITY_TOLERANCE
from tuneserve.runtime import Predictor
from tuneserve.training import TrainConfig, train


def _check(result, accuracy: float = 0.9) -> None:
    test = result.splits.test
    probs = Predictor(result.package).predict_proba(test.X)
    assert np.max(np.abs(probs - result.trained.predict_proba(test.X))) <= PARITY_TOLERANCE
    assert result.test_metrics["test_accuracy"] >= accuracy
    assert (result.package.path / "assets/tokenizer.json").is_file()


def test_probe_caches_frozen_features(reviews_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    first = train(reviews_csv, tmp_path / "a", max_length=32)
    assert first.trained.config["strategy"] == "probe"
    assert first.trained.config["feature_cache"] == {"hits": 0, "misses": 2}
    _check(first)
    cached = list((tmp_path / "home/cache/features").glob("*.npy"))
    assert len(cached) == 2  # train and validation features
    second = train(reviews_csv, tmp_path / "b", max_length=32)
    assert second.trained.config["feature_cache"] == {"hits": 2, "misses": 0}
    # same features, same seed: the same head
    np.testing.assert_allclose(
        second.trained.predict_proba(second.splits.test.X),
        first.trained.predict_proba(first.splits.test.X),
        atol=1e-6,
    )
    # another tokenization is another cache entry
    third = train(reviews_csv, tmp_path / "c", max_length=24)
    assert third.trained.config["feature_cache"] == {"hits": 0, "misses": 2}


def test_partial_unfreezing_out_of_range_is_refused(reviews_csv, tmp_path):
    with pytest.raises(InvalidInputError, match=r"unfreeze must be between 1 and 6"):
        train(reviews_csv, tmp_path / "x", strategy="partial", unfreeze=9)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["partial", "full"])
def test_fine_tuning_strategies(reviews_csv, tmp_path, strategy):
    config = TrainConfig(epochs=3, batch_size=16, learning_rate=2e-4, patience=None)
    result = train(
        reviews_csv, tmp_path / strategy, strategy=strategy, config=config, max_length=32
    )
    assert result.trained.config["strategy"] == strategy
    _check(result, accuracy=0.8)  # 24 test texts, 3 short epochs

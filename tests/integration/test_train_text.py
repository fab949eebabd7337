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


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_probe_caches_frozen_features(reviews_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    first = train(reviews_csv, tmp_path / "a", strategy="probe", max_length=32)
    assert first.package.manifest.lineage.backbone.strategy == "probe"
    assert first.package.manifest.lineage.details["feature_cache"] == {"hits": 0, "misses": 2}
    _check(first)
    cached = list((tmp_path / "home/cache/features").glob("*.npy"))
    assert len(cached) == 2  # train and validation features
    second = train(reviews_csv, tmp_path / "b", strategy="probe", max_length=32)
    assert second.package.manifest.lineage.details["feature_cache"] == {"hits": 2, "misses": 0}
    # same features, same seed: the same head
    np.testing.assert_allclose(
        second.trained.predict_proba(second.splits.test.X),
        first.trained.predict_proba(first.splits.test.X),
        atol=1e-6,
    )
    # another tokenization is another cache entry
    third = train(reviews_csv, tmp_path / "c", strategy="probe", max_length=24)
    assert third.package.manifest.lineage.details["feature_cache"] == {"hits": 0, "misses": 2}


def test_partial_unfreezing_out_of_range_is_refused(reviews_csv, tmp_path):
    with pytest.raises(InvalidInputError, match=r"unfreeze must be between 1 and 6"):
        train(reviews_csv, tmp_path / "x", strategy="partial", unfreeze=9)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["partial", "full", "lora"])
def test_fine_tuning_strategies(reviews_csv, tmp_path, strategy):
    lr = 2e-3 if strategy == "lora" else 2e-4  # adapters start at zero and need a higher rate
    config = TrainConfig(epochs=4, batch_size=16, learning_rate=lr, patience=None)
    result = train(
        reviews_csv, tmp_path / strategy, strategy=strategy, config=config, max_length=32
    )
    assert result.package.manifest.lineage.backbone.strategy == strategy
    _check(result, accuracy=0.8)  # 24 test texts, 3 short epochs


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_lora_is_merged_into_a_plain_encoder(reviews_csv):
    import torch

    from tuneserve.backbones import TextClassifier, load_encoder
    from tuneserve.data import load, split
    from tuneserve.training import train_text

    parts = split(load(reviews_csv), seed=0)
    config = TrainConfig(epochs=2, batch_size=16, learning_rate=1e-3, patience=None)
    trained = train_text(
        parts.train, parts.validation, strategy="lora", config=config, max_length=32
    )
    state = trained.model.state_dict()
    assert not any("lora" in key for key in state), "adapters were not merged"
    # the merged weights load into a plain encoder and predict the same
    plain = TextClassifier(load_encoder("minilm"), 2)
    plain.load_state_dict(state)
    base = load_encoder("minilm").state_dict()
    changed = [k for k, v in plain.encoder.state_dict().items() if not torch.equal(v, base[k])]
    assert changed and all(("query" in k or "value" in k) for k in changed)
    plain.eval()
    feed = {k: torch.from_numpy(v) for k, v in trained.preprocessor.transform(parts.test.X).items()}
    with torch.no_grad():
        np.testing.assert_allclose(
            torch.softmax(plain(**feed), -1).numpy(), trained.predict_proba(parts.test.X), atol=1e-5
        )
    assert trained.metrics["val_accuracy"] >= 0.8

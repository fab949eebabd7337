"""Hugging Face vision backbones (tiny random models built offline) through ``train``."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from tuneserve.backbones import VisionClassifier, load_vision_model, vision_preprocessor
from tuneserve.data import load
from tuneserve.exceptions import InvalidInputError, NotFoundError
from tuneserve.exporters import PARITY_TOLERANCE
from tuneserve.package import Package
from tuneserve.runtime import Predictor
from tuneserve.training import TrainConfig, train
from tuneserve.training.encoder import encoder_from_package

FAST = TrainConfig(epochs=3, batch_size=64, learning_rate=1e-3, patience=None)
LEARN = TrainConfig(epochs=6, batch_size=32, learning_rate=3e-3, patience=None)


@pytest.fixture(scope="module")
def digits_small():
    return load("digits").sample_per_class(30, seed=0)[0]


def _check_parity(result) -> None:
    test = result.splits.test
    probs = Predictor(result.package).predict_proba(test.X)
    assert np.max(np.abs(probs - result.trained.predict_proba(test.X))) <= PARITY_TOLERANCE
    assert result.test_metrics["test_accuracy"] == pytest.approx(np.mean(probs.argmax(1) == test.y))


def test_preprocessing_follows_the_image_processor_config(tiny_vit):
    pre = vision_preprocessor(str(tiny_vit), load_vision_model(str(tiny_vit)))
    assert pre.size == (16, 16)
    assert pre.channels == 3
    assert pre.mean == [0.5, 0.5, 0.5] and pre.std == [0.25, 0.25, 0.25]
    white = np.ones((8, 8), dtype=np.float32)  # grayscale in, RGB out, resized
    assert pre.transform([white])["input"].shape == (1, 3, 16, 16)
    np.testing.assert_allclose(pre.transform([white])["input"], 2.0, atol=1e-5)


@pytest.mark.parametrize(
    "strategy",
    [
        "probe",
        "full",
        pytest.param("partial", marks=pytest.mark.slow),  # the default run's budget
        pytest.param("lora", marks=pytest.mark.slow),
    ],
)
def test_vit_strategies_export_with_parity(tiny_vit, digits_small, tmp_path, strategy, monkeypatch):
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    # the probe trains a head on cached features: its defaults (60 epochs) cost little
    settings = {"probe": None, "lora": LEARN}.get(strategy, replace(LEARN, learning_rate=1e-3))
    result = train(
        "digits", tmp_path / strategy, backbone=str(tiny_vit), strategy=strategy, config=settings
    )
    lineage = result.package.manifest.lineage
    assert lineage.trainer == "train_vision"
    assert lineage.backbone.strategy == strategy
    assert lineage.backbone.model_class == "VisionClassifier"
    assert lineage.config["epochs"] == (60 if settings is None else 6)
    _check_parity(result)
    # random weights still carry signal: well above chance (10%) on held-out digits
    assert result.test_metrics["test_accuracy"] > 0.35
    if strategy == "lora":
        keys = result.trained.model.state_dict()
        assert not any("lora" in k for k in keys)
        plain = VisionClassifier(load_vision_model(str(tiny_vit)), 10)
        plain.load_state_dict(keys)  # merged weights fit a plain encoder


def test_probe_reads_cached_features_on_the_second_run(
    tiny_vit, digits_small, tmp_path, monkeypatch
):
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    first = train(
        digits_small, tmp_path / "a", backbone=str(tiny_vit), strategy="probe", config=FAST
    )
    second = train(
        digits_small, tmp_path / "b", backbone=str(tiny_vit), strategy="probe", config=FAST
    )
    assert first.package.manifest.lineage.details["feature_cache"] == {"hits": 0, "misses": 2}
    assert second.package.manifest.lineage.details["feature_cache"] == {"hits": 2, "misses": 0}


def test_convolutional_model_pools_its_feature_map(tiny_resnet, digits_small, tmp_path):
    result = train(
        digits_small,
        tmp_path / "r",
        backbone=str(tiny_resnet),
        strategy="partial",
        unfreeze=1,
        config=FAST,
    )
    assert result.trained.preprocessor.size == (16, 16)  # from the config's image_size
    _check_parity(result)
    with pytest.raises(InvalidInputError, match=r"query/value projections.*partial or full"):
        train(digits_small, tmp_path / "l", backbone=str(tiny_resnet), strategy="lora")


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_from_a_vision_package_needs_no_original_folder(tiny_vit, tmp_path):
    digits = load("digits")
    folder = tmp_path / "vit-copy"
    shutil.copytree(tiny_vit, folder)
    source = train(
        digits.select_classes(["0", "1", "2", "3", "4"]).sample_per_class(30, seed=0)[0],
        tmp_path / "source",
        backbone=str(folder),
        strategy="full",
        config=FAST,
    )
    assert (source.package.path / "extras/encoder_config.json").is_file()
    shutil.rmtree(folder)  # the package alone must be enough to continue from
    model, backbone = encoder_from_package(
        Package.load(source.package.path), VisionClassifier, load_vision_model, "vision-model"
    )
    assert backbone == str(folder)
    for key, value in source.trained.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    target_data = digits.select_classes(["5", "6", "7", "8", "9"]).sample_per_class(10, seed=0)[0]
    target = train(
        target_data,
        tmp_path / "target",
        init=source.package.path,
        strategy="full",
        config=FAST,
        guard=False,
    )
    assert target.package.manifest.lineage.parent == source.package.id
    assert target.package.manifest.label_names == ["5", "6", "7", "8", "9"]
    assert target.package.manifest.lineage.backbone.name == str(folder)
    _check_parity(target)


def test_bad_vision_backbones_are_refused(digits_small, tmp_path, tiny_vit):
    with pytest.raises(InvalidInputError, match="pass the model's id or local folder"):
        train(digits_small, tmp_path / "a", backbone="hf-vision")
    with pytest.raises(NotFoundError, match="cannot load vision model"):
        train(digits_small, tmp_path / "b", backbone=str(tmp_path / "missing-model"))
    with pytest.raises(InvalidInputError, match="unfreeze must be between 1 and 2"):
        train(digits_small, tmp_path / "c", backbone=str(tiny_vit), strategy="partial", unfreeze=5)

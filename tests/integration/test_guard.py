"""The ``--from`` guard: on digits 0-4 -> 5-9 from image folders, few images per class,
plain transfer loses to a fresh CNN; the guard keeps the fresh one and says by how much."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from tuneserve.training import CNNConfig, train
from tuneserve.training.guard import guard_message


def _folder(root: Path, digits: list[int], per_class: int | None, seed: int = 0) -> Path:
    """An image folder (one sub-folder per class) of sklearn's 8x8 digits as PNGs."""
    data = load_digits()
    rng = np.random.default_rng(seed)
    for d in digits:
        rows = np.flatnonzero(data.target == d)
        if per_class is not None:
            rows = rng.choice(rows, size=per_class, replace=False)
        (root / str(d)).mkdir(parents=True)
        for i in rows:
            pixels = (data.images[i] * (255 / 16)).astype(np.uint8)  # (8, 8), 0..16 -> 0..255
            Image.fromarray(pixels, mode="L").save(root / str(d) / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def source_0_4(tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    folder = _folder(root / "d04", [0, 1, 2, 3, 4], None)
    return train(folder, root / "cnn-0-4", config=CNNConfig(epochs=30)).package


@pytest.mark.slow  # about 30 s on 2 cores: a 0-4 CNN of 30 epochs, then four 5-9 runs
def test_guard_keeps_the_fresh_cnn_when_transfer_hurts(source_0_4, tmp_path):
    # 50 images of each of 5-9: 10 train, 10 validation, 30 test per class
    target = _folder(tmp_path / "d59", [5, 6, 7, 8, 9], 50)
    config = CNNConfig(epochs=40, patience=15, batch_size=16)
    split = {"validation": 0.2, "test": 0.6}
    guarded = train(target, tmp_path / "guarded", init=source_0_4.path, config=config, **split)
    lineage = guarded.package.manifest.lineage
    record = lineage.details["guard"]
    tried = record["tried"]
    assert set(tried) == {"transfer", "head-first", "scratch"}
    assert record["kept"] == "scratch"
    assert tried["scratch"]["val_accuracy"] > tried["transfer"]["val_accuracy"]
    assert record["gain_over_transfer"] == pytest.approx(
        tried["scratch"]["val_accuracy"] - tried["transfer"]["val_accuracy"]
    )
    # the package says truthfully that it does not continue the 0-4 CNN
    assert lineage.parent is None and record["from"] == source_0_4.id
    assert guarded.test_metrics["test_accuracy"] > 0.9
    assert "scratch beat plain transfer by" in guard_message(lineage.details)
    # --no-guard: plain transfer, its parent recorded
    plain = train(
        target, tmp_path / "plain", init=source_0_4.path, config=config, guard=False, **split
    )
    assert plain.package.manifest.lineage.parent == source_0_4.id
    assert "guard" not in plain.package.manifest.lineage.details
    assert plain.trained.metrics["val_accuracy"] == tried["transfer"]["val_accuracy"]


def test_the_guard_tries_each_alternative_and_the_lineage_follows_the_winner(tmp_path):
    from tuneserve.data import load
    from tuneserve.training import TrainConfig

    wine = load("wine")
    source = train(
        wine.select_classes(["class_0", "class_1"]),
        tmp_path / "src",
        backbone="mlp",
        config=TrainConfig(epochs=5),
    ).package
    result = train(wine, tmp_path / "dst", init=source.path, config=TrainConfig(epochs=6))
    lineage = result.package.manifest.lineage
    record = lineage.details["guard"]
    assert set(record["tried"]) == {"transfer", "head-first", "scratch"}
    best = max(v["val_accuracy"] for v in record["tried"].values())
    assert record["tried"][record["kept"]]["val_accuracy"] == best
    assert result.validation_metrics["val_accuracy"] == best
    # a parent only when the kept model continued it
    assert lineage.parent == (None if record["kept"] == "scratch" else source.id)
    if record["kept"] == "head-first":
        assert lineage.config["head_first"] == 3  # half of 6 epochs, at most 5

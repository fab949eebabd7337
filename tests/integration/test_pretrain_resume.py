"""Resuming ``pretrain`` from a checkpoint: only with the same settings and data."""

from __future__ import annotations

import pytest

from tuneserve.data import Unlabeled, load
from tuneserve.exceptions import InvalidInputError
from tuneserve.training.pretrain import pretrain, pretrain_defaults


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

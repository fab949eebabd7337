"""Unlabeled data for pretraining: the held-out part, and what load_unlabeled refuses."""

from __future__ import annotations

import numpy as np
import pytest

from tuneserve.data import Unlabeled, load_unlabeled
from tuneserve.exceptions import DataError, InvalidInputError


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

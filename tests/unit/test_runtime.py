"""Smart batching of padded text: groups of similar lengths, each with its own padding."""

from __future__ import annotations

import numpy as np
import pytest

from tuneserve.runtime import CALL_TOKENS, PADDING_SLACK, length_groups


def _mask(lengths: list[int], right: bool = True) -> np.ndarray:
    width = max(lengths)
    mask = np.zeros((len(lengths), width), np.int64)
    for row, n in enumerate(lengths):
        if right:
            mask[row, :n] = 1
        else:
            mask[row, width - n :] = 1
    return mask


def test_mixed_lengths_are_split_into_groups_within_the_padding_slack():
    lengths = [5, 60, 7, 58, 6, 30, 64, 5, 31, 8]
    groups = length_groups(_mask(lengths))
    assert groups is not None and len(groups) >= 3
    rows = np.concatenate([r for r, _ in groups])
    assert sorted(rows.tolist()) == list(range(len(lengths)))  # every row once
    for group_rows, length in groups:
        real = [lengths[r] for r in group_rows]
        assert length == max(real)  # the group's own padding
        assert length * len(real) <= PADDING_SLACK * sum(real) + CALL_TOKENS
    padded = sum(length * len(r) for r, length in groups)
    assert padded < 0.5 * max(lengths) * len(lengths)  # far less than one padded batch


@pytest.mark.parametrize(
    "mask",
    [
        None,
        _mask([12]),  # one row
        _mask([12, 12, 11, 12]),  # little padding to save
        _mask([3, 40, 5, 39], right=False),  # left padding: columns cannot be cut
    ],
)
def test_one_call_when_grouping_cannot_help(mask):
    assert length_groups(mask) is None


def test_grouped_text_predictions_equal_one_text_at_a_time(text_package):
    from tuneserve.runtime import Predictor

    texts = ["ok", "good " * 25, "bad", "a long and rather slow wait " * 4, "fine", "meh"]
    predictor = Predictor(text_package)
    feed = predictor.preprocessor.transform(texts)
    assert length_groups(feed["attention_mask"]) is not None  # the grouped path runs
    together = predictor.run(texts)
    alone = np.concatenate([predictor.run([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-6)

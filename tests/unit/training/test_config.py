"""TrainConfig validates its settings when it is made."""

from __future__ import annotations

import math

import pytest

from tuneserve.exceptions import InvalidInputError
from tuneserve.training import TrainConfig


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"learning_rate": math.nan}, "learning_rate must be a number > 0"),
        ({"learning_rate": math.inf}, "learning_rate must be a number > 0"),
        ({"seed": -1}, r"seed must be in \[0, 2\*\*32\)"),
        ({"warmup_epochs": math.nan}, "warmup_epochs must be in"),
        ({"clip_grad_norm": math.nan}, "clip_grad_norm must be > 0"),
    ],
)
def test_non_finite_settings_are_refused(settings, message):
    with pytest.raises(InvalidInputError, match=message):
        TrainConfig(**settings)

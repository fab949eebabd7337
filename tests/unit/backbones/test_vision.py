"""Vision backbones: the input size read from a Hugging Face image processor config."""

from __future__ import annotations

import pytest

from tuneserve.backbones.vision import _size


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

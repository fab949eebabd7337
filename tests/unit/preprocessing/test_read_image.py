"""read_image: any image file to floats in [0, 1], (height, width, channels)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tuneserve.preprocessing import read_image


def test_grayscale_with_a_transparent_colour_is_white_and_one_channel(tmp_path):
    pixels = np.zeros((4, 4), dtype=np.uint8)
    pixels[1, 1] = 200
    Image.fromarray(pixels, mode="L").save(tmp_path / "t.png", transparency=0)
    img = read_image(tmp_path / "t.png")
    assert img.shape == (4, 4, 1)
    assert img[0, 0, 0] == pytest.approx(1.0)  # transparent -> white
    assert img[1, 1, 0] == pytest.approx(200 / 255, abs=1 / 255)

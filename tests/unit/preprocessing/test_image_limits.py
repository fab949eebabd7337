"""Image size limits: refused from the header, shrunk while decoding, one image at a time."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tuneserve.exceptions import InputItemError, InvalidInputError
from tuneserve.preprocessing import ImagePreprocessor
from tuneserve.preprocessing.image import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageTooLargeError,
    max_image_pixels,
    read_image,
    set_max_image_pixels,
)


@pytest.fixture(autouse=True)
def _default_limit() -> Iterator[None]:
    yield
    set_max_image_pixels(DEFAULT_MAX_IMAGE_PIXELS)


def _identity(size: tuple[int, int], channels: int) -> ImagePreprocessor:
    return ImagePreprocessor(
        size=size, channels=channels, mean=[0.0] * channels, std=[1.0] * channels
    )


def _encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _gradient(width: int, height: int) -> Image.Image:
    """A smooth RGB image: what a photo looks like to a downscaler."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2)
    return Image.fromarray(rgb.astype(np.uint8))


def _peak_rss_growth_mb(tmp_path: Path, body: str) -> float:
    """Run ``body`` in a fresh interpreter; how much its peak RSS grew while it ran (MB)."""
    script = (
        textwrap.dedent(
            """
        import resource, sys
        import numpy as np
        from PIL import Image
        from tuneserve.preprocessing import ImagePreprocessor
        from tuneserve.preprocessing.image import read_image, set_max_image_pixels
        data = open(sys.argv[1], "rb").read()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        """
        )
        + textwrap.dedent(body)
        + textwrap.dedent(
            """
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) / 1024)
        """
        )
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "image")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return float(done.stdout.strip().splitlines()[-1])


def test_an_image_over_the_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    # the image: 9,400 x 9,400 (under Pillow's limit), a few hundred KB as a PNG;
    # decoded to floats it took ~900 MB
    (tmp_path / "image").write_bytes(_encoded(Image.new("1", (9400, 9400)), "PNG"))
    growth = _peak_rss_growth_mb(
        tmp_path,
        """
        try:
            read_image(data)
        except ValueError as exc:
            assert "more than the limit" in str(exc), exc
        else:
            raise SystemExit("not refused")
        """,
    )
    assert growth < 30


def test_a_large_image_under_the_limit_never_becomes_full_size_floats(tmp_path: Path) -> None:
    # 5,000 x 5,000 RGB: 75 MB decoded, 300 MB as float32 (and again per resized plane)
    (tmp_path / "image").write_bytes(_encoded(Image.new("RGB", (5000, 5000), "teal"), "PNG"))
    growth = _peak_rss_growth_mb(
        tmp_path,
        """
        pre = ImagePreprocessor(size=(32, 32), channels=3, mean=[0] * 3, std=[1] * 3)
        out = pre.transform([data, data, data])["input"]
        assert out.shape == (3, 3, 32, 32), out.shape
        """,
    )
    assert growth < 150


def test_a_huge_jpeg_decodes_reduced_and_close_to_the_full_decode() -> None:
    data = _encoded(_gradient(4096, 3072), "JPEG")
    reduced = read_image(data, within=(48, 64))
    # 1/8 by the JPEG decoder, then 1/2 more: still 4x the model's size each way
    assert reduced.shape[:2] == (3072 // 16, 4096 // 16)
    pre = _identity((48, 64), 3)
    full = pre.transform([read_image(data)])["input"]  # an array: no reduction
    served = pre.transform([data])["input"]
    assert np.abs(served - full).max() < 0.02


def test_a_large_png_is_reduced_and_close_to_the_full_decode() -> None:
    data = _encoded(_gradient(1200, 900), "PNG")
    reduced = read_image(data, within=(30, 40))
    assert reduced.shape[:2] == (-(-900 // 7), -(-1200 // 7))  # 1/7 keeps 4x the target
    pre = _identity((30, 40), 3)
    full = pre.transform([read_image(data)])["input"]
    served = pre.transform([data])["input"]
    assert np.abs(served - full).max() < 0.02


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("size", [(64, 64), (255, 250), (30, 200)])
def test_ordinary_images_decode_exactly_as_before(fmt: str, size: tuple[int, int]) -> None:
    # under REDUCE_GAP x 2 times the model size in a direction: not reduced at all
    data = _encoded(_gradient(*size), fmt)
    np.testing.assert_array_equal(read_image(data, within=(32, 32)), read_image(data))
    pre = _identity((32, 32), 3)
    expected = pre.transform([read_image(data)])["input"]
    np.testing.assert_array_equal(pre.transform([data])["input"], expected)


def test_palette_and_transparent_images_are_reduced_as_colours() -> None:
    rgba = _gradient(800, 800).convert("RGBA")
    pal = _gradient(800, 800).convert("P", palette=Image.Palette.ADAPTIVE)
    pre = _identity((16, 16), 3)
    for img in (rgba, pal):
        data = _encoded(img, "PNG")
        full = pre.transform([read_image(data)])["input"]
        np.testing.assert_allclose(pre.transform([data])["input"], full, atol=0.02)


def test_the_limit_is_configurable_and_names_the_size() -> None:
    data = _encoded(Image.new("L", (300, 200)), "PNG")
    assert read_image(data).shape == (200, 300, 1)
    set_max_image_pixels(59_999)
    assert max_image_pixels() == 59_999
    with pytest.raises(
        ImageTooLargeError,
        match=r"300 x 200 = 60,000 pixels, more than the limit of 59,999\. Hint: downscale",
    ):
        read_image(data)


def test_a_too_large_item_is_a_400_naming_its_position() -> None:
    set_max_image_pixels(1000)
    small, big = (
        _encoded(Image.new("L", (10, 10)), "PNG"),
        _encoded(Image.new("L", (50, 50)), "PNG"),
    )
    with pytest.raises(InputItemError, match=r"image 1 is too large: .*2,500 pixels") as info:
        _identity((8, 8), 1).transform([small, big])
    assert isinstance(info.value, InvalidInputError)


@pytest.mark.parametrize("bad", [0, -5, 1.5, "many"])
def test_the_limit_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(InvalidInputError, match=r"positive integer"):
        set_max_image_pixels(bad)  # type: ignore[arg-type]
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS


def test_serve_defaults_to_the_same_limit() -> None:
    import inspect

    from tuneserve.cli.serve import serve
    from tuneserve.serving.config import ServeConfig

    option = inspect.signature(serve).parameters["max_image_pixels"].default
    assert option.default == DEFAULT_MAX_IMAGE_PIXELS
    assert "--max-image-pixels" in option.param_decls
    config = ServeConfig(models=[])
    assert config.max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS
    assert '"max_image_pixels": 40000000' in config.to_json()  # reaches every worker

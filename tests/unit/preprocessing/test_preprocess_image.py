"""ImagePreprocessor: fit, every accepted input form, conversions, spec round trip, errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tuneserve.exceptions import InvalidInputError, NotFoundError
from tuneserve.preprocessing import ImagePreprocessor, preprocessor_from_spec

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _identity(size: tuple[int, int], channels: int) -> ImagePreprocessor:
    """A preprocessor that only converts and resizes (mean 0, std 1)."""
    return ImagePreprocessor(
        size=size, channels=channels, mean=[0.0] * channels, std=[1.0] * channels
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# ----------------------------------------------------------------- fit


def test_fit_picks_most_common_size_and_gray_channels(rng: np.random.Generator) -> None:
    images = [
        rng.random((8, 8)).astype(np.float32),
        rng.random((8, 8, 1)).astype(np.float32),
        rng.random((12, 6)).astype(np.float32),
        rng.random((8, 8)).astype(np.float32),
    ]
    pre = ImagePreprocessor().fit(images)
    assert pre.size == (8, 8)
    assert pre.channels == 1
    assert pre.mean is not None and len(pre.mean) == 1
    assert pre.std is not None and len(pre.std) == 1


def test_fit_picks_three_channels_if_any_image_is_color(rng: np.random.Generator) -> None:
    images = [rng.random((5, 5)), rng.random((5, 5, 3)), rng.random((5, 5, 4))]
    pre = ImagePreprocessor().fit(images)
    assert pre.channels == 3
    assert pre.size == (5, 5)


def test_fit_computes_per_channel_mean_and_std(rng: np.random.Generator) -> None:
    images = [rng.random((6, 6, 3)).astype(np.float32) for _ in range(5)]
    images[0][..., 2] = 0.0  # make channels clearly different
    pre = ImagePreprocessor().fit(images)
    stacked = np.stack(images)
    np.testing.assert_allclose(pre.mean, stacked.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(pre.std, stacked.std(axis=(0, 1, 2)), rtol=1e-4)
    out = pre.transform(images)["input"]
    # after normalization each channel of the training batch has mean 0, std 1
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1.0, atol=1e-4)


def test_fit_keeps_given_constants(rng: np.random.Generator) -> None:
    pre = ImagePreprocessor(size=(4, 3), channels=3, mean=[0.5, 0.5, 0.5], std=[0.25] * 3)
    pre.fit([rng.random((9, 9))])
    assert pre.size == (4, 3)
    assert pre.channels == 3
    assert pre.mean == [0.5, 0.5, 0.5]
    assert pre.std == [0.25] * 3


def test_constant_images_get_a_positive_std() -> None:
    pre = ImagePreprocessor().fit([np.full((4, 4), 0.5), np.full((4, 4), 0.5)])
    assert pre.std is not None and pre.std[0] > 0
    assert np.isfinite(pre.transform([np.full((4, 4), 0.5)])["input"]).all()


def test_fit_on_digits_matches_numpy() -> None:
    from tuneserve.data import load

    digits = load("digits")
    pre = ImagePreprocessor().fit(digits.X[:200])
    stacked = np.stack(digits.X[:200])
    assert pre.size == (8, 8) and pre.channels == 1
    assert pre.mean is not None and pre.std is not None
    assert pre.mean[0] == pytest.approx(float(stacked.mean()), rel=1e-5)
    assert pre.std[0] == pytest.approx(float(stacked.std()), rel=1e-4)


# ----------------------------------------------------------------- transform input forms


def test_output_layout_and_normalization() -> None:
    pre = ImagePreprocessor(size=(2, 3), channels=3, mean=[0.5, 0.0, 0.25], std=[0.5, 2.0, 0.25])
    img = np.zeros((2, 3, 3), dtype=np.float32)
    img[..., 0] = 1.0
    img[..., 1] = 0.5
    img[..., 2] = 0.75
    out = pre.transform([img, img])["input"]
    assert out.shape == (2, 3, 2, 3)  # (batch, channels, height, width)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], 1.0)  # (1 - 0.5) / 0.5
    np.testing.assert_allclose(out[:, 1], 0.25)  # (0.5 - 0) / 2
    np.testing.assert_allclose(out[:, 2], 2.0)  # (0.75 - 0.25) / 0.25


def test_file_path_bytes_and_uint8_array_agree(tmp_path: Path, rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(pixels).save(path)
    pre = _identity((6, 5), 3)

    from_array = pre.transform([pixels])["input"]
    np.testing.assert_allclose(from_array[0], pixels.transpose(2, 0, 1) / 255.0, atol=1e-7)
    for source in (path, str(path), path.read_bytes()):
        np.testing.assert_array_equal(pre.transform([source])["input"], from_array)


def test_mixed_batch_of_forms(tmp_path: Path) -> None:
    gray = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    path = tmp_path / "g.bmp"
    Image.fromarray(gray).save(path)
    pre = _identity((2, 2), 1)
    batch = [gray, gray / 255.0, gray[:, :, None], path, _png_bytes(gray), (gray / 255.0).tolist()]
    out = pre.transform(batch)["input"]
    assert out.shape == (6, 1, 2, 2)
    for i in range(6):
        np.testing.assert_allclose(out[i, 0], gray / 255.0, atol=1e-6)


def test_float_and_uint8_arrays_are_scaled_the_same() -> None:
    pre = _identity((3, 3), 1)
    u8 = np.arange(9, dtype=np.uint8).reshape(3, 3) * 30
    out = pre.transform([u8, u8.astype(np.float64) / 255.0, u8.astype(np.float32) / 255.0])["input"]
    np.testing.assert_allclose(out[0], out[1], atol=1e-7)
    np.testing.assert_allclose(out[0], out[2], atol=1e-7)
    assert float(out.max()) == pytest.approx(240 / 255)


def test_alpha_channel_is_dropped() -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.float32)
    rgba[..., 1] = 0.6
    rgba[..., 3] = 1.0
    out = _identity((2, 2), 3).transform([rgba])["input"]
    np.testing.assert_allclose(out[0, :, 0, 0], [0.0, 0.6, 0.0], atol=1e-7)


def test_resize_matches_pillow_bilinear(rng: np.random.Generator) -> None:
    img = rng.random((10, 14)).astype(np.float32)
    out = _identity((5, 7), 1).transform([img])["input"]
    assert out.shape == (1, 1, 5, 7)
    expected = np.asarray(Image.fromarray(img).resize((7, 5), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(out[0, 0], expected, atol=1e-6)


def test_resize_keeps_constant_images_constant() -> None:
    pre = _identity((8, 8), 3)
    out = pre.transform([np.full((3, 5, 3), 0.3), np.full((20, 11, 3), 0.7)])["input"]
    assert out.shape == (2, 3, 8, 8)
    np.testing.assert_allclose(out[0], 0.3, atol=1e-6)
    np.testing.assert_allclose(out[1], 0.7, atol=1e-6)


def test_rgb_to_gray_uses_luma_weights() -> None:
    pre = _identity((2, 2), 1)
    colors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.4, 0.6]]
    batch = [np.tile(np.array(c, dtype=np.float32), (2, 2, 1)) for c in colors]
    out = pre.transform(batch)["input"]
    assert out.shape == (4, 1, 2, 2)
    for i, c in enumerate(colors):
        np.testing.assert_allclose(out[i], float(np.dot(c, LUMA)), atol=1e-6)


def test_gray_to_rgb_repeats_the_plane(rng: np.random.Generator) -> None:
    gray = rng.random((4, 4)).astype(np.float32)
    out = _identity((4, 4), 3).transform([gray])["input"]
    assert out.shape == (1, 3, 4, 4)
    for c in range(3):
        np.testing.assert_allclose(out[0, c], gray)


def test_gray_file_into_rgb_model(tmp_path: Path) -> None:
    path = tmp_path / "g.png"
    Image.fromarray(np.full((3, 3), 255, dtype=np.uint8)).save(path)
    out = _identity((3, 3), 3).transform([path])["input"]
    np.testing.assert_allclose(out, 1.0)


# ----------------------------------------------------------------- spec


def test_spec_round_trip_gives_identical_output(rng: np.random.Generator, tmp_path: Path) -> None:
    train = [rng.random((7, 9, 3)).astype(np.float32) for _ in range(4)]
    pre = ImagePreprocessor().fit(train)
    spec = json.loads(json.dumps(pre.spec()))  # as stored in a manifest
    assert spec["kind"] == "image"
    assert spec["size"] == [7, 9]
    assert spec["channels"] == 3
    assert spec["value_range"] == [0.0, 1.0]

    path = tmp_path / "t.png"
    Image.fromarray(rng.integers(0, 256, (11, 4), dtype=np.uint8)).save(path)
    batch = [*train, rng.random((3, 3)), path]
    for rebuilt in (ImagePreprocessor.from_spec(spec), preprocessor_from_spec(spec)):
        assert isinstance(rebuilt, ImagePreprocessor)
        np.testing.assert_array_equal(
            rebuilt.transform(batch)["input"], pre.transform(batch)["input"]
        )


def test_input_schema_and_dynamic_axes() -> None:
    pre = _identity((28, 32), 1)
    schema = pre.input_schema()
    assert (schema["type"], schema["height"], schema["width"], schema["channels"]) == (
        "image",
        28,
        32,
        1,
    )
    assert pre.dynamic_axes() == {"input": {0: "batch"}}


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("item", "pattern"),
    [
        (
            np.full((4, 4), 1.5, dtype=np.float32),
            r"image 1 has values in \[1\.5, 1\.5\]; float images must be scaled to \[0, 1\]",
        ),
        (np.full((4, 4), -0.1), r"image 1 has values in \[-0\.1, -0\.1\]"),
        (np.full((4, 4), 255.0), r"scaled to \[0, 1\].*255 for 8-bit"),
        (np.array([[0.1, np.nan], [0.2, 0.3]]), r"image 1 contains NaN or infinite values"),
        (np.array([[0.1, np.inf], [0.2, 0.3]]), r"image 1 contains NaN or infinite values"),
        (np.zeros(4), r"image 1 has shape \(4,\); expected \(height, width\)"),
        (np.zeros((2, 4, 4, 3)), r"image 1 has shape \(2, 4, 4, 3\)"),
        (np.zeros((4, 4, 2)), r"image 1 has shape \(4, 4, 2\).*1, 3 or 4 channels"),
        (np.zeros((0, 4)), r"image 1 has shape \(0, 4, 1\)"),
        (np.array([["a", "b"]]), r"image 1 has element type <U1; send numbers"),
        (b"definitely not an image", r"cannot read image image bytes"),
    ],
    ids=[
        "above-one",
        "negative",
        "unscaled-255",
        "nan",
        "inf",
        "1d",
        "4d",
        "two-channels",
        "empty",
        "strings",
        "bad-bytes",
    ],
)
def test_bad_arrays_raise_invalid_input(item: object, pattern: str) -> None:
    pre = _identity((4, 4), 1)
    with pytest.raises(InvalidInputError, match=pattern):
        pre.transform([np.zeros((4, 4)), item])


@pytest.mark.parametrize("name", ["hello", "missing/dir/cat.png"])
def test_string_that_is_not_a_file_is_not_found(name: str) -> None:
    with pytest.raises(NotFoundError, match=rf"image file {name} does not exist"):
        _identity((4, 4), 1).transform([name])


def test_existing_file_that_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("just text")
    with pytest.raises(InvalidInputError, match=r"cannot read image .*notes\.png.*Hint: remove"):
        _identity((4, 4), 1).transform([path])


@pytest.mark.parametrize(
    ("inputs", "pattern"),
    [
        ("cat.png", r"inputs must be a list of images, got a single str.*wrap one input"),
        (b"\x89PNG", r"got a single bytes"),
        ({"image": 1}, r"got a single dict"),
        (5, r"got a single int"),
        ([], r"inputs is empty; send at least one image"),
    ],
)
def test_batch_shape_errors(inputs: object, pattern: str) -> None:
    with pytest.raises(InvalidInputError, match=pattern):
        _identity((4, 4), 1).transform(inputs)


def test_transform_before_fit_is_refused() -> None:
    with pytest.raises(RuntimeError, match="before fit"):
        ImagePreprocessor().transform([np.zeros((2, 2))])


def test_bad_bytes_error_names_the_position() -> None:
    good = _png_bytes(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(InvalidInputError, match=r"image 2\b"):
        _identity((4, 4), 1).transform([good, good, b"garbage"])


def test_ink_on_transparent_background_is_composited_onto_white(tmp_path: Path) -> None:
    rgba = np.zeros((6, 6, 4), dtype=np.uint8)  # transparent everywhere ...
    rgba[2:4, 2:4] = [0, 0, 0, 255]  # ... but an opaque black stroke
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "ink.png")
    from tuneserve.preprocessing import read_image

    img = read_image(tmp_path / "ink.png")
    assert img.shape == (6, 6, 3)
    np.testing.assert_allclose(img[0, 0], [1.0, 1.0, 1.0])  # background: white, not black
    np.testing.assert_allclose(img[2, 2], [0.0, 0.0, 0.0])  # the ink stays black
    # an RGBA array takes the same path
    arr = ImagePreprocessor(size=(6, 6), channels=3, mean=[0, 0, 0], std=[1, 1, 1])
    np.testing.assert_allclose(arr.transform([rgba])["input"][0].transpose(1, 2, 0), img)


def test_decompression_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tuneserve.preprocessing import read_image

    Image.new("L", (40, 40)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1,600 pixels > 2 x the limit
    with pytest.raises(InvalidInputError, match=r"big\.png is too large to decode safely"):
        read_image(tmp_path / "big.png")

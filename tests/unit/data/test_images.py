"""Image folders: one sub-folder per class, PNG / JPEG / BMP of any size and mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tuneserve.data import list_images, load
from tuneserve.preprocessing import read_image


def _save(path: Path, array: np.ndarray, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two classes of mixed formats, modes and sizes, plus files that must be ignored."""
    root = tmp_path / "pets"
    gray = np.array([[0, 51, 102], [153, 204, 255]], dtype=np.uint8)  # 2x3, L
    _save(root / "cat" / "a_gray.png", gray)
    rgb = np.zeros((5, 7, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    rgb[..., 2] = 51
    _save(root / "cat" / "b_rgb.png", rgb)
    _save(root / "dog" / "c.jpg", np.full((16, 12, 3), 200, dtype=np.uint8), quality=95)
    _save(root / "dog" / "nested" / "d.bmp", np.full((3, 3, 3), 10, dtype=np.uint8))
    _save(root / "dog" / "e.JPEG", np.full((9, 4, 3), 128, dtype=np.uint8), format="JPEG")
    # ignored: non-image files, hidden files, a hidden class folder
    (root / "dog" / "notes.txt").write_text("not an image")
    _save(root / "dog" / ".hidden.png", np.zeros((2, 2), dtype=np.uint8))
    _save(root / ".cache" / "x.png", np.zeros((2, 2), dtype=np.uint8))
    return root


def test_image_folder_loads_with_folder_names_as_labels(folder: Path) -> None:
    data = load(folder)

    assert data.modality == "image"
    assert data.task == "classification"
    assert data.name == "pets"
    assert data.source == str(folder)
    assert data.label_names == ("cat", "dog")
    assert data.y.tolist() == [0, 0, 1, 1, 1]
    assert data.class_counts() == {"cat": 2, "dog": 3}
    files = [Path(f).relative_to(folder).as_posix() for f in data.meta["files"]]
    assert files == [
        "cat/a_gray.png",
        "cat/b_rgb.png",
        "dog/c.jpg",
        "dog/e.JPEG",
        "dog/nested/d.bmp",
    ]


def test_images_keep_their_size_and_mode(folder: Path) -> None:
    data = load(folder)
    assert [img.shape for img in data.X] == [
        (2, 3, 1),
        (5, 7, 3),
        (16, 12, 3),
        (9, 4, 3),
        (3, 3, 3),
    ]
    assert all(img.dtype == np.float32 for img in data.X)


def test_images_are_scaled_to_unit_range(folder: Path) -> None:
    data = load(folder)
    for img in data.X:
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    np.testing.assert_allclose(data.X[0][:, :, 0], [[0.0, 0.2, 0.4], [0.6, 0.8, 1.0]], atol=1e-6)
    np.testing.assert_allclose(data.X[1][0, 0], [1.0, 0.0, 0.2], atol=1e-6)
    # JPEG is lossy, but a flat 200 stays close to 200/255
    np.testing.assert_allclose(data.X[2], 200 / 255, atol=3 / 255)
    np.testing.assert_allclose(data.X[4], 10 / 255, atol=1e-6)  # BMP is lossless


def test_image_summary_counts_shapes(folder: Path) -> None:
    summary = load(folder).summary()
    assert summary["rows"] == 5
    assert summary["classes"] == 2
    assert summary["image_shapes"]["2x3x1"] == 1
    assert summary["imbalance_ratio"] == 1.5


def test_many_images_per_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("zero", "one", "two"):
        for i in range(4):
            _save(tmp_path / "d" / cls / f"{i}.png", rng.integers(0, 256, (6, 6), dtype=np.uint8))
    data = load(tmp_path / "d")
    assert data.label_names == ("one", "two", "zero")  # sorted folder names
    assert data.class_counts() == {"one": 4, "two": 4, "zero": 4}
    assert len({data.fingerprint, load(tmp_path / "d").fingerprint}) == 1


def test_list_images_is_sorted_and_skips_hidden_and_other_files(folder: Path) -> None:
    names = [p.relative_to(folder).as_posix() for p in list_images(folder)]
    assert names == [
        "cat/a_gray.png",
        "cat/b_rgb.png",
        "dog/c.jpg",
        "dog/e.JPEG",
        "dog/nested/d.bmp",
    ]


def test_read_image_from_bytes_equals_from_file(folder: Path) -> None:
    path = folder / "cat" / "b_rgb.png"
    np.testing.assert_array_equal(read_image(path.read_bytes()), read_image(path))


def test_palette_and_rgba_images_become_rgb(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 1] = 255
    rgba[..., 3] = 100
    _save(tmp_path / "rgba.png", rgba)
    with Image.new("P", (3, 2)) as pal:
        pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        pal.putpixel((0, 0), 1)
        pal.save(tmp_path / "pal.png")

    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (4, 4, 3)
    # transparent pixels are composited onto white: alpha 100/255 over white
    blend = 1.0 - 100 / 255
    np.testing.assert_allclose(out[0, 0], [blend, 1.0, blend], atol=1 / 255)
    pal_arr = read_image(tmp_path / "pal.png")
    assert pal_arr.shape == (2, 3, 3)
    np.testing.assert_allclose(pal_arr[0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(pal_arr[1, 2], [0.0, 0.0, 0.0])


def test_16_bit_grayscale_png_is_scaled_by_65535(tmp_path: Path) -> None:
    _save(tmp_path / "deep.png", np.array([[0, 32768, 65535]], dtype=np.uint16))
    out = read_image(tmp_path / "deep.png")
    assert out.shape == (1, 3, 1)
    np.testing.assert_allclose(out[0, :, 0], [0.0, 32768 / 65535, 1.0], atol=1e-6)


def test_grayscale_with_alpha_stays_one_channel(tmp_path: Path) -> None:
    with Image.new("LA", (2, 2), (100, 255)) as img:
        img.save(tmp_path / "la.png")
    out = read_image(tmp_path / "la.png")
    assert out.shape == (2, 2, 1)
    np.testing.assert_allclose(out, 100 / 255, atol=1e-6)

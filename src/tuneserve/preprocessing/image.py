"""Image preprocessing in numpy and Pillow: decode, channels, resize, normalize."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from PIL import Image, UnidentifiedImageError

from tuneserve.exceptions import InputItemError, InvalidInputError, NotFittedError, NotFoundError

from ._base import Preprocessor, as_batch, register_preprocessor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: Default of the largest image (width x height) decoded: 40 megapixels, about a 7,700 x
#: 5,200 photo, and far below Pillow's own limit (89 megapixels warns, 179 fails). A 9,400 x
#: 9,400 PNG can be 114 KB on the wire and gigabytes once decoded to floats.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
_limit = {"pixels": DEFAULT_MAX_IMAGE_PIXELS}
#: A decoded image is shrunk by a whole factor (JPEG while decoding, others right after)
#: only while it stays at least this many times the model's size in each direction, so an
#: image of an ordinary size decodes exactly as before and the final resize still averages
#: over every source pixel.
REDUCE_GAP = 4
# ITU-R BT.601 luma, the same weights Pillow uses for RGB -> L.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite a transparent image onto white, as a page or a browser shows it."""
    gray = img.mode in ("LA", "La", "L", "1")
    rgba = img.convert("LA" if gray else "RGBA")
    background = Image.new(rgba.mode, rgba.size, (255, 255) if gray else (255, 255, 255, 255))
    return Image.alpha_composite(background.convert("RGBA"), rgba.convert("RGBA")).convert(
        "L" if gray else "RGB"
    )


class ImageTooLargeError(InvalidInputError):
    """An image has more pixels than :func:`max_image_pixels` allows (HTTP 400)."""


def max_image_pixels() -> int:
    """The largest image (width x height, in pixels) that :func:`read_image` decodes."""
    return _limit["pixels"]


def set_max_image_pixels(pixels: int) -> None:
    """Set the largest image :func:`read_image` decodes in this process (``tuneserve serve
    --max-image-pixels``); the pixel count is read from the file header, before decoding."""
    if not isinstance(pixels, int) or pixels < 1:
        raise InvalidInputError(f"the image pixel limit must be a positive integer, got {pixels!r}")
    _limit["pixels"] = pixels


def _reduce(img: Image.Image, within: tuple[int, int]) -> Image.Image:
    """Shrink a decoded image by a whole factor while it stays ``REDUCE_GAP`` times
    ``within`` (height, width); an image not that large is returned unchanged."""
    h, w = within
    factor = min(img.width // (REDUCE_GAP * w), img.height // (REDUCE_GAP * h))
    if factor < 2 or img.mode not in ("1", "L", "LA", "RGB", "RGBA", "I", "F", "P", "CMYK"):
        return img
    if img.mode == "P":  # averaging palette indices means nothing: average colours
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "1":
        img = img.convert("L")
    return img.reduce(factor)


def read_image(source: str | Path | bytes, within: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file (or its bytes) to float32 ``(height, width, channels)`` in [0, 1].

    Grayscale stays one channel; colour and palette images become RGB. Transparent pixels are
    composited onto white. An image over :func:`max_image_pixels` is refused from its header,
    before it is decoded.

    Args:
        source: A file path or the file's bytes.
        within: ``(height, width)`` the caller will resize to. A much larger image is
            shrunk by a whole factor while it stays at least ``REDUCE_GAP`` times this size
            (JPEG while decoding), so it never reaches memory as full-size floats.

    Raises:
        NotFoundError: the file does not exist.
        ImageTooLargeError: it has more pixels than the limit.
        InvalidInputError: the bytes are not a readable image.
    """
    name = "image bytes" if isinstance(source, bytes) else str(source)
    try:
        handle: Any = io.BytesIO(source) if isinstance(source, bytes) else source
        with warnings.catch_warnings():
            # between Pillow's two limits an image decodes with only a warning: refuse it too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(handle)
        with opened:
            width, height = opened.size  # from the header: nothing is decoded yet
            limit = max_image_pixels()
            if width * height > limit:
                raise ImageTooLargeError(
                    f"image {name} has {width} x {height} = {width * height:,} pixels, more "
                    f"than the limit of {limit:,}. Hint: downscale it before sending (the "
                    "model sees it resized anyway), or raise the limit (tuneserve serve "
                    "--max-image-pixels)"
                )
            if within is not None and opened.format == "JPEG":
                h, w = within
                opened.draft(None, (REDUCE_GAP * w, REDUCE_GAP * h))
            opened.load()
            img: Image.Image = opened if within is None else _reduce(opened, within)
            if img.mode in ("LA", "La", "RGBA", "RGBa", "PA") or "transparency" in img.info:
                img = _flatten_alpha(img)
            if img.mode in ("1", "L"):
                arr = np.asarray(img.convert("L"), dtype=np.float32)[:, :, None] / 255.0
            elif img.mode.startswith("I;16"):
                arr = np.asarray(img, dtype=np.float32)[:, :, None] / 65535.0
            elif img.mode in ("I", "F"):
                arr = np.asarray(img, dtype=np.float32)[:, :, None]
                arr = arr / max(float(arr.max()), 1.0) if arr.max() > 1.0 else arr
            else:
                arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except FileNotFoundError as exc:
        raise NotFoundError(f"image file {name} does not exist") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInputError(
            f"image {name} is too large to decode safely: {exc}. Hint: downscale it first"
        ) from exc
    except ImageTooLargeError:
        raise
    except UnidentifiedImageError as exc:  # its text names a memory address, not the input
        fix = "send an image file" if isinstance(source, bytes) else "remove or replace that file"
        raise InvalidInputError(
            f"cannot read image {name}: no image format recognises its bytes. Hint: {fix} "
            f"(readable formats: {', '.join(IMAGE_SUFFIXES)})"
        ) from exc
    except (OSError, ValueError) as exc:
        raise InvalidInputError(
            f"cannot read image {name}: {exc}. Hint: remove or replace that file "
            f"(readable formats: {', '.join(IMAGE_SUFFIXES)})"
        ) from exc
    return np.ascontiguousarray(np.clip(arr, 0.0, 1.0))


def to_image_array(item: Any, position: int, within: tuple[int, int] | None = None) -> np.ndarray:
    """Turn one raw image (path, bytes, nested list or array) into ``(h, w, c)`` in [0, 1].

    ``within``: the ``(height, width)`` it will be resized to (see :func:`read_image`).

    Raises:
        InputItemError: naming ``position``, for anything that is not a valid image.
    """
    if isinstance(item, str | Path | bytes):
        try:
            return read_image(item, within)
        except ImageTooLargeError as exc:
            raise InputItemError("image", position, f"is too large: {exc}") from exc
        except InvalidInputError as exc:
            raise InputItemError("image", position, f"is unreadable: {exc}") from exc
    try:
        arr = np.asarray(item)
    except (ValueError, TypeError) as exc:
        raise InputItemError("image", position, f"is not an array: {exc}") from exc
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
    else:
        raise InputItemError(
            "image",
            position,
            f"has element type {arr.dtype}; send numbers, a file path or bytes",
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.size == 0:
        raise InputItemError(
            "image",
            position,
            f"has shape {arr.shape}; expected (height, width) or (height, width, channels) "
            "with 1, 3 or 4 channels",
        )
    if not np.isfinite(arr).all():
        raise InputItemError("image", position, "contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0 + 1e-6:
        raise InputItemError(
            "image",
            position,
            f"has values in [{lo:g}, {hi:g}]; float images must be scaled to [0, 1]. "
            "Hint: divide by the maximum of the scale (255 for 8-bit, 16 for digits), "
            "or send uint8",
        )
    return _blend_alpha(arr)


def _blend_alpha(arr: np.ndarray) -> np.ndarray:
    """``(..., 4)`` RGBA in [0, 1] -> RGB composited onto white; other shapes unchanged."""
    if arr.shape[-1] != 4:
        return arr
    alpha = arr[..., 3:4]
    return arr[..., :3] * alpha + (1.0 - alpha)


def uniform_batch(inputs: Any) -> np.ndarray | None:
    """Stack same-shaped array inputs into float32 ``(n, h, w, c)`` in [0, 1], or None.

    The fast path for arrays: one vectorized check instead of one per image. Anything
    unusual (files, mixed shapes, bad values) returns None and goes item by item, which
    names the bad item in its error.
    """
    if isinstance(inputs, np.ndarray):
        arr = inputs
    elif (
        isinstance(inputs, list | tuple)
        and len(inputs) > 0
        and all(isinstance(x, np.ndarray) for x in inputs)
    ):
        first = inputs[0]
        if any(x.shape != first.shape or x.dtype != first.dtype for x in inputs):
            return None
        arr = np.stack(inputs)
    else:
        return None
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[3] not in (1, 3, 4) or arr.size == 0:
        return None
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif np.issubdtype(arr.dtype, np.number):
        arr = arr.astype(np.float32, copy=False)
        if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0 + 1e-6:
            return None
    else:
        return None
    return _blend_alpha(arr)


@register_preprocessor
class ImagePreprocessor(Preprocessor):
    """Convert channels, resize to a fixed size, and normalize per channel.

    Output: ``{"input": float32 (batch, channels, height, width)}``.

    Args:
        size: ``(height, width)``; when None, ``fit`` takes the most common size.
        channels: 1 or 3; when None, ``fit`` takes 3 if any training image is RGB.
        mean, std: per-channel constants; when None, ``fit`` computes them.
    """

    kind: ClassVar[str] = "image"
    modality: ClassVar[str] = "image"

    def __init__(
        self,
        size: tuple[int, int] | None = None,
        channels: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        self.size = size
        self.channels = channels
        self.mean = mean
        self.std = std

    def fit(self, inputs: Any) -> Self:
        images = [to_image_array(x, i) for i, x in enumerate(as_batch(inputs, "images"))]
        if self.size is None:
            shapes, counts = np.unique([a.shape[:2] for a in images], axis=0, return_counts=True)
            h, w = shapes[int(np.argmax(counts))]
            self.size = (int(h), int(w))
        if self.channels is None:
            self.channels = 3 if any(a.shape[2] >= 3 for a in images) else 1
        if self.mean is None or self.std is None:
            saved_mean, saved_std = self.mean, self.std
            self.mean, self.std = [0.0] * self.channels, [1.0] * self.channels
            batch = self._resize_all(images)  # (n, c, h, w), not yet normalized
            self.mean = saved_mean or [float(v) for v in batch.mean(axis=(0, 2, 3))]
            self.std = saved_std or [float(max(v, 1e-6)) for v in batch.std(axis=(0, 2, 3))]
        return self

    def _shape(self) -> tuple[tuple[int, int], int]:
        if self.size is None or self.channels is None:
            raise NotFittedError("ImagePreprocessor used before fit")
        return (int(self.size[0]), int(self.size[1])), int(self.channels)

    def _convert(self, arr: np.ndarray) -> np.ndarray:
        (h, w), _ = self._shape()
        if self.channels == 1 and arr.shape[2] == 3:
            arr = (arr @ _LUMA)[:, :, None]
        elif self.channels == 3 and arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        if arr.shape[:2] != (h, w):
            planes = [
                np.asarray(
                    Image.fromarray(arr[:, :, c], mode="F").resize(
                        (w, h), Image.Resampling.BILINEAR
                    )
                )
                for c in range(arr.shape[2])
            ]
            arr = np.stack(planes, axis=2)
        return arr.transpose(2, 0, 1)  # (c, h, w)

    def _resize_all(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([self._convert(a) for a in images]).astype(np.float32)

    def _convert_batch(self, batch: np.ndarray) -> np.ndarray:
        """``(n, h, w, c)`` in [0, 1] -> ``(n, channels, height, width)``, vectorized."""
        size, _ = self._shape()
        if batch.shape[1:3] != size:
            return self._resize_all(list(batch))
        if self.channels == 1 and batch.shape[3] == 3:
            batch = (batch @ _LUMA)[..., None]
        elif self.channels == 3 and batch.shape[3] == 1:
            batch = np.repeat(batch, 3, axis=3)
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)

    def transform(self, inputs: Any) -> dict[str, np.ndarray]:
        if self.size is None or self.channels is None or self.mean is None or self.std is None:
            raise NotFittedError("ImagePreprocessor.transform called before fit")
        uniform = uniform_batch(inputs)
        if uniform is not None:
            batch = self._convert_batch(uniform)  # (n, c, h, w)
        else:
            # one image at a time: only one is ever held at its decoded size
            size, _ = self._shape()
            items = as_batch(inputs, "images")
            batch = np.stack(
                [self._convert(to_image_array(x, i, size)) for i, x in enumerate(items)]
            ).astype(np.float32)  # (n, c, h, w)
        mean = np.asarray(self.mean, dtype=np.float32)[None, :, None, None]
        std = np.asarray(self.std, dtype=np.float32)[None, :, None, None]
        return {"input": ((batch - mean) / std).astype(np.float32)}

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "size": list(self.size) if self.size else None,
            "channels": self.channels,
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
            "value_range": [0.0, 1.0],
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], assets: Path | None = None) -> Self:
        return cls(
            size=tuple(spec["size"]),
            channels=spec["channels"],
            mean=spec["mean"],
            std=spec["std"],
        )

    def input_schema(self) -> dict[str, Any]:
        (h, w), channels = self._shape()
        return {
            "type": "image",
            "height": h,
            "width": w,
            "channels": channels,
            "accepts": "image files (PNG/JPEG/BMP, any size) or arrays (h, w[, c]): "
            "uint8 0-255 or float 0-1",
        }

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"input": {0: "batch"}}

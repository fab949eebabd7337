"""Image augmentation in plain torch: random rotation, translation and scale."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from tuneserve.exceptions import InvalidInputError


@dataclass
class ImageAugment:
    """A random affine transform per image, drawn from the loop's seeded generator.

    Args:
        rotation: Largest rotation in degrees (either way).
        translation: Largest shift as a fraction of the image side (either way).
        scale: Range of zoom factors.
    """

    rotation: float = 10.0
    translation: float = 0.1
    scale: tuple[float, float] = (0.9, 1.1)

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise InvalidInputError(
                f"scale must be (low, high) with 0 < low <= high; got {self.scale}"
            )
        if self.rotation < 0 or not 0 <= self.translation < 1:
            raise InvalidInputError(
                f"rotation must be >= 0 and translation in [0, 1); got {self.rotation}, "
                f"{self.translation}"
            )

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Transform ``(batch, channels, h, w)`` images; edges repeat the border pixels."""
        n = images.shape[0]
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(self.rotation)
        lo, hi = self.scale
        zoom = lo + torch.rand(n, generator=generator) * (hi - lo)
        # grid coordinates span [-1, 1], so a shift of a fraction f of the side is 2f
        shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * 2 * self.translation
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
        ).to(images.device, images.dtype)  # (batch, 2, 3)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, padding_mode="border", align_corners=False)

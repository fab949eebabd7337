"""The built-in small CNN for MNIST-like images (sized for 8x8 digits and up)."""

from __future__ import annotations

import torch
from torch import nn

from ._registry import BackboneSpec, register_backbone


class SmallCNN(nn.Module):
    """Two conv layers with pooling, then two dense layers.

    Args:
        num_classes: Output logits.
        in_channels: 1 for grayscale, 3 for RGB.
        image_size: ``(height, width)`` of the input; each must be divisible by 4.
        width: Channels of the first conv layer (the second has twice as many).
        hidden: Units of the first dense layer.
        dropout: Dropout before the last layer.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        image_size: tuple[int, int] = (8, 8),
        width: int = 32,
        hidden: int = 128,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        h, w = image_size
        if h % 4 or w % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        self.config = {
            "num_classes": num_classes,
            "in_channels": in_channels,
            "image_size": [h, w],
            "width": width,
            "hidden": hidden,
            "dropout": dropout,
        }
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (batch, width, h/2, w/2)
            nn.Conv2d(width, 2 * width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (batch, 2*width, h/4, w/4)
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * (h // 4) * (w // 4), hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, hidden)`` features: everything but the last layer."""
        return self.head[:-1](self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, channels, h, w)`` images to ``(batch, num_classes)`` logits."""
        return self.head(self.features(x))


register_backbone(
    BackboneSpec(
        name="cnn",
        modality="image",
        family="cnn",
        description="built-in small CNN for MNIST-like images, trained from scratch",
        factory=SmallCNN,
    )
)

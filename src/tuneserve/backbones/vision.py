"""Image backbones from Hugging Face: any vision model by id or local path (AutoModel and
AutoImageProcessor), pooled to one vector per image, with a linear head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tuneserve.exceptions import InvalidInputError, NotFoundError
from tuneserve.preprocessing import ImagePreprocessor

from ._hf import encoder_blocks, load_pretrained
from ._registry import BackboneSpec, register_backbone

#: Registry entry standing for "a Hugging Face vision model": ``--backbone`` takes the id or
#: path itself, like text backbones.
HF_VISION = "hf-vision"


def load_vision_model(name: str) -> nn.Module:
    """Load a Hugging Face vision model (``AutoModel``) by id or local path.

    Raises:
        NotFoundError: it cannot be loaded.
        InvalidInputError: the model does not take images.
    """
    model = load_pretrained(name, "vision model")
    takes = getattr(model, "main_input_name", "pixel_values")
    if takes != "pixel_values":
        raise InvalidInputError(
            f"{name!r} is not a vision model: it takes {takes}, not images. Hint: pass an "
            "image model (ViT, DeiT, DINOv2, Swin, ResNet, ConvNeXt, ...) or --backbone cnn"
        )
    return model


def _size(config: dict[str, Any], fallback: int | None, name: str) -> tuple[int, int]:
    """The model's input size: the crop of processors that resize then crop (DeiT), else
    the resize target, else the model config's ``image_size``."""
    size = config.get("size")
    if config.get("do_center_crop") and config.get("crop_size"):
        size = config["crop_size"]
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        if "shortest_edge" in size:
            edge = int(size["shortest_edge"])
            return edge, edge
    if isinstance(size, int):
        return size, size
    if fallback:
        return fallback, fallback
    raise NotFoundError(
        f"cannot tell the input size of vision model {name!r}: no preprocessor_config.json "
        "with a size, and no image_size in its config. Hint: add a preprocessor_config.json "
        'with "size": {"height": H, "width": W}'
    )


def vision_preprocessor(name: str, model: nn.Module | None = None) -> ImagePreprocessor:
    """The :class:`ImagePreprocessor` equivalent of a model's ``AutoImageProcessor``:
    its size (the shortest edge, square, for processors that resize then crop), RGB, and its
    mean and std on [0, 1] pixels. Without a processor config, the model config's
    ``image_size`` and ImageNet statistics are used."""
    from transformers.image_processing_base import ImageProcessingMixin

    try:  # the processor's settings, without building it (which may want torchvision)
        config: dict[str, Any] = ImageProcessingMixin.get_image_processor_dict(name)[0]
    except (OSError, ValueError):
        config = {}
    image_size = getattr(getattr(model, "config", None), "image_size", None)
    channels = int(getattr(getattr(model, "config", None), "num_channels", 3))
    if channels not in (1, 3):
        raise InvalidInputError(f"vision model {name!r} takes {channels} channels; 1 or 3 work")
    mean: Any = config.get("image_mean") or [0.485, 0.456, 0.406]
    std: Any = config.get("image_std") or [0.229, 0.224, 0.225]
    if isinstance(mean, (int, float)):
        mean, std = [float(mean)] * 3, [float(std)] * 3
    if config.get("do_normalize") is False:
        mean, std = [0.0] * channels, [1.0] * channels
    return ImagePreprocessor(
        size=_size(config, int(image_size) if isinstance(image_size, int) else None, name),
        channels=channels,
        mean=[float(v) for v in mean[:channels]],
        std=[float(v) for v in std[:channels]],
    )


def _hidden_size(encoder: nn.Module) -> int:
    config = getattr(encoder, "config", None)
    hidden = getattr(config, "hidden_size", None)
    if hidden is None and getattr(config, "hidden_sizes", None):
        hidden = config.hidden_sizes[-1]  # type: ignore[union-attr]
    if hidden is None:
        raise NotFoundError(f"cannot tell the feature size of {type(encoder).__name__}")
    return int(hidden)


class VisionClassifier(nn.Module):
    """Vision encoder, pooling, dropout, linear head.

    Pooling: transformers (ViT, DeiT, DINOv2, Swin) average their output tokens; convolutional
    models (ResNet, ConvNeXt) use their own pooled output, else a spatial average.
    """

    def __init__(self, encoder: nn.Module, outputs: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = _hidden_size(encoder)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, outputs)
        self.config = {"hidden_size": hidden, "outputs": outputs, "dropout": dropout}

    def blocks(self) -> list[nn.Module]:
        """The encoder's blocks or stages, first to last."""
        return encoder_blocks(self.encoder)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(batch, channels, h, w)`` normalized pixels -> ``(batch, hidden)`` features."""
        out = self.encoder(pixel_values=pixels)
        hidden = out.last_hidden_state
        if hidden.dim() == 3:  # (batch, tokens, hidden)
            return hidden.mean(1)
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None:
            return pooled.reshape(pooled.shape[0], -1)
        return hidden.mean((2, 3))  # (batch, hidden, h, w)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Logits (or values) ``(batch, outputs)``."""
        return self.head(self.dropout(self.embed(pixels)))


register_backbone(
    BackboneSpec(
        name=HF_VISION,
        modality="image",
        family="vision",
        description="any Hugging Face vision model: pass its id or local path as --backbone",
        factory=VisionClassifier,
    )
)

"""Backbones, one module per family, each registered by one ``register_backbone`` call."""

from ._hf import config_json, model_from_config
from ._registry import (
    DEFAULT_BACKBONES,
    BackboneSpec,
    get_backbone,
    list_backbones,
    register_backbone,
)
from .cnn import SmallCNN
from .tabular import TableMLP
from .text import TextClassifier, load_encoder, resolve_text_model
from .vision import HF_VISION, VisionClassifier, load_vision_model, vision_preprocessor

__all__ = [
    "DEFAULT_BACKBONES",
    "HF_VISION",
    "BackboneSpec",
    "SmallCNN",
    "TableMLP",
    "TextClassifier",
    "VisionClassifier",
    "config_json",
    "get_backbone",
    "list_backbones",
    "load_encoder",
    "load_vision_model",
    "model_from_config",
    "register_backbone",
    "resolve_text_model",
    "vision_preprocessor",
]

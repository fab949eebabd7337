"""Backbones, one module per family, each registered by one ``register_backbone`` call."""

from ._registry import (
    DEFAULT_BACKBONES,
    BackboneSpec,
    check_strategy,
    get_backbone,
    list_backbones,
    register_backbone,
)
from .cnn import SmallCNN
from .tabular import TableMLP
from .text import TextClassifier, load_encoder, resolve_text_model

__all__ = [
    "DEFAULT_BACKBONES",
    "BackboneSpec",
    "SmallCNN",
    "TableMLP",
    "TextClassifier",
    "check_strategy",
    "get_backbone",
    "list_backbones",
    "load_encoder",
    "register_backbone",
    "resolve_text_model",
]

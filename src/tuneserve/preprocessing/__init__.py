"""Preprocessors shared by training and serving (numpy, Pillow, tokenizers; never torch)."""

from ._base import (
    Preprocessor,
    preprocessor_from_spec,
    register_preprocessor,
    registered_kinds,
)
from .image import IMAGE_SUFFIXES, ImagePreprocessor, read_image
from .table import TablePreprocessor
from .text import TextPreprocessor, load_tokenizer

__all__ = [
    "IMAGE_SUFFIXES",
    "ImagePreprocessor",
    "Preprocessor",
    "TablePreprocessor",
    "TextPreprocessor",
    "load_tokenizer",
    "preprocessor_from_spec",
    "read_image",
    "register_preprocessor",
    "registered_kinds",
]

"""Backbones: one module per family. The built-in small CNN lives in :mod:`.cnn`."""

from .cnn import SmallCNN

__all__ = ["SmallCNN"]

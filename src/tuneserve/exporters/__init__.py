"""Exporters: trained models -> model packages (ONNX), plus TorchScript for other runtimes."""

from ._common import PARITY_TOLERANCE
from .sklearn_model import export_sklearn
from .torch_model import export_torch, export_torchscript, load_weights

__all__ = [
    "PARITY_TOLERANCE",
    "export_sklearn",
    "export_torch",
    "export_torchscript",
    "load_weights",
]

"""Exporters: trained models -> model packages (ONNX), plus TorchScript for other runtimes."""

from ._common import PARITY_TOLERANCE
from .sklearn_model import export_sklearn
from .torch_model import ENCODER_CONFIG_FILE, export_torch, export_torchscript, load_weights

__all__ = [
    "ENCODER_CONFIG_FILE",
    "PARITY_TOLERANCE",
    "export_sklearn",
    "export_torch",
    "export_torchscript",
    "load_weights",
]

"""Exporters: trained models -> model packages (ONNX), plus TorchScript for other runtimes."""

from ._common import PARITY_TOLERANCE
from .sklearn_model import ESTIMATOR_FILE, export_sklearn, load_estimator
from .torch_model import ENCODER_CONFIG_FILE, export_torch, export_torchscript, load_weights

__all__ = [
    "ENCODER_CONFIG_FILE",
    "ESTIMATOR_FILE",
    "PARITY_TOLERANCE",
    "export_sklearn",
    "export_torch",
    "export_torchscript",
    "load_estimator",
    "load_weights",
]

"""Exporters: trained models -> model packages (ONNX), plus TorchScript for other runtimes."""

from ._common import (
    OUTPUT_KINDS,
    PARITY_TOLERANCE,
    check_task,
    graph_opset,
    lineage_of,
    write_package,
)
from .sklearn_model import ESTIMATOR_FILE, export_sklearn, load_estimator
from .torch_model import ENCODER_CONFIG_FILE, export_torch, export_torchscript, load_weights

__all__ = [
    "ENCODER_CONFIG_FILE",
    "ESTIMATOR_FILE",
    "OUTPUT_KINDS",
    "PARITY_TOLERANCE",
    "check_task",
    "export_sklearn",
    "export_torch",
    "export_torchscript",
    "graph_opset",
    "lineage_of",
    "load_estimator",
    "load_weights",
    "write_package",
]

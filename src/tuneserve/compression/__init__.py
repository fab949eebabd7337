"""Compression: smaller, faster variants of a package (post-training quantization,
pruning, quantization-aware training, distillation), each measured through the runtime on
held-out rows, searched for the most compressed one within an accuracy budget."""

from ._choice import PREFERENCES, Budget, pareto_front
from ._measure import Measurement, measure
from ._recipes import METHOD_HELP, METHODS, Recipe, Step, catalogue, family_of
from ._report import print_trade_off
from ._search import CompressionError, CompressionResult, compress
from ._shorten import shorten_package
from ._variant import write_graph_variant

__all__ = [
    "METHODS",
    "METHOD_HELP",
    "PREFERENCES",
    "Budget",
    "CompressionError",
    "CompressionResult",
    "Measurement",
    "Recipe",
    "Step",
    "catalogue",
    "compress",
    "family_of",
    "measure",
    "pareto_front",
    "print_trade_off",
    "shorten_package",
    "write_graph_variant",
]

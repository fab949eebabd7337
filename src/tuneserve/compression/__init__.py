"""Compression: smaller, faster variants of a package (post-training quantization,
pruning, quantization-aware training, distillation), each measured through the runtime on
held-out rows, searched for the most compressed one within an accuracy budget."""

from ._variant import write_graph_variant

__all__ = ["write_graph_variant"]

"""A shorter maximum sequence length for a text package, chosen from the token lengths of
the data: attention costs grow with the padded length, and most texts are short."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tuneserve.exceptions import InvalidInputError
from tuneserve.package import Package
from tuneserve.preprocessing import TextPreprocessor, preprocessor_from_spec

from ._variant import write_graph_variant

#: Token lengths are rounded up to a multiple of this (friendlier to kernels).
ROUND_TO = 8


def token_lengths(package: Package, texts: Sequence[str]) -> np.ndarray:
    """Tokens of each text under the package's tokenizer, special tokens included, at most
    the package's maximum length."""
    pre = preprocessor_from_spec(package.manifest.preprocessing, package.assets_path)
    if not isinstance(pre, TextPreprocessor):
        raise InvalidInputError(
            f"shorten applies to text packages; {package.path} takes {package.manifest.modality}"
        )
    feed = pre.transform(list(texts))
    return np.asarray(feed["attention_mask"]).sum(axis=1)


def shortened_length(package: Package, texts: Sequence[str], percentile: float = 95.0) -> int:
    """The ``percentile`` of the texts' token lengths, rounded up to a multiple of 8."""
    if not 50.0 <= percentile <= 100.0:
        raise InvalidInputError(
            f"shorten's percentile must be within 50..100, got {percentile}. Hint: 95 keeps "
            "19 of 20 texts whole"
        )
    if len(texts) == 0:
        raise InvalidInputError("shorten needs the training texts to measure token lengths on")
    lengths = token_lengths(package, texts)
    wanted = float(np.percentile(lengths, percentile))
    return max(ROUND_TO, math.ceil(wanted / ROUND_TO) * ROUND_TO)


def shorten_package(
    parent: Package,
    out: str | Path,
    texts: Sequence[str],
    *,
    percentile: float = 95.0,
    overwrite: bool = False,
) -> Package:
    """``parent`` with its maximum sequence length cut to the ``percentile`` of the token
    lengths of ``texts`` (the training texts); the graph is unchanged (its sequence axis is
    dynamic).

    Raises:
        InvalidInputError: not a text package, or the texts already fit the current length
            well (nothing to cut).
    """
    current = int(parent.manifest.preprocessing.get("max_length", 0))
    length = shortened_length(parent, texts, percentile)
    if length >= current:
        raise InvalidInputError(
            f"shorten would not cut anything: {percentile:g}% of the training texts take up to "
            f"{length} tokens and the package keeps {current}"
        )
    lengths = token_lengths(parent, texts)
    preprocessing = {**parent.manifest.preprocessing, "max_length": length}
    schema = {**parent.manifest.input_schema, "max_tokens": length}
    return write_graph_variant(
        parent,
        out,
        method="shorten",
        settings={"percentile": percentile},
        details={
            "max_length_before": current,
            "max_length": length,
            "texts_truncated": float(np.mean(lengths > length)),
        },
        preprocessing=preprocessing,
        input_schema=schema,
        overwrite=overwrite,
    )

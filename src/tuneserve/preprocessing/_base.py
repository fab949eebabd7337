"""The preprocessor contract shared by training and serving.

A preprocessor turns raw inputs (image files or arrays, table rows, strings) into the
numpy feed of an ONNX graph. The same code runs when a model is trained and when it is
served, so there is no train/serve skew; it never imports torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from tuneserve.exceptions import InvalidInputError, PackageFormatError


class Preprocessor(ABC):
    """Base class of all preprocessors.

    A subclass must provide:
        kind: the registry name, written to the manifest as ``preprocessing.kind``.
        modality: the data modality it accepts.
        fit: learn constants (sizes, normalization, categories) from training inputs.
        transform: raw inputs -> ``{graph input name: array}`` with the batch on axis 0.
        spec: a JSON-ready dict from which ``from_spec`` rebuilds an identical object.
        from_spec: rebuild from ``spec`` and the package's asset folder.
        input_schema: a JSON-ready description of what a caller must send.
        dynamic_axes: which axes of each graph input vary (batch, sequence).
    It may provide ``assets`` (files such as ``tokenizer.json``) to store in the package.
    ``transform`` raises :class:`InvalidInputError` naming the bad item for bad input.
    """

    kind: ClassVar[str]
    modality: ClassVar[str]

    @abstractmethod
    def fit(self, inputs: Any) -> Self:
        """Learn constants from training inputs and return self."""

    @abstractmethod
    def transform(self, inputs: Any) -> dict[str, np.ndarray]:
        """Turn a batch of raw inputs into the graph's feed."""

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """The JSON-ready constants; always includes ``kind``."""

    @classmethod
    @abstractmethod
    def from_spec(cls, spec: dict[str, Any], assets: Path | None = None) -> Self:
        """Rebuild a fitted preprocessor from its spec and asset folder."""

    @abstractmethod
    def input_schema(self) -> dict[str, Any]:
        """What a caller sends, for the manifest and the server's metadata."""

    @abstractmethod
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """For each graph input, the axes whose size changes between calls."""

    def assets(self) -> dict[str, bytes | Path]:
        """Files to store under the package's ``assets/`` folder: contents, or files to copy."""
        return {}


_REGISTRY: dict[str, type[Preprocessor]] = {}


def register_preprocessor(cls: type[Preprocessor]) -> type[Preprocessor]:
    """Register a preprocessor class under its ``kind``; a second one of a kind is refused."""
    if cls.kind in _REGISTRY:
        raise ValueError(
            f"a preprocessor of kind {cls.kind!r} is already registered "
            f"({_REGISTRY[cls.kind].__qualname__}); pick another kind name"
        )
    _REGISTRY[cls.kind] = cls
    return cls


def registered_kinds() -> list[str]:
    """Names of all registered preprocessor kinds."""
    return sorted(_REGISTRY)


def preprocessor_from_spec(spec: dict[str, Any], assets: Path | None = None) -> Preprocessor:
    """Rebuild the preprocessor a manifest describes."""
    kind = spec.get("kind")
    if kind not in _REGISTRY:
        raise PackageFormatError(
            f"unknown preprocessing kind {kind!r}; this tuneserve knows {registered_kinds()}. "
            "Hint: upgrade tuneserve to read packages from newer versions"
        )
    try:
        return _REGISTRY[kind].from_spec(spec, assets)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise PackageFormatError(
            f"the {kind!r} preprocessing spec in the manifest is malformed ({type(exc).__name__}: "
            f"{exc}). Hint: re-export the package; manifests are not meant to be edited"
        ) from exc


def as_batch(inputs: Any, what: str) -> Sequence[Any]:
    """Check that ``inputs`` is a non-empty batch (a list, tuple or array) and return it."""
    if isinstance(inputs, str | bytes | dict) or not hasattr(inputs, "__len__"):
        raise InvalidInputError(
            f"inputs must be a list of {what}, got a single {type(inputs).__name__}. "
            "Hint: wrap one input in a list"
        )
    if len(inputs) == 0:
        raise InvalidInputError(f"inputs is empty; send at least one {what.rstrip('s')}")
    return inputs

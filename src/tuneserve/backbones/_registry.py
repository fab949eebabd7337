"""The backbone registry: one ``register_backbone`` call per backbone, duplicates refused."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tuneserve.exceptions import InvalidInputError

#: Backbone used when the user names none, per modality.
DEFAULT_BACKBONES = {"image": "cnn", "table": "random-forest", "text": "minilm"}


@dataclass(frozen=True)
class BackboneSpec:
    """What the trainers need to know about a backbone.

    Attributes:
        name: Registry name (``--backbone``).
        modality: ``image``, ``table`` or ``text``.
        family: Which registered strategies train it (``tuneserve.training.register_strategy``):
            ``sklearn`` (one fit), ``mlp``, ``cnn``, ``text`` or ``vision`` (torch models
            trained with the loop and exported with torch.onnx).
        description: One line for ``tuneserve train --help`` and error messages.
        factory: Builds the model; its arguments depend on the family.
    """

    name: str
    modality: str
    family: str
    description: str
    factory: Callable[..., Any]

    @property
    def framework(self) -> str:
        """``sklearn`` or ``torch``."""
        return "sklearn" if self.family == "sklearn" else "torch"


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone; a second one with the same name is refused."""
    if spec.name in _REGISTRY:
        raise ValueError(f"a backbone named {spec.name!r} is already registered; pick another name")
    if not spec.family:
        raise ValueError(f"backbone {spec.name!r} names no family")
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones(modality: str | None = None) -> list[BackboneSpec]:
    """Registered backbones, optionally of one modality, sorted by name."""
    return sorted(
        (s for s in _REGISTRY.values() if modality is None or s.modality == modality),
        key=lambda s: s.name,
    )


def get_backbone(name: str, modality: str | None = None) -> BackboneSpec:
    """The registered backbone ``name``, checked against the data's modality.

    Raises:
        InvalidInputError: unknown name (lists the known ones) or a modality mismatch.
    """
    if name not in _REGISTRY:
        known = ", ".join(s.name for s in list_backbones(modality))
        raise InvalidInputError(
            f"unknown backbone {name!r}; known{f' for {modality} data' if modality else ''}: "
            f"{known}"
            + (
                ". A Hugging Face id (org/name) or local model folder works for text and images"
                if modality in (None, "text", "image")
                else ""
            )
        )
    spec = _REGISTRY[name]
    if modality is not None and spec.modality != modality:
        known = ", ".join(s.name for s in list_backbones(modality))
        raise InvalidInputError(
            f"backbone {name!r} is for {spec.modality} data, but this data set is {modality}; "
            f"use one of: {known}"
        )
    return spec

"""The backbone registry: one call per backbone, duplicates refused, clear errors."""

from __future__ import annotations

import pytest

from tuneserve.backbones import (
    DEFAULT_BACKBONES,
    BackboneSpec,
    get_backbone,
    list_backbones,
    register_backbone,
)
from tuneserve.exceptions import InvalidInputError


def test_defaults_are_registered_for_every_modality():
    for modality, name in DEFAULT_BACKBONES.items():
        assert get_backbone(name, modality).modality == modality


def test_duplicate_name_is_refused():
    spec = get_backbone("cnn")
    with pytest.raises(ValueError, match="'cnn' is already registered"):
        register_backbone(spec)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(
        InvalidInputError,
        match=r"unknown backbone 'resnet'; known for table data: hist-gradient-boosting, linear",
    ):
        get_backbone("resnet", "table")


def test_backbone_of_another_modality_is_refused():
    with pytest.raises(
        InvalidInputError, match=r"'cnn' is for image data, but this data set is text"
    ):
        get_backbone("cnn", "text")


def test_every_backbone_belongs_to_a_family():
    for spec in list_backbones():
        assert isinstance(spec, BackboneSpec) and spec.family and spec.description
        assert spec.framework == ("sklearn" if spec.family == "sklearn" else "torch")

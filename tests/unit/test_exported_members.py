"""``__all__`` is the public API: everything in it imports, and nothing is missing."""

from __future__ import annotations

import importlib

import pytest

import tuneserve

MODULES = [
    "tuneserve",
    "tuneserve.data",
    "tuneserve.evaluation",
    "tuneserve.selection",
    "tuneserve.exceptions",
    "tuneserve.exporters",
    "tuneserve.package",
    "tuneserve.preprocessing",
    "tuneserve.runtime",
    "tuneserve.training",
    "tuneserve.backbones",
    "tuneserve.queueing",
    "tuneserve.client",
]


@pytest.mark.parametrize("module_name", MODULES)
def test_all_names_import(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__all__, f"{module_name} exports nothing"
    assert len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{module_name}.{name}"


def test_top_level_lists_the_pipeline() -> None:
    for name in ("load_dataset", "split", "Package", "Predictor", "export_torch", "export_sklearn"):
        assert name in tuneserve.__all__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tuneserve.nope  # noqa: B018


def test_top_level_all_matches_lazy_table() -> None:
    assert sorted(tuneserve.__all__) == sorted([*tuneserve._EXPORTS, "__version__"])

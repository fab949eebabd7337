"""Strategies register with their backbone family by one call; ``plan`` resolves a
backbone, strategy and settings; every registered training strategy builds a package."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tuneserve.backbones import get_backbone, list_backbones
from tuneserve.exceptions import InvalidInputError
from tuneserve.training import (
    Strategy,
    get_strategy,
    list_strategies,
    plan,
    register_strategy,
)


def test_every_backbone_family_has_training_strategies():
    for spec in list_backbones():
        assert list_strategies(spec.family), spec.name


def test_the_first_registered_strategy_is_the_default():
    # encoders: auto measures the others on this machine and picks what fits the budget
    assert get_strategy(get_backbone("minilm"), None).name == "auto"
    assert get_strategy(get_backbone("minilm"), "partial").name == "partial"
    expected = ["auto", "probe", "partial", "full", "lora"]
    assert [s.name for s in list_strategies("text")] == expected
    assert [s.name for s in list_strategies("vision")] == expected


def test_an_unknown_strategy_names_the_family_s_own():
    with pytest.raises(
        InvalidInputError,
        match=r"strategy 'lora' is not valid for backbone 'cnn'; it supports full",
    ):
        get_strategy(get_backbone("cnn"), "lora")
    with pytest.raises(InvalidInputError, match=r"objective 'denoise' is not valid for backbone"):
        get_strategy(get_backbone("minilm"), "denoise", "pretrain")


def test_a_duplicate_strategy_is_refused():
    probe = get_strategy(get_backbone("minilm"), "probe")
    with pytest.raises(ValueError, match="'probe' is already registered for family 'text'"):
        register_strategy(probe)
    # the same name at another stage, or for another family, is another strategy
    other = replace(probe, family="text-test-only", name="probe")
    assert register_strategy(other) is other
    assert list_strategies("text-test-only") == [other]


def test_plan_resolves_defaults_per_strategy():
    assert plan("text").strategy.name == "auto"
    probe = plan("text", strategy="probe")
    assert (probe.backbone, probe.strategy.name) == ("minilm", "probe")
    assert probe.config is not None and probe.config.learning_rate == 1e-2
    full = plan("text", strategy="full", settings={"epochs": 7, "batch_size": None})
    assert full.config is not None
    assert (full.config.epochs, full.config.batch_size, full.config.mixed_precision) == (
        7,
        16,
        "auto",
    )
    assert plan("table").config is None  # random-forest: one fit, no loop
    hf = plan("text", backbone="sentence-transformers/all-MiniLM-L6-v2")
    assert hf.spec.name == "minilm" and hf.backbone.startswith("sentence-transformers/")


def test_plan_refuses_unknown_settings_and_sklearn_from_a_package(cancer_package):
    with pytest.raises(InvalidInputError, match=r"unknown training settings \['epoch'\]"):
        plan("image", settings={"epoch": 3})
    from tuneserve.package import Package

    with pytest.raises(InvalidInputError, match="cannot start from a package"):
        plan("table", backbone="logreg", init=Package.load(cancer_package))


def test_strategy_registry_holds_what_each_stage_offers():
    assert {(s.family, s.name) for s in list_strategies(stage="update")} == {
        ("sklearn", "partial_fit"),
        ("mlp", "continue"),
    }
    assert {(s.family, s.name) for s in list_strategies(stage="pretrain")} == {
        ("cnn", "contrastive"),
        ("cnn", "denoise"),
        ("vision", "contrastive"),
        ("text", "contrastive"),
    }
    assert all(isinstance(s, Strategy) for s in list_strategies())


def test_a_seed_in_the_settings_is_the_loop_s_seed():
    from tuneserve.training import default_config

    assert default_config("mlp", "full", seed=3).seed == 3  # as before the seam
    chosen = plan("table", backbone="mlp", settings={"seed": 5}, seed=1)
    assert chosen.config is not None and chosen.config.seed == 5 and chosen.seed == 1


def test_errors_name_the_backbone_the_user_gave():
    with pytest.raises(InvalidInputError, match=r"objective 'denoise' .* backbone 'some-org/bert'"):
        plan("text", backbone="some-org/bert", strategy="denoise", stage="pretrain")


def test_build_names_unlabeled_data_by_its_fingerprint(tmp_path):
    from tuneserve.data import Unlabeled, load
    from tuneserve.training import build

    digits = load("digits")
    data = Unlabeled("d", "image", list(digits.X[:120]), "digits")
    chosen = plan("image", stage="pretrain", settings={"epochs": 1, "batch_size": 64})
    package = build(data, chosen, tmp_path / "enc")  # a plan not made by pretrain()
    assert package.manifest.lineage.data_fingerprint == data.fingerprint
    assert package.manifest.lineage.details["data"]["items"] == 120


def test_tracked_is_a_deprecated_name_of_track(tmp_path):
    import tuneserve

    with pytest.warns(DeprecationWarning, match="tracked= is deprecated"):
        result = tuneserve.train("iris", tmp_path / "p", backbone="logreg", tracked=False)
    assert result.run_id is None

"""``compress``: the search on real packages, measured through ONNX Runtime on the rows the
package never saw; bad input refused with the rule, the value and the fix."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import tuneserve
from tuneserve.compression import CompressionError, compress
from tuneserve.data import load
from tuneserve.exceptions import InvalidInputError
from tuneserve.package import Package
from tuneserve.runtime import Predictor

PTQ = ["int8-dynamic", "int8-static", "fp16"]


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> Package:
    """The digits CNN trained through the seam: its held-out rows are in its lineage."""
    out = tmp_path_factory.mktemp("compress") / "digits-cnn"
    return tuneserve.train("digits", out, backbone="cnn", settings={"epochs": 4}).package


@pytest.fixture(scope="module")
def searched(cnn, tmp_path_factory):
    out = tmp_path_factory.mktemp("compress") / "search"
    return compress(cnn, "digits", out, methods=PTQ, max_accuracy_drop=0.02)


def test_every_variant_is_measured_on_the_held_out_rows_and_the_best_is_written(
    cnn, searched
) -> None:
    held = cnn.manifest.lineage.held_out
    assert searched.scored == len(held.rows) and searched.rows == held.what
    names = {m.name for m in searched.variants}
    assert {"int8-dynamic", "int8-static-minmax", "int8-static-entropy", "fp16"} <= names
    # the original is scored the way evaluate scores it: on the held-out rows only
    digits = load("digits")
    test = digits.subset(np.asarray(held.rows))
    accuracy = float(np.mean(Predictor(cnn).run(test.X).argmax(1) == test.y))
    assert searched.original.value == pytest.approx(accuracy)
    for m in searched.variants:
        variant = Package.load(m.path)
        assert variant.manifest.lineage.parent == cnn.id
        assert variant.manifest.lineage.compression.source == cnn.id
        assert variant.manifest.lineage.held_out.rows == held.rows
        assert m.drop == pytest.approx(searched.original.value - m.value)
        assert m.drop_low is not None and m.drop_low <= m.drop <= m.drop_high
        assert m.latency_ms > 0 and m.batch_latency_ms > 0 and m.size_mb > 0
    int8 = next(m for m in searched.variants if m.name == "int8-static-minmax")
    assert int8.size_mb < 0.5 * searched.original.size_mb  # 8-bit weights


def test_the_chosen_variant_meets_the_budget_and_is_a_package(searched) -> None:
    chosen = searched.chosen
    assert chosen is not None and searched.package is not None
    assert chosen.drop <= 0.02 and not searched.limits[chosen.name]
    assert searched.package.path == searched.out / "chosen"
    assert searched.package.id == chosen.package_id  # the same package, copied whole
    assert Predictor(searched.package).predict(load("digits").X[:3])[0].label is not None
    assert chosen.name in searched.front or any(
        m.name in searched.front and m.latency_ms <= chosen.latency_ms for m in searched.variants
    )


def test_the_report_and_summary_are_written(searched) -> None:
    page = searched.report.read_text()
    assert "<img" in page and "rules broken" in page
    for m in searched.variants:
        assert m.name in page
    summary = json.loads((searched.out / "compression.json").read_text())
    assert summary["chosen"] == searched.chosen.name
    assert {v["name"] for v in summary["variants"]} == {m.name for m in searched.variants}


def test_a_rerun_reuses_the_variants_it_built(cnn, searched, monkeypatch) -> None:
    import tuneserve.compression._search as search

    def refuse(*args, **kwargs):
        raise AssertionError("a variant was rebuilt instead of reused")

    monkeypatch.setattr(search, "apply_step", refuse)
    again = compress(cnn, "digits", searched.out, methods=["int8-dynamic", "fp16"])
    before = {m.name: m.package_id for m in searched.variants}
    assert all(before[m.name] == m.package_id for m in again.variants)


def test_a_budget_no_variant_meets_names_the_closest_and_what_limited_each(cnn, tmp_path) -> None:
    with pytest.raises(CompressionError) as raised:
        tuneserve.compress(
            cnn, "digits", tmp_path / "s", methods=["fp16"], latency_ms=1e-6, track=False
        )
    message = str(raised.value)
    assert "no variant of 1 meets the rules" in message
    assert "fp16: latency" in message and "> 1e-06 ms" in message
    assert (tmp_path / "s" / "report.html").is_file()  # written before the error
    assert not (tmp_path / "s" / "chosen").exists()
    assert raised.value.result.chosen is None


def test_a_method_that_does_not_apply_is_refused_naming_those_that_do(cnn, tmp_path) -> None:
    with pytest.raises(InvalidInputError) as raised:
        compress(cnn, "digits", tmp_path / "s", methods=["shorten"])
    message = str(raised.value)
    assert "shorten: it shortens token sequences" in message
    assert "Methods that apply:" in message and "int8-dynamic" in message


def test_unknown_methods_and_bad_budgets_are_refused(cnn, tmp_path) -> None:
    with pytest.raises(InvalidInputError, match=r"unknown compression method.*int4.*known:"):
        compress(cnn, "digits", tmp_path / "a", methods=["int4"])
    with pytest.raises(InvalidInputError, match="--max-accuracy-drop is a fraction"):
        compress(cnn, "digits", tmp_path / "b", max_accuracy_drop=5)


def test_a_scikit_learn_package_says_why_nothing_applies(tmp_path) -> None:
    logreg = tuneserve.train("iris", tmp_path / "iris", backbone="logreg").package
    with pytest.raises(InvalidInputError) as raised:
        compress(logreg, "iris", tmp_path / "s")
    message = str(raised.value)
    assert "no compression method applies" in message
    assert "distill: it retrains a torch model and this is a scikit-learn package" in message


def test_data_of_another_kind_is_refused(cnn, tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="takes image inputs but iris holds table data"):
        compress(cnn, "iris", tmp_path / "s", methods=["fp16"])


def test_a_folder_that_is_not_a_search_is_not_overwritten(cnn, tmp_path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match="exists and is not a compression folder"):
        compress(cnn, "digits", tmp_path, methods=["fp16"], overwrite=True)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_each_variant_is_an_mlflow_run(cnn, tmp_path) -> None:
    from tuneserve.registry.tracking import client, current_store

    result = tuneserve.compress(
        cnn, "digits", tmp_path / "s", methods=["fp16", "int8-dynamic"], track=True
    )
    assert set(result.run_ids) == {"fp16", "int8-dynamic"}
    mlflow = client(current_store())
    for name, run_id in result.run_ids.items():
        run = mlflow.get_run(run_id)
        measured = next(m for m in result.variants if m.name == name)
        assert run.data.tags["tuneserve.kind"] == "compress"
        assert run.data.metrics["latency_ms"] == pytest.approx(measured.latency_ms)
        assert run.data.metrics["value"] == pytest.approx(measured.value)
        assert run.data.tags["tuneserve.evaluated_package"] == measured.package_id


def test_a_text_package_gets_a_shorter_sequence_length_from_the_data(
    text_package, reviews_csv, tmp_path
) -> None:
    """The reviews are short: the 95th percentile of their token lengths, rounded up to 8,
    replaces the package's 32 tokens; the graph is the same. The package is a bag of
    embeddings tuneserve cannot rebuild, so only its graph is compressed."""
    result = compress(text_package, reviews_csv, tmp_path / "s", max_accuracy_drop=1.0)
    names = {m.name for m in result.variants}
    assert {"shorten", "int8-dynamic", "shorten+int8-dynamic"} <= names
    assert (
        "distill" in result.not_applicable and "cannot rebuild" in result.not_applicable["distill"]
    )
    short = Package.load(next(m.path for m in result.variants if m.name == "shorten"))
    length = short.manifest.preprocessing["max_length"]
    assert length < 32 and length % 8 == 0
    assert short.manifest.input_schema["max_tokens"] == length
    assert short.graph_path.read_bytes() == Package.load(text_package).graph_path.read_bytes()
    details = short.manifest.lineage.compression.details
    assert details["max_length_before"] == 32 and details["max_length"] == length
    assert "fresh 20% test split" in result.rows  # not the data the package was trained on


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"distill": {"epochs": "abc"}}, "--set distill: {'epochs': 'abc'} is not a valid"),
        ({"distill": {"shrink": 0}}, "shrink"),
        ({"distill": {"no_such_thing": 1}}, "unknown training settings ['no_such_thing']"),
        ({"int8-static": {"calibrate": "kl"}}, "--set int8-static.calibrate: int8-static takes"),
        ({"int4": {"x": 1}}, "--set names method 'int4'"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_built(cnn, tmp_path, settings, said) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(said)):
        compress(cnn, "digits", tmp_path / "s", settings=settings)
    assert not (tmp_path / "s").exists()


def test_a_variant_that_fails_with_any_error_is_reported_and_the_search_goes_on(
    cnn, tmp_path, monkeypatch
) -> None:
    import tuneserve.compression._search as search

    real = search.apply_step

    def broken_fp16(context, step, *args, **kwargs):
        if step.method == "fp16":
            raise RuntimeError("the fp16 converter broke")
        return real(context, step, *args, **kwargs)

    monkeypatch.setattr(search, "apply_step", broken_fp16)
    result = compress(cnn, "digits", tmp_path / "s", methods=["fp16", "int8-dynamic"])
    assert result.failed == {"fp16": "RuntimeError: the fp16 converter broke"}
    assert [m.name for m in result.variants] == ["int8-dynamic"]
    assert result.chosen is not None and "fp16" in (tmp_path / "s" / "report.html").read_text()


def test_a_training_variant_is_kept_by_a_rerun_and_retrained_when_its_settings_change(
    cnn, tmp_path
) -> None:
    first = compress(cnn, "digits", tmp_path / "s", methods=["sparse"], epochs=1)
    again = compress(cnn, "digits", tmp_path / "s", methods=["sparse"], epochs=1)
    assert again.variants[0].package_id == first.variants[0].package_id  # kept
    changed = compress(
        cnn,
        "digits",
        tmp_path / "s",
        methods=["sparse"],
        epochs=1,
        settings={"sparse": {"sparsity": 0.8}},
    )
    assert not changed.failed  # the old checkpoint did not block the new settings
    assert changed.variants[0].package_id != first.variants[0].package_id
    assert changed.variants[0].details["sparsity"] == pytest.approx(0.8, abs=0.01)


def test_held_out_rows_given_as_unlabeled_inputs_are_left_out(cnn, tmp_path) -> None:
    digits = load("digits")
    held = cnn.manifest.lineage.held_out.rows
    unlabeled = [digits.X[i] for i in held[:20]] + [digits.X[i] for i in range(5)]
    train_rows = set(range(len(digits))) - set(held)
    fresh = sum(1 for i in range(5) if i in train_rows)
    result = compress(
        cnn, "digits", tmp_path / "s", methods=["distill"], epochs=1, unlabeled=unlabeled
    )
    assert result.notes and result.notes[0].startswith(f"{20 + 5 - fresh} of the 25 unlabeled")
    details = Package.load(result.variants[0].path).manifest.lineage.compression.details
    assert details["unlabeled_rows"] == fresh


def test_a_rerun_that_chooses_nothing_removes_the_earlier_choice(cnn, tmp_path) -> None:
    compress(cnn, "digits", tmp_path / "s", methods=["fp16"])
    assert (tmp_path / "s" / "chosen").is_dir()
    with pytest.raises(CompressionError):
        tuneserve.compress(cnn, "digits", tmp_path / "s", methods=["fp16"], size_mb=1e-6)
    assert not (tmp_path / "s" / "chosen").exists()


def test_other_data_or_seed_starts_the_search_over(cnn, tmp_path) -> None:
    iris_like = load("digits").subset(np.arange(900))  # not the data the CNN records
    first = compress(cnn, iris_like, tmp_path / "s", methods=["fp16"], seed=0)
    stamp = json.loads((tmp_path / "s" / "search.json").read_text())
    compress(cnn, iris_like, tmp_path / "s", methods=["fp16"], seed=1)
    assert json.loads((tmp_path / "s" / "search.json").read_text())["seed"] == 1 != stamp["seed"]
    assert "fresh 20% test split" in first.rows

"""Knowledge distillation (``compress`` stage, strategy ``distill``): real teachers, real
students, real packages, run through ONNX Runtime and rebuilt for the next step."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tuneserve.data import Dataset, Unlabeled, load
from tuneserve.exceptions import DataError, InvalidInputError
from tuneserve.exporters import PARITY_TOLERANCE, export_torch
from tuneserve.package import Package
from tuneserve.runtime import Predictor
from tuneserve.training import build, plan, train
from tuneserve.training.distill import Distillation, DistillConfig, kept_blocks
from tuneserve.training.source_model import source_model


def _distill(data: Dataset, teacher: Package, out, unlabeled=None, **settings):
    chosen = plan(
        data.modality, strategy="distill", stage="compress", init=teacher, settings=settings
    )
    return build(data, replace(chosen, unlabeled=unlabeled), out)


def _test_rows(data: Dataset, package: Package) -> Dataset:
    held = package.manifest.lineage.held_out
    assert held is not None and held.data_fingerprint == data.fingerprint
    return data.subset(held.rows)


def _accuracy(package: Package, test: Dataset) -> float:
    probs = Predictor(package).predict_proba(test.X)
    return float(np.mean(probs.argmax(1) == test.y))


@pytest.fixture(scope="module")
def digits():
    return load("digits")


@pytest.fixture(scope="module")
def cnn_teacher(digits_package) -> Package:
    return Package.load(digits_package)


@pytest.fixture(scope="module")
def cnn_student(digits, cnn_teacher, tmp_path_factory) -> Package:
    out = tmp_path_factory.mktemp("distill") / "student"
    return _distill(digits, cnn_teacher, out, epochs=4, learning_rate=3e-3)


def test_cnn_student_is_smaller_serves_and_keeps_accuracy(digits, cnn_teacher, cnn_student):
    lineage = cnn_student.manifest.lineage
    c = lineage.compression
    assert c is not None and c.method == "distill" and c.steps == ["distill"]
    assert c.source == cnn_teacher.id and lineage.parent == cnn_teacher.id
    assert c.settings == {"temperature": 2.0, "alpha": 0.5, "shrink": 0.5}
    assert c.details["student_parameters"] < c.details["teacher_parameters"] / 3
    assert c.details["unlabeled_rows"] == 0
    assert lineage.backbone.model_class == "SmallCNN"
    assert lineage.backbone.strategy == "distill"
    assert lineage.backbone.model_arguments["width"] == 16  # the teacher's 32, halved
    assert lineage.backbone.model_arguments["hidden"] == 64
    assert lineage.trainer == "distill" and lineage.best_epoch is not None
    teacher_bytes = (cnn_teacher.path / "model.onnx").stat().st_size
    assert (cnn_student.path / "model.onnx").stat().st_size < teacher_bytes / 2
    assert cnn_student.manifest.label_names == cnn_teacher.manifest.label_names

    test = _test_rows(digits, cnn_student)
    accuracy = _accuracy(cnn_student, test)
    assert accuracy == pytest.approx(cnn_student.manifest.metrics["test_accuracy"])
    assert accuracy >= 0.75  # 4 short epochs; the teacher has about 0.9
    assert _accuracy(cnn_teacher, test) - accuracy < 0.15


def test_student_is_rebuilt_for_the_next_step_and_the_chain_continues(
    digits, cnn_teacher, cnn_student, tmp_path
):
    rebuilt = source_model(cnn_student, "distill")
    assert rebuilt.family == "cnn"
    test = _test_rows(digits, cnn_student)
    feed = rebuilt.preprocessor.transform(test.X[:32])["input"]
    with torch.no_grad():
        probs = torch.softmax(rebuilt.model(torch.from_numpy(feed)), -1).numpy()
    served = Predictor(cnn_student).predict_proba(test.X[:32])
    assert np.max(np.abs(probs - served)) <= PARITY_TOLERANCE

    again = _distill(digits, cnn_student, tmp_path / "again", epochs=1, shrink=0.5)
    c = again.manifest.lineage.compression
    assert c.steps == ["distill", "distill"]
    assert c.source == cnn_teacher.id  # the uncompressed package the chain started from
    assert again.manifest.lineage.parent == cnn_student.id
    assert again.manifest.lineage.backbone.model_arguments["width"] == 8


def test_unlabeled_inputs_get_soft_labels(digits, cnn_teacher, tmp_path):
    few, rest = digits.sample_per_class(15, seed=1)
    extra = list(rest.X[:300])
    plain = _distill(few, cnn_teacher, tmp_path / "plain", epochs=2)
    unlabeled = Unlabeled("extra", "image", extra, "digits")
    more = _distill(few, cnn_teacher, tmp_path / "more", unlabeled=unlabeled, epochs=2)
    assert plain.manifest.lineage.compression.details["unlabeled_rows"] == 0
    details = more.manifest.lineage.compression.details
    assert details["unlabeled_rows"] == 300
    assert details["unlabeled_fingerprint"] == unlabeled.fingerprint
    assert details["labeled_rows"] == plain.manifest.lineage.compression.details["labeled_rows"]
    test = _test_rows(few, more)
    a = Predictor(plain).predict_proba(test.X)
    b = Predictor(more).predict_proba(test.X)
    assert np.max(np.abs(a - b)) > 1e-3  # the extra rows changed what the student learned
    # unlabeled inputs of another kind are refused before training
    with pytest.raises(InvalidInputError, match="unlabeled inputs are text"):
        _distill(few, cnn_teacher, tmp_path / "bad", Unlabeled("t", "text", ["a"], "x"))


def test_classes_coded_in_another_order_are_mapped_to_the_teachers(mlp_teacher, tmp_path):
    data, teacher = mlp_teacher("wine")
    names = list(teacher.manifest.label_names)
    shuffled = data.select_classes(names[::-1])  # the same classes, coded backwards
    assert shuffled.label_names != data.label_names
    student = _distill(shuffled, teacher, tmp_path / "s", epochs=60, learning_rate=3e-3)
    assert student.manifest.label_names == teacher.manifest.label_names
    test = _test_rows(shuffled, student)
    probs = Predictor(student).predict_proba(test.X)
    in_teacher_order = np.array([names.index(n) for n in shuffled.label_names])[test.y]
    accuracy = float(np.mean(probs.argmax(1) == in_teacher_order))
    assert accuracy == pytest.approx(student.manifest.metrics["test_accuracy"])
    assert accuracy >= 0.85  # a wrong coding would teach contradicting labels

    renamed = replace(data, label_names=("zero", *names[1:]))
    with pytest.raises(DataError, match=r"classes \['zero'\] that the teacher does not"):
        _distill(renamed, teacher, tmp_path / "x", epochs=1)


@pytest.fixture(scope="module")
def mlp_teacher(tmp_path_factory):
    """An MLP package per built-in table (trained once per module)."""
    made: dict[str, tuple[Dataset, Package]] = {}

    def get(name: str) -> tuple[Dataset, Package]:
        if name not in made:
            data = load(name)
            out = tmp_path_factory.mktemp("teachers") / name
            made[name] = (data, train(data, out, backbone="mlp", settings={"epochs": 30}).package)
        return made[name]

    return get


@pytest.mark.parametrize("name", ["wine", "diabetes"])
def test_mlp_students(name, mlp_teacher, tmp_path):
    data, teacher = mlp_teacher(name)
    student = _distill(data, teacher, tmp_path / "student", epochs=60, learning_rate=3e-3)
    c = student.manifest.lineage.compression
    assert student.manifest.lineage.backbone.model_arguments["hidden"] == [64, 32]
    assert c.details["student_parameters"] < c.details["teacher_parameters"] / 2
    test = _test_rows(data, student)
    served = Predictor(student).run(test.X)
    rebuilt = source_model(student)  # the student continues the chain like any MLP
    feed = torch.from_numpy(rebuilt.preprocessor.transform(test.X)["input"])
    with torch.no_grad():
        out = rebuilt.model(feed)
    if data.task == "regression":
        assert student.manifest.lineage.backbone.model_class == "ScaledOutput"
        np.testing.assert_allclose(out.reshape(-1).numpy(), served.reshape(-1), atol=1e-3)
        mse = student.manifest.metrics["test_mse"]
        assert mse == pytest.approx(float(np.mean((served.reshape(-1) - test.y) ** 2)), rel=1e-4)
        assert mse < 0.7 * float(np.var(test.y))  # learned, not the mean
        assert mse < 1.5 * teacher.manifest.metrics["test_mse"]
    else:
        np.testing.assert_allclose(torch.softmax(out, -1).numpy(), served, atol=1e-4)
        assert student.manifest.metrics["test_accuracy"] >= 0.85
        assert (
            student.manifest.metrics["test_accuracy"]
            >= teacher.manifest.metrics["test_accuracy"] - 0.1
        )


def test_resume_continues_the_run_from_its_checkpoint(mlp_teacher, tmp_path):
    data, teacher = mlp_teacher("wine")
    chosen = plan(
        "table", strategy="distill", stage="compress", init=teacher, settings={"epochs": 6}
    )
    first = build(data, chosen, tmp_path / "a", checkpoint_dir=tmp_path / "ckpt")
    assert (tmp_path / "ckpt/last.pt").is_file()
    resumed = build(data, chosen, tmp_path / "b", checkpoint_dir=tmp_path / "ckpt", resume=True)
    assert resumed.manifest.lineage.history == first.manifest.lineage.history
    rows = data.X.iloc[:20]
    np.testing.assert_array_equal(
        Predictor(first).predict_proba(rows), Predictor(resumed).predict_proba(rows)
    )
    # other distillation settings are another run: the checkpoint is refused
    other = plan(
        "table",
        strategy="distill",
        stage="compress",
        init=teacher,
        settings={"epochs": 6, "temperature": 4.0},
    )
    with pytest.raises(InvalidInputError, match="other training settings"):
        build(data, other, tmp_path / "c", checkpoint_dir=tmp_path / "ckpt", resume=True)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"shrink": 0}, r"shrink must be in \(0, 1\].*got 0"),
        ({"shrink": 1.5}, r"shrink must be in \(0, 1\].*got 1.5"),
        ({"alpha": 2}, r"alpha must be in \[0, 1\].*got 2"),
        ({"temperature": 0}, r"temperature must be a number > 0, got 0"),
        ({"layers": 0}, r"layers must be >= 1"),
        ({"max_length": 1}, r"max_length must be >= 2"),
        ({"rank": 3}, r"unknown training settings \['rank'\]"),
    ],
)
def test_bad_settings_are_refused(cnn_teacher, settings, message):
    with pytest.raises(InvalidInputError, match=message):
        plan("image", strategy="distill", stage="compress", init=cnn_teacher, settings=settings)


def test_settings_of_other_families_are_refused_before_training(digits, cnn_teacher, tmp_path):
    with pytest.raises(InvalidInputError, match="layers applies to text and vision packages"):
        _distill(digits, cnn_teacher, tmp_path / "x", layers=2)
    with pytest.raises(InvalidInputError, match="max_length applies to text packages"):
        _distill(digits, cnn_teacher, tmp_path / "y", max_length=16)


def test_packages_without_torch_weights_are_refused(digits_model, digits, cancer_package, tmp_path):
    bare = tmp_path / "bare"
    export_torch(
        digits_model.model,
        digits_model.preprocessor,
        bare,
        task="classification",
        sample_inputs=digits.X[:8],
        label_names=digits_model.label_names,
        lineage=digits_model.lineage,
        weights=False,
    )
    with pytest.raises(InvalidInputError, match=r"needs its torch weights, extras/weights.pt"):
        _distill(digits, Package.load(bare), tmp_path / "x", epochs=1)
    assert not (tmp_path / "x").exists()

    cancer = load("breast_cancer")
    logreg = Package.load(cancer_package)
    with pytest.raises(InvalidInputError, match="cannot be used to compress"):
        plan("table", strategy="distill", stage="compress", init=logreg)
    # named as an MLP, the package is still no torch model
    chosen = plan("table", backbone="mlp", strategy="distill", stage="compress", init=logreg)
    with pytest.raises(InvalidInputError, match=r"holds a \S+ model"):
        build(cancer, chosen, tmp_path / "y")


@torch.no_grad()
def test_objective_weighs_soft_and_hard_terms():
    from torch.nn import functional as F

    torch.manual_seed(0)
    student = torch.nn.Linear(4, 3)
    x, teacher = torch.randn(6, 4), torch.randn(6, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    labeled = torch.tensor([1.0, 1, 1, 0, 0, 0])  # the last three rows are unlabeled
    out = student(x)
    kl = F.kl_div(F.log_softmax(out / 2, -1), F.softmax(teacher / 2, -1), reduction="none").sum(-1)
    ce = F.cross_entropy(out[:3], y[:3])
    objective = Distillation(student, "classification", temperature=2.0, alpha=0.3).train()
    expected = 0.3 * 4 * kl.mean() + 0.7 * ce  # T^2 = 4; unlabeled rows: soft term only
    assert float(objective(x, teacher, y, labeled)) == pytest.approx(float(expected), rel=1e-5)
    # validation: the true labels' loss alone (what picks the kept epoch)
    objective.eval()
    full = F.cross_entropy(out, y)
    assert float(objective(x, teacher, y, torch.ones(6))) == pytest.approx(float(full), rel=1e-5)
    # regression: squared errors to the teacher's values and to the true ones
    values = torch.nn.Linear(4, 1)
    t, v = torch.randn(6), torch.randn(6)
    pred = values(x).reshape(-1)
    mixed = 0.5 * ((pred - t) ** 2).mean() + 0.5 * ((pred - v) ** 2)[:3].mean()
    regression = Distillation(values, "regression", temperature=2.0, alpha=0.5).train()
    assert float(regression(x, t, v, labeled)) == pytest.approx(float(mixed), rel=1e-5)


def test_kept_blocks_are_spread_evenly_from_the_first():
    assert kept_blocks(6, 3) == [0, 2, 4]
    assert kept_blocks(12, 6) == [0, 2, 4, 6, 8, 10]
    assert kept_blocks(6, 1) == [0]
    assert kept_blocks(6, 4) == [0, 1, 3, 4]
    assert DistillConfig().layers is None


def test_vision_student_keeps_half_the_blocks(tiny_vit, digits, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    few = digits.sample_per_class(20, seed=0)[0]
    teacher = train(
        few, tmp_path / "teacher", backbone=str(tiny_vit), strategy="probe", settings={"epochs": 10}
    ).package
    with pytest.raises(InvalidInputError, match="layers must be fewer than the teacher's 2"):
        _distill(few, teacher, tmp_path / "x", layers=2)
    student = _distill(few, teacher, tmp_path / "student", epochs=2, learning_rate=1e-3)
    c = student.manifest.lineage.compression
    assert c.settings["layers"] == 1 and c.details["blocks_kept"] == [0]
    rebuilt = source_model(student)
    assert rebuilt.model.encoder.config.num_hidden_layers == 1
    assert len(rebuilt.model.blocks()) == 1
    test = _test_rows(few, student)
    feed = torch.from_numpy(rebuilt.preprocessor.transform(test.X)["input"])
    with torch.no_grad():
        probs = torch.softmax(rebuilt.model(feed), -1).numpy()
    served = Predictor(student).predict_proba(test.X)
    assert np.max(np.abs(probs - served)) <= PARITY_TOLERANCE


@pytest.mark.slow
def test_text_student_keeps_three_of_minilms_six_layers(reviews_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    data = load(reviews_csv)
    teacher = train(data, tmp_path / "teacher", strategy="probe", max_length=32).package
    student = _distill(
        data, teacher, tmp_path / "student", layers=3, max_length=16, epochs=3, learning_rate=2e-4
    )
    lineage = student.manifest.lineage
    assert lineage.compression.settings == {
        "temperature": 2.0,
        "alpha": 0.5,
        "layers": 3,
        "max_length": 16,
    }
    assert lineage.compression.details["blocks_kept"] == [0, 2, 4]
    assert student.manifest.preprocessing["max_length"] == 16
    assert teacher.manifest.preprocessing["max_length"] == 32
    rebuilt = source_model(student)
    assert rebuilt.model.encoder.config.num_hidden_layers == 3
    assert len(rebuilt.model.blocks()) == 3
    assert rebuilt.preprocessor.max_length == 16
    test = _test_rows(data, student)
    assert _accuracy(student, test) >= 0.8
    c = lineage.compression.details
    assert c["student_parameters"] < c["teacher_parameters"]

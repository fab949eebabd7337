"""Pruning as compress strategies: ``prune`` (structured: a smaller dense graph) and
``sparse`` (unstructured: zeros in a graph of the same size), on real packages."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

import tuneserve
from tuneserve.data import load
from tuneserve.exceptions import DataError, InvalidInputError
from tuneserve.runtime import Predictor
from tuneserve.training import build, plan
from tuneserve.training.source_model import source_model


@pytest.fixture(scope="module")
def cnn_parent(tmp_path_factory):
    out = tmp_path_factory.mktemp("parents") / "cnn"
    return tuneserve.train("digits", out, backbone="cnn", track=False, settings={"epochs": 3})


@pytest.fixture(scope="module")
def mlp_parents(tmp_path_factory):
    """An MLP classifier and an MLP regressor (a ScaledOutput graph)."""
    base = tmp_path_factory.mktemp("parents")
    return {
        name: tuneserve.train(name, base / name, backbone="mlp", track=False, settings=settings)
        for name, settings in (
            ("breast_cancer", {"epochs": 15}),
            ("diabetes", {"epochs": 30, "learning_rate": 1e-2}),
        )
    }


def _params(package) -> int:
    return sum(p.numel() for p in source_model(package).model.parameters())


def _test_rows(package, data):
    return data.subset(np.asarray(package.manifest.lineage.held_out.rows))


def _onnx_size(package) -> int:
    return (package.path / "model.onnx").stat().st_size


def _check_compression(pkg, parent, method: str) -> dict:
    lineage = pkg.manifest.lineage
    compression = lineage.compression
    assert compression.method == method
    assert compression.steps == [method]
    assert compression.source == parent.id
    assert lineage.parent == parent.id
    assert lineage.trainer == method
    assert lineage.backbone.strategy == method
    assert lineage.history and lineage.best_epoch is not None
    return compression.details


def _prune(data_name: str, modality: str, parent, out, strategy: str, **settings):
    p = plan(modality, strategy=strategy, stage="compress", init=parent, settings=settings)
    return build(load(data_name), p, out)


def test_structured_prune_cnn_is_smaller_accurate_and_rebuildable(cnn_parent, tmp_path):
    parent = cnn_parent.package
    pkg = _prune("digits", "image", parent, tmp_path / "pruned", "prune", epochs=3, ratio=0.5)
    details = _check_compression(pkg, parent, "prune")
    assert pkg.manifest.lineage.compression.settings["ratio"] == 0.5
    assert details["channels"] == {
        "width": {"before": 32, "after": 16},
        "hidden": {"before": 128, "after": 64},
    }
    before, after = details["parameters"]["before"], details["parameters"]["after"]
    assert (before, after) == (_params(parent), _params(pkg))
    assert after < 0.3 * before  # half the channels of each layer: about a quarter of weights
    assert _onnx_size(pkg) < 0.5 * _onnx_size(parent)

    test = _test_rows(pkg, load("digits"))
    probs = Predictor(pkg).predict_proba(test.X)
    accuracy = float(np.mean(probs.argmax(1) == test.y))
    assert accuracy >= 0.8
    assert accuracy >= cnn_parent.test_metrics["test_accuracy"] - 0.1
    assert pkg.manifest.metrics["test_accuracy"] == pytest.approx(accuracy, abs=0.01)

    rebuilt = source_model(pkg)  # from model_arguments (width 16, hidden 64) and weights
    assert type(rebuilt.model).__name__ == "SmallCNN"
    assert (rebuilt.model.config["width"], rebuilt.model.config["hidden"]) == (16, 64)
    import torch

    feed = rebuilt.preprocessor.transform(test.X[:16])["input"]
    with torch.no_grad():
        torch_probs = torch.softmax(rebuilt.model(torch.from_numpy(feed)), -1).numpy()
    np.testing.assert_allclose(torch_probs, probs[:16], atol=1e-4)


@pytest.mark.parametrize("data_name", ["breast_cancer", "diabetes"])
def test_structured_prune_mlp(mlp_parents, tmp_path, data_name):
    parent_result = mlp_parents[data_name]
    parent = parent_result.package
    pkg = _prune(data_name, "table", parent, tmp_path / "pruned", "prune", epochs=10, ratio=0.5)
    details = _check_compression(pkg, parent, "prune")
    assert details["channels"]["hidden"] == {"before": [128, 64], "after": [64, 32]}
    assert _params(pkg) == details["parameters"]["after"] < 0.5 * _params(parent)
    assert _onnx_size(pkg) < 0.6 * _onnx_size(parent)
    rebuilt = source_model(pkg)
    assert rebuilt.model.config["hidden"] == [64, 32]

    test = _test_rows(pkg, load(data_name))
    out = Predictor(pkg).run(test.X)  # probabilities, or values
    if data_name == "breast_cancer":
        assert float(np.mean(out.argmax(1) == test.y)) >= 0.9
    else:  # regression: the pruned graph still predicts in the target's scale
        assert type(rebuilt.model).__name__ == "ScaledOutput"
        mse = float(np.mean((np.asarray(out).reshape(-1) - test.y) ** 2))
        assert mse < 0.8 * float(np.var(test.y))  # clearly better than the mean
        assert mse < 1.3 * parent_result.test_metrics["test_mse"]


def _onnx_zeros(package) -> tuple[int, int]:
    """Zeros and elements in the weight matrices and kernels (rank >= 2) of the graph."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(package.path / "model.onnx")).graph
    arrays = [numpy_helper.to_array(t) for t in graph.initializer]
    weights = [a for a in arrays if a.ndim >= 2]
    return sum(int((a == 0).sum()) for a in weights), sum(a.size for a in weights)


@pytest.mark.parametrize("family", ["cnn", "mlp"])
def test_sparse_zeroes_the_requested_share_in_a_graph_of_the_same_size(
    cnn_parent, mlp_parents, tmp_path, family
):
    data_name, modality = ("digits", "image") if family == "cnn" else ("breast_cancer", "table")
    parent_result = cnn_parent if family == "cnn" else mlp_parents["breast_cancer"]
    parent = parent_result.package
    pkg = _prune(data_name, modality, parent, tmp_path / "sparse", "sparse", epochs=3, sparsity=0.7)
    details = _check_compression(pkg, parent, "sparse")
    assert pkg.manifest.lineage.compression.settings["sparsity"] == 0.7
    assert details["sparsity"] == pytest.approx(0.7, abs=0.01)
    assert 0.5 < details["sparsity_all_parameters"] < details["sparsity"]
    assert "gzip" in details["note"] and "latency" in details["note"]

    zeros, total = _onnx_zeros(pkg)
    assert zeros >= details["zero_weights"]  # the zeros survived fine-tuning and export
    assert zeros / total >= 0.6  # the output layer is left dense
    parent_zeros, _ = _onnx_zeros(parent)
    assert parent_zeros / total < 0.01
    # the same graph, as large on disk; only a compressed copy is smaller
    assert _params(pkg) == _params(parent)
    assert abs(_onnx_size(pkg) - _onnx_size(parent)) < 0.01 * _onnx_size(parent)
    gz, parent_gz = (
        len(gzip.compress((p.path / "model.onnx").read_bytes())) for p in (pkg, parent)
    )
    assert gz < 0.75 * parent_gz

    test = _test_rows(pkg, load(data_name))
    accuracy = float(np.mean(Predictor(pkg).predict_proba(test.X).argmax(1) == test.y))
    assert accuracy >= parent_result.test_metrics["test_accuracy"] - 0.1


def test_labels_follow_the_data_and_other_classes_are_refused(mlp_parents, tmp_path):
    from dataclasses import replace

    parent = mlp_parents["breast_cancer"].package
    data = load("breast_cancer")
    names = data.label_names
    flipped = replace(data, label_names=names[::-1], y=1 - data.y)  # the same rows and truth
    p = plan("table", strategy="sparse", stage="compress", init=parent, settings={"epochs": 2})
    pkg = build(flipped, p, tmp_path / "flipped")
    assert list(pkg.manifest.label_names) == list(names[::-1])
    test = _test_rows(pkg, flipped)
    predicted = [x.label for x in Predictor(pkg).predict(test.X)]
    truth = [names[::-1][c] for c in test.y]
    assert np.mean(np.array(predicted) == np.array(truth)) >= 0.9
    assert pkg.manifest.metrics["test_accuracy"] >= 0.9

    other = replace(data, label_names=("spam", "ham"))
    with pytest.raises(DataError, match=r"labels \['spam', 'ham'\] are not the labels"):
        build(other, p, tmp_path / "other")


@pytest.mark.parametrize("strategy", ["sparse", "prune"])
def test_a_resumed_build_continues_from_its_checkpoint(mlp_parents, tmp_path, strategy):
    parent = mlp_parents["breast_cancer"].package
    data = load("breast_cancer")
    p = plan("table", strategy=strategy, stage="compress", init=parent, settings={"epochs": 2})
    first = build(data, p, tmp_path / "a", checkpoint_dir=tmp_path / "ckpt")
    assert (tmp_path / "ckpt/last.pt").is_file()
    # a finished run resumes at its last epoch: the same kept weights, nothing retrained
    again = build(data, p, tmp_path / "b", checkpoint_dir=tmp_path / "ckpt", resume=True)
    assert again.manifest.lineage.history == first.manifest.lineage.history
    x = _test_rows(first, data).X
    np.testing.assert_allclose(Predictor(again).run(x), Predictor(first).run(x), atol=1e-6)
    other = plan(
        "table",
        strategy=strategy,
        stage="compress",
        init=mlp_parents["breast_cancer"].package,
        settings={"epochs": 3},
    )
    with pytest.raises(InvalidInputError, match="other training settings or data"):
        build(data, other, tmp_path / "c", checkpoint_dir=tmp_path / "ckpt", resume=True)


def test_a_package_without_torch_weights_is_refused(tmp_path):
    parent = tuneserve.train(
        "breast_cancer", tmp_path / "logreg", backbone="logreg", track=False
    ).package
    with pytest.raises(InvalidInputError, match="cannot be used to compress"):
        plan("table", strategy="prune", stage="compress", init=parent)
    p = plan("table", backbone="mlp", strategy="prune", stage="compress", init=parent)
    with pytest.raises(InvalidInputError, match=r"prune retrains a torch model.*LogisticReg"):
        build(load("breast_cancer"), p, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("strategy", "setting", "value"),
    [
        ("prune", "ratio", 1.0),
        ("prune", "ratio", 0),
        ("sparse", "sparsity", -0.2),
        ("sparse", "sparsity", 1.5),
    ],
)
def test_bad_ratio_or_sparsity_is_refused(cnn_parent, strategy, setting, value):
    with pytest.raises(InvalidInputError, match=rf"{setting} .* between 0 and 1.*got {value}"):
        plan(
            "image",
            strategy=strategy,
            stage="compress",
            init=cnn_parent.package,
            settings={setting: value},
        )


@pytest.mark.slow
def test_structured_prune_of_a_text_encoder(reviews_csv, tmp_path):
    """MiniLM loses half its feed-forward units; the stored encoder config rebuilds it."""
    import json

    parent_result = tuneserve.train(
        reviews_csv, tmp_path / "text", strategy="probe", track=False, max_length=32
    )
    parent = parent_result.package
    data = load(reviews_csv)
    p = plan(
        "text",
        strategy="prune",
        stage="compress",
        init=parent,
        settings={"epochs": 2, "ratio": 0.5, "learning_rate": 1e-4},
    )
    pkg = build(data, p, tmp_path / "pruned")
    details = _check_compression(pkg, parent, "prune")
    size = details["intermediate_size"]
    assert size["after"] == size["before"] // 2
    stored = json.loads((pkg.path / "extras/encoder_config.json").read_text())
    assert stored["intermediate_size"] == size["after"]
    # every layer loses half its feed-forward units (the word embeddings stay: most weights)
    removed = size["before"] - size["after"]
    per_unit = 2 * 384 + 1  # a row of the up-projection with its bias, a column of the down
    assert _params(parent) - _params(pkg) == details["layers"] * removed * per_unit
    assert _params(pkg) == details["parameters"]["after"]
    assert _onnx_size(pkg) < 0.9 * _onnx_size(parent)
    rebuilt = source_model(pkg)  # from the stored encoder config
    assert rebuilt.model.encoder.config.intermediate_size == size["after"]
    test = _test_rows(pkg, data)
    accuracy = float(np.mean(Predictor(pkg).predict_proba(test.X).argmax(1) == test.y))
    assert accuracy >= 0.8


def test_sparse_vision_encoder_keeps_its_embeddings_and_head_dense(tiny_vit, tmp_path):
    from tuneserve.training import TrainConfig

    data = load("digits").sample_per_class(30, seed=0)[0]
    config = TrainConfig(epochs=3, batch_size=32, learning_rate=1e-3, patience=None)
    parent = tuneserve.train(
        data, tmp_path / "vit", backbone=str(tiny_vit), strategy="full", config=config, track=False
    ).package
    p = plan(
        "image",
        strategy="sparse",
        stage="compress",
        init=parent,
        settings={"epochs": 2, "learning_rate": 1e-3, "sparsity": 0.5},
    )
    pkg = build(data, p, tmp_path / "sparse")
    details = _check_compression(pkg, parent, "sparse")
    layers = details["layers_pruned"]
    assert len(layers) == 2 * 6  # per block: query, key, value, output, two feed-forward
    assert not [name for name in layers if "embeddings" in name or name == "head"]
    assert details["sparsity"] == pytest.approx(0.5, abs=0.01)
    rebuilt = source_model(pkg).model
    assert float((rebuilt.head.weight == 0).float().mean()) < 0.01
    assert _onnx_zeros(pkg)[0] >= details["zero_weights"]

"""Quantization-aware training (``compress`` strategy ``qat``): torchao PT2E fake-quant
fine-tuning of a package's CNN or MLP, exported as an int8 QDQ ONNX graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tuneserve.data import load
from tuneserve.exceptions import InvalidInputError
from tuneserve.package import Package
from tuneserve.runtime import Predictor
from tuneserve.training import CNNConfig, build, plan, train
from tuneserve.training.qat import INT8_KERNELS, QAT_PARITY_TOLERANCE
from tuneserve.training.source_model import has_weights


@pytest.fixture(scope="module")
def digits():
    return load("digits")


@pytest.fixture(scope="module")
def parent(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("qat") / "cnn"
    return train(digits, out, config=CNNConfig(epochs=5)).package


@pytest.fixture(scope="module")
def qat_package(digits, parent, tmp_path_factory):
    p = plan("image", strategy="qat", stage="compress", init=parent, settings={"epochs": 2})
    return build(digits, p, tmp_path_factory.mktemp("qat") / "qat")


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def test_graph_is_qdq_around_the_convolutions(qat_package):
    graph = onnx.load(str(qat_package.path / qat_package.manifest.graph.file))
    producers = {out: n for n in graph.graph.node for out in n.output}
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    assert len(convs) == 2
    for conv in convs:
        # input and weight both come out of DequantizeLinear; the weight from int8 values
        x, w = (producers[name] for name in conv.input[:2])
        assert x.op_type == w.op_type == "DequantizeLinear"
        assert producers[x.input[0]].op_type == "QuantizeLinear"
    int8 = [i for i in graph.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert sum(int(np.prod(i.dims)) for i in int8) > 50_000  # every conv and linear weight
    assert not any(
        i.data_type == onnx.TensorProto.FLOAT and np.prod(i.dims) > 1000
        for i in graph.graph.initializer
    )


def test_onnx_runtime_fuses_it_into_integer_kernels(qat_package, tmp_path):
    optimized = tmp_path / "optimized.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(optimized)
    graph = qat_package.path / qat_package.manifest.graph.file
    ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    ops = _ops(onnx.load(str(optimized)))
    assert ops.count("QLinearConv") == 2
    assert "Conv" not in ops
    details = qat_package.manifest.lineage.compression.details
    assert set(details["ort_kernels"]) & set(INT8_KERNELS) >= {"QLinearConv"}


def test_smaller_than_the_float_graph(qat_package, parent):
    size = (qat_package.path / "model.onnx").stat().st_size
    parent_size = (parent.path / "model.onnx").stat().st_size
    assert size < 0.5 * parent_size
    details = qat_package.manifest.lineage.compression.details
    assert (details["graph_bytes"], details["parent_graph_bytes"]) == (size, parent_size)


def test_predictor_accuracy_close_to_the_parent(qat_package, parent, digits):
    rows = np.asarray(qat_package.manifest.lineage.held_out.rows)
    test = digits.subset(rows)
    labels = [p.label for p in Predictor(qat_package).predict(test.X)]
    accuracy = float(np.mean(np.asarray(labels) == np.asarray(test.label_names)[test.y]))
    before = parent.manifest.metrics["test_accuracy"]
    assert accuracy == pytest.approx(qat_package.manifest.metrics["test_accuracy"], abs=1e-9)
    assert accuracy >= before - 0.03


def test_manifest_records_parity_lineage_and_no_weights(qat_package, parent):
    manifest = qat_package.manifest
    compression = manifest.lineage.compression
    assert compression.method == "qat"
    assert compression.steps == ["qat"]
    assert compression.source == parent.id
    assert manifest.lineage.parent == parent.id
    assert manifest.lineage.trainer == "qat"
    assert manifest.lineage.backbone.strategy == "qat"
    assert manifest.lineage.backbone.model_class == "SmallCNN"
    assert len(manifest.lineage.history) == 2
    diff = manifest.graph.parity_max_abs_diff
    assert diff is not None and 0 <= diff <= QAT_PARITY_TOLERANCE
    assert compression.details["parity_max_abs_diff"] == diff
    assert compression.details["parity_label_agreement"] >= 0.99
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= set(compression.details["ort_ops"])
    assert not has_weights(qat_package)
    assert not any(f.startswith("extras/") for f in manifest.files)
    Package.load(qat_package.path).verify()


def test_a_quantized_package_cannot_be_trained_again(qat_package, digits, tmp_path):
    with pytest.raises(InvalidInputError, match=r"needs its torch weights, extras/weights\.pt"):
        p = plan("image", strategy="qat", stage="compress", init=qat_package)
        build(digits, p, tmp_path / "again")


def test_mlp_on_a_table(tmp_path):
    cancer = load("breast_cancer")
    parent = train(cancer, tmp_path / "mlp", backbone="mlp", settings={"epochs": 10}).package
    p = plan("table", strategy="qat", stage="compress", init=parent, settings={"epochs": 2})
    pkg = build(cancer, p, tmp_path / "qat")
    details = pkg.manifest.lineage.compression.details
    assert "QGemm" in details["ort_kernels"] or "MatMulInteger" in details["ort_kernels"]
    assert details["int8_initializers"] >= 3
    assert pkg.manifest.metrics["test_accuracy"] >= parent.manifest.metrics["test_accuracy"] - 0.03
    assert not has_weights(pkg)


@pytest.mark.slow
def test_checkpointed_run_resumes_to_the_same_model(parent, digits, tmp_path):
    p = plan("image", strategy="qat", stage="compress", init=parent, settings={"epochs": 1})
    first = build(digits, p, tmp_path / "first", checkpoint_dir=tmp_path / "ck")
    resumed = build(digits, p, tmp_path / "again", checkpoint_dir=tmp_path / "ck", resume=True)
    assert (tmp_path / "ck" / "last.pt").is_file()
    assert resumed.manifest.metrics == first.manifest.metrics
    assert resumed.manifest.graph.parity_max_abs_diff == first.manifest.graph.parity_max_abs_diff


def test_data_with_other_classes_is_refused(parent, digits, tmp_path):
    five = digits.select_classes(["0", "1", "2", "3", "4"])
    p = plan("image", strategy="qat", stage="compress", init=parent)
    with pytest.raises(InvalidInputError, match=r"the data's classes are \['0', '1'"):
        build(five, p, tmp_path / "five")


def test_eval_keeps_fake_quantization_but_freezes_the_ranges():
    import torch

    from tuneserve.backbones.cnn import SmallCNN
    from tuneserve.training.qat import prepare_qat

    torch.manual_seed(0)
    prepared = prepare_qat(SmallCNN(10, width=4, hidden=8), torch.randn(4, 1, 8, 8))
    prepared.train()
    prepared(torch.randn(8, 1, 8, 8))
    prepared.eval()
    ranges = {k: v.clone() for k, v in prepared.state_dict().items() if k.endswith("scale")}
    prepared(100 * torch.randn(8, 1, 8, 8))  # far outside what was observed
    after = prepared.state_dict()
    assert ranges and all(torch.equal(v, after[k]) for k, v in ranges.items())
    prepared.train()
    prepared(100 * torch.randn(8, 1, 8, 8))
    after = prepared.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in ranges.items())

"""Post-training quantization of real packages with ONNX Runtime: int8-dynamic,
int8-static (QDQ, three calibrations), fp16, nodes left in float, node sensitivity."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

import tuneserve
from tuneserve.compression._quantize import (
    CALIBRATIONS,
    PTQ_METHODS,
    ptq_reason,
    quantize_package,
)
from tuneserve.compression._sensitivity import node_sensitivity
from tuneserve.exceptions import InvalidInputError
from tuneserve.runtime import Predictor


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """A small CNN on 8x8 digits (test accuracy about 0.87 after 3 epochs)."""
    out = tmp_path_factory.mktemp("ptq") / "digits-cnn"
    return tuneserve.train("digits", out, backbone="cnn", track=False, settings={"epochs": 3})


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """A table MLP on breast_cancer (rows are DataFrames)."""
    out = tmp_path_factory.mktemp("ptq") / "cancer-mlp"
    return tuneserve.train(
        "breast_cancer", out, backbone="mlp", track=False, settings={"epochs": 5}
    )


def _ops(package) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(package.graph_path)).graph.node)


def _accuracy(package, part) -> float:
    return float(np.mean(Predictor(package).run(part.X).argmax(axis=1) == np.asarray(part.y)))


def _size(package) -> int:
    return package.graph_path.stat().st_size


def _float_initializers(package) -> set[str]:
    model = onnx.load(str(package.graph_path))
    return {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}


def _nodes(package, op_types) -> list[onnx.NodeProto]:
    model = onnx.load(str(package.graph_path))
    return [n for n in model.graph.node if n.op_type in op_types]


def test_int8_dynamic_cnn_is_smaller_runs_and_keeps_accuracy(cnn, tmp_path):
    parent, test = cnn.package, cnn.splits.test
    variant = quantize_package(parent, tmp_path / "q", "int8-dynamic", check=test.X)

    assert _size(parent) / _size(variant) > 3  # int8 weights (3.3x with float biases)
    ops = _ops(variant)
    assert ops["ConvInteger"] == 2 and ops["MatMulInteger"] == 2
    assert ops["DynamicQuantizeLinear"] >= 1
    assert not ops["Conv"] and not ops["Gemm"]  # no float compute left
    assert _accuracy(variant, test) >= _accuracy(parent, test) - 0.03

    lineage = variant.manifest.lineage
    assert lineage.parent == parent.id
    step = lineage.compression
    assert step is not None
    assert step.method == "int8-dynamic" and step.steps == ["int8-dynamic"]
    assert step.source == parent.id
    assert step.settings["per_channel"] is False  # auto: per tensor for a CNN
    assert step.details["quantized_nodes"] == 4
    assert step.details["quantized_op_types"] == ["Conv", "Gemm"]
    assert step.details["excluded_nodes"] == []
    # the recorded parity is the real largest probability difference on the check rows
    measured = np.max(np.abs(Predictor(variant).run(test.X) - Predictor(parent).run(test.X)))
    assert variant.manifest.graph.parity_max_abs_diff == pytest.approx(measured, abs=1e-6)
    assert step.details["max_output_diff"] == variant.manifest.graph.parity_max_abs_diff
    assert 0 < measured < 0.05


def test_int8_dynamic_mlp_on_table_rows(mlp, tmp_path):
    parent, test = mlp.package, mlp.splits.test
    variant = quantize_package(parent, tmp_path / "q", "int8-dynamic", per_channel=True)

    assert _size(parent) / _size(variant) > 2.4  # small layers: biases and scales weigh in
    assert _ops(variant)["MatMulInteger"] == 3 and not _ops(variant)["Gemm"]
    assert variant.manifest.lineage.compression.settings["per_channel"] is True
    assert variant.manifest.graph.parity_max_abs_diff is None  # no check rows given
    assert _accuracy(variant, test) >= _accuracy(parent, test) - 0.03


def test_int8_static_runs_with_each_calibration(cnn, tmp_path):
    parent, parts = cnn.package, cnn.splits
    scales = {}
    for calibrate in CALIBRATIONS:
        variant = quantize_package(
            parent,
            tmp_path / calibrate,
            "int8-static",
            calibration=parts.train.X,
            calibrate=calibrate,
            check=parts.test.X[:100],
        )
        ops = _ops(variant)
        assert ops["QuantizeLinear"] >= 4 and ops["DequantizeLinear"] >= 8
        assert not {"model.features.0.weight", "model.head.4.weight"} & _float_initializers(variant)
        # the probabilities stay float: the last node is the Softmax, not a DequantizeLinear
        last = onnx.load(str(variant.graph_path)).graph.node[-1]
        assert last.op_type == "Softmax"
        step = variant.manifest.lineage.compression
        assert step.settings["calibrate"] == calibrate and step.settings["format"] == "QDQ"
        assert step.details["calibration"] == calibrate
        assert step.details["calibration_rows"] == 512  # a sample of the ~1250 train rows
        assert step.details["max_output_diff"] < 0.2
        assert _accuracy(variant, parts.test) >= _accuracy(parent, parts.test) - 0.03
        model = onnx.load(str(variant.graph_path))
        scales[calibrate] = {
            i.name: float(onnx.numpy_helper.to_array(i))
            for i in model.graph.initializer
            if i.name == "relu_scale"
        }
    # three real calibrations: each picks its own range for the first Conv's activations
    assert scales["entropy"]["relu_scale"] < scales["minmax"]["relu_scale"]
    assert scales["percentile"]["relu_scale"] < scales["minmax"]["relu_scale"]


def test_int8_static_calibration_is_required_and_checked(mlp, tmp_path):
    parent, train = mlp.package, mlp.splits.train.X
    with pytest.raises(InvalidInputError, match="int8-static needs calibration inputs"):
        quantize_package(parent, tmp_path / "a", "int8-static")
    wrong = train.drop(columns=[train.columns[0]])
    with pytest.raises(InvalidInputError, match="do not match the input schema") as caught:
        quantize_package(parent, tmp_path / "b", "int8-static", calibration=wrong)
    assert str(train.columns[0]) in str(caught.value)
    with pytest.raises(InvalidInputError, match="unknown calibration method 'kl'"):
        quantize_package(parent, tmp_path / "c", "int8-static", calibration=train, calibrate="kl")
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_fp16_keeps_float32_io_and_runs_on_cpu(cnn, tmp_path):
    parent, test = cnn.package, cnn.splits.test
    variant = quantize_package(parent, tmp_path / "h", "fp16", check=test.X)

    model = onnx.load(str(variant.graph_path))
    halves = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert {"model.features.0.weight", "model.head.4.weight"} <= {i.name for i in halves}
    float32 = onnx.TensorProto.FLOAT
    assert all(v.type.tensor_type.elem_type == float32 for v in model.graph.input)
    assert all(v.type.tensor_type.elem_type == float32 for v in model.graph.output)
    assert 1.6 < _size(parent) / _size(variant) < 2.1
    probabilities = Predictor(variant, providers=["CPUExecutionProvider"]).run(test.X)
    assert probabilities.dtype == np.float32
    assert np.abs(probabilities - Predictor(parent).run(test.X)).max() < 5e-3
    assert variant.manifest.graph.parity_max_abs_diff < 5e-3
    assert variant.manifest.lineage.compression.details["per_channel"] is None


@pytest.mark.parametrize("method", ["int8-dynamic", "int8-static", "fp16"])
def test_excluded_node_stays_float(cnn, tmp_path, method):
    parent, parts = cnn.package, cnn.splits
    last = _nodes(parent, {"Gemm"})[-1]  # the classifier layer
    weight = last.input[1]
    variant = quantize_package(
        parent, tmp_path / "x", method, calibration=parts.train.X, exclude=[last.name]
    )
    details = variant.manifest.lineage.compression.details
    assert details["excluded_nodes"] == [last.name]
    assert details["quantized_nodes"] == 3
    assert variant.manifest.lineage.compression.settings["exclude"] == [last.name]
    floats = _float_initializers(variant)
    # the dynamic quantizer computes a Gemm as a MatMul with the weight transposed
    assert weight in floats or f"{weight}_Transposed" in floats
    first = _nodes(parent, {"Conv"})[0].input[1]
    assert first not in floats  # the others were quantized
    if method == "int8-dynamic":
        assert _ops(variant)["MatMulInteger"] == 1
    else:  # the same Gemm node reads the float32 weight (fp16: through a no-op Cast)
        (kept,) = [n for n in _nodes(variant, {"Gemm"}) if n.name == last.name]
        assert kept.input[1] in (weight, f"{weight}_cast_to_fp32")
    assert Predictor(variant).run(parts.test.X[:5]).shape == (5, 10)


def test_exclude_of_unknown_node_is_refused(cnn, tmp_path):
    with pytest.raises(InvalidInputError, match=r"'no_such_node'.*quantizable nodes are"):
        quantize_package(cnn.package, tmp_path / "x", "int8-dynamic", exclude=["no_such_node"])


@pytest.mark.parametrize("method", ["int8-dynamic", "int8-static"])
def test_node_sensitivity_names_the_nodes_that_add_error(mlp, tmp_path, method):
    parent, parts = mlp.package, mlp.splits
    variant = quantize_package(
        parent, tmp_path / "q", method, calibration=parts.train.X, check=parts.test.X
    )
    names = [n.name for n in _nodes(parent, {"Gemm", "MatMul", "Conv"})]

    ranked = node_sensitivity(parent, variant, parts.test.X.iloc[:100], top=10)
    assert len(ranked) == len(names) == 3 and {name for name, _ in ranked} == set(names)
    errors = [error for _, error in ranked]
    assert errors == sorted(errors, reverse=True) and errors[0] > 0
    assert node_sensitivity(parent, variant, parts.test.X.iloc[:100], top=1) == ranked[:1]

    # leaving the worst node in float cuts the output error
    worst = ranked[0][0]
    kept = quantize_package(
        parent,
        tmp_path / "kept",
        method,
        calibration=parts.train.X,
        exclude=[worst],
        check=parts.test.X,
    )
    assert kept.manifest.graph.parity_max_abs_diff < variant.manifest.graph.parity_max_abs_diff
    # only quantized nodes are ranked
    assert worst not in {name for name, _ in node_sensitivity(parent, kept, parts.test.X)}


def test_scikit_learn_packages_have_nothing_to_quantize(tmp_path):
    result = tuneserve.train("breast_cancer", tmp_path / "logreg", backbone="logreg", track=False)
    for method in PTQ_METHODS:
        reason = ptq_reason(result.package, method)
        assert reason is not None and "no MatMul, Gemm or Conv with float32 weights" in reason
        assert "scikit-learn" in reason
    with pytest.raises(InvalidInputError, match=r"int8-dynamic does not apply.*scikit-learn"):
        quantize_package(result.package, tmp_path / "q", "int8-dynamic")
    assert not (tmp_path / "q").exists()


def test_methods_apply_to_torch_packages_and_unknown_ones_are_refused(cnn, mlp, tmp_path):
    for package in (cnn.package, mlp.package):
        assert all(ptq_reason(package, method) is None for method in PTQ_METHODS)
    with pytest.raises(InvalidInputError, match="unknown quantization method 'int4'"):
        ptq_reason(cnn.package, "int4")
    with pytest.raises(InvalidInputError, match="unknown quantization method 'int4'"):
        quantize_package(cnn.package, tmp_path / "q", "int4")


def test_quantizing_a_variant_continues_the_chain(cnn, tmp_path):
    parent = cnn.package
    half = quantize_package(parent, tmp_path / "h", "fp16")
    reason = ptq_reason(half, "int8-dynamic")
    assert reason is not None and "float32 weights" in reason  # fp16 is compressed already

    # a search that left the classifier in float can quantize it in a second step
    last = _nodes(parent, {"Gemm"})[-1].name
    first = quantize_package(parent, tmp_path / "a", "int8-dynamic", exclude=[last])
    second = quantize_package(first, tmp_path / "b", "int8-dynamic")
    step = second.manifest.lineage.compression
    assert step.steps == ["int8-dynamic", "int8-dynamic"]
    assert step.source == parent.id and second.manifest.lineage.parent == first.id
    assert step.details["quantized_nodes"] == 1 and _ops(second)["MatMulInteger"] == 2


@pytest.mark.slow
def test_minilm_text_encoder_int8_dynamic(tmp_path):
    import pandas as pd

    good = ["wonderful", "great", "delicious", "friendly", "lovely"]
    bad = ["terrible", "awful", "cold", "rude", "horrible"]
    rows = [
        {"text": f"the {thing} was {word}", "label": label}
        for thing in ("food", "service", "staff", "soup", "view", "waiter")
        for words, label in ((good, "positive"), (bad, "negative"))
        for word in words
    ]
    data = tmp_path / "reviews.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    result = tuneserve.train(
        data, tmp_path / "minilm", backbone="minilm", max_length=16, track=False
    )
    parent, texts = result.package, list(result.splits.test.X)

    assert "transformer" in (ptq_reason(parent, "int8-static") or "")
    with pytest.raises(InvalidInputError, match="static INT8 is not offered"):
        quantize_package(parent, tmp_path / "s", "int8-static", calibration=texts)
    variant = quantize_package(parent, tmp_path / "q", "int8-dynamic", check=texts)
    step = variant.manifest.lineage.compression
    assert step.settings["per_channel"] is True  # auto for transformer encoders
    assert "MatMul" in step.details["quantized_op_types"]
    assert "Gather" in step.details["quantized_op_types"]  # the embedding tables
    assert _size(parent) / _size(variant) > 3
    assert _ops(variant)["MatMulInteger"] >= 36  # q, k, v, out, two feed-forward x 6 layers
    before, after = Predictor(parent).run(texts), Predictor(variant).run(texts)
    assert (before.argmax(1) == after.argmax(1)).mean() >= 0.9
    assert step.details["max_output_diff"] < 0.2
    ranked = node_sensitivity(parent, variant, texts[:4], top=3)
    assert len(ranked) == 3 and ranked[0][1] >= ranked[-1][1] > 0

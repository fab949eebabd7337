"""Export a fitted scikit-learn estimator (or pipeline) to a package with skl2onnx."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from tuneserve.exceptions import (
    ExportError,
    InvalidInputError,
    NotFoundError,
    PackageFormatError,
)
from tuneserve.lineage import Lineage
from tuneserve.package import Graph, Package
from tuneserve.preprocessing import Preprocessor

from ._common import check_parity, check_task, graph_opset, lineage_of, write_package


@contextmanager
def _int_missing_flags() -> Iterator[None]:
    """Work around skl2onnx 1.20 with scikit-learn >= 1.6: histogram gradient boosting
    passes numpy booleans as ``nodes_missing_value_tracks_true``, which onnx refuses
    ("Expected an int, got a boolean"). Cast them to int while converting."""
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node

    def add_node(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        flag = int(nodes_missing_value_tracks_true)
        return original(*args, nodes_missing_value_tracks_true=flag, **kwargs)

    tree_ensemble.add_node = add_node
    try:
        yield
    finally:
        tree_ensemble.add_node = original


#: Where a package keeps its scikit-learn estimator, for models that can be updated with
#: ``partial_fit`` (skops format: loading runs no code from the file).
ESTIMATOR_FILE = "estimator.skops"


def load_estimator(package: Package) -> Any:
    """The scikit-learn estimator a package stored (see :data:`ESTIMATOR_FILE`).

    Raises:
        NotFoundError: the package keeps no estimator.
        PackageFormatError: the file holds types skops does not trust by default.
    """
    import skops.io as sio

    path = package.path / "extras" / ESTIMATOR_FILE
    if f"extras/{ESTIMATOR_FILE}" not in package.manifest.files or not path.is_file():
        raise NotFoundError(
            f"package {package.path} keeps no scikit-learn estimator, so it cannot be updated. "
            "Hint: only models with partial_fit (sgd) keep one; retrain with tuneserve train"
        )
    try:
        return sio.load(path)
    except sio.exceptions.UntrustedTypesFoundException as exc:
        first = str(exc).splitlines()[0]
        raise PackageFormatError(f"{path}: {first}; tuneserve does not load it") from exc


def _float32_thresholds(estimator: Any) -> Any:
    """A copy of a histogram gradient boosting model whose split thresholds are float32.

    ONNX tree ensembles compare in float32. A float64 threshold ``t`` is replaced by the
    largest float32 ``<= t``: for float32 inputs (what the preprocessor produces) every
    split goes the same way as before, and the cast to float32 is exact. Other estimators
    are returned as they are."""
    if not hasattr(estimator, "_predictors"):
        return estimator
    import copy

    estimator = copy.deepcopy(estimator)
    for predictors in estimator._predictors:
        for predictor in predictors:
            nodes = predictor.nodes
            field = "num_threshold" if "num_threshold" in nodes.dtype.names else "threshold"
            exact = nodes[field]
            rounded = exact.astype(np.float32)
            above = rounded.astype(np.float64) > exact
            rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
            nodes[field] = rounded.astype(np.float64)
    return estimator


def _convert(estimator: Any, n_features: int, classification: bool) -> Any:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    options = {"zipmap": False} if classification else None
    try:
        with warnings.catch_warnings(), _int_missing_flags():
            warnings.simplefilter("ignore")
            return to_onnx(
                _float32_thresholds(estimator),
                initial_types=[("input", FloatTensorType([None, n_features]))],
                options=options,
            )
    except Exception as exc:  # skl2onnx raises many unrelated types for unsupported models
        raise ExportError(
            f"skl2onnx cannot convert {type(estimator).__name__}: {exc}. Hint: use an estimator "
            "skl2onnx supports (linear models, SVMs, trees, forests, boosting, MLP)"
        ) from exc


def _estimator_extras(estimator: Any) -> dict[str, bytes | Path] | None:
    """Models that can learn incrementally keep their estimator for ``--update``."""
    if not hasattr(estimator, "partial_fit"):
        return None
    import skops.io as sio

    return {ESTIMATOR_FILE: sio.dumps(estimator)}


def export_sklearn(
    estimator: Any,
    preprocessor: Preprocessor,
    out: str | Path,
    *,
    task: str,
    sample_inputs: Sequence[Any],
    label_names: Sequence[str] | None = None,
    name: str | None = None,
    metrics: Mapping[str, float] | None = None,
    data_fingerprint: str | None = None,
    lineage: Lineage | None = None,
    parent: str | None = None,
    overwrite: bool = False,
) -> Package:
    """Export a fitted estimator that takes the preprocessor's ``input`` matrix.

    A classifier must have been fit on integer codes ``0..k-1`` (``classes_`` in label
    order); the graph outputs its ``predict_proba``. A regressor's graph outputs ``predict``.

    Args:
        estimator: Fitted estimator or pipeline.
        preprocessor: Fitted; produces ``{"input": (n, features)}``.
        out: Package directory to write.
        task: ``classification`` or ``regression``.
        sample_inputs: Raw inputs whose predictions must match within 1e-4 (pass the test
            split to check parity on it).
        label_names, name, metrics, data_fingerprint, lineage, parent, overwrite:
            as for :func:`tuneserve.exporters.export_torch`.

    Raises:
        ExportError: unsupported estimator, classes not ``0..k-1``, or parity above 1e-4.
    """
    import onnxruntime as ort

    check_task(task, label_names)
    if task == "embedding":
        raise InvalidInputError(
            "scikit-learn estimators export as classification or regression; embedding "
            "packages come from torch models with an embed() method (export_torch)"
        )
    classification = task == "classification"
    if len(sample_inputs) < 1:
        raise InvalidInputError("sample_inputs needs at least 1 input to check parity")
    if classification:
        classes = np.asarray(getattr(estimator, "classes_", []))
        label_names = list(label_names or [])  # check_task guarantees >= 2 names
        if not np.array_equal(classes, np.arange(len(label_names))):
            raise ExportError(
                f"the estimator's classes_ are {classes.tolist()}, expected codes 0..."
                f"{len(label_names) - 1} for labels {list(label_names)}. Hint: fit on the "
                "Dataset's integer codes y, with every class present"
            )
    feed = preprocessor.transform(sample_inputs)
    onnx_model = _convert(estimator, feed["input"].shape[1], classification)
    outputs = [o.name for o in onnx_model.graph.output]
    output = "probabilities" if classification else outputs[0]
    if output not in outputs:
        raise ExportError(f"converted graph has outputs {outputs}, none named {output!r}")
    session = ort.InferenceSession(
        onnx_model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (actual,) = session.run([output], dict(feed))
    if classification:
        expected = estimator.predict_proba(feed["input"])
    else:
        expected = estimator.predict(feed["input"])
    diff = float(np.max(np.abs(np.asarray(expected).reshape(actual.shape) - actual)))
    check_parity(diff, "ONNX graph")
    graph = Graph(
        inputs=["input"],
        output=output,
        output_kind="probabilities" if classification else "prediction",
        opset=graph_opset(onnx_model),
        parity_max_abs_diff=diff,
    )
    model_class = type(estimator).__qualname__
    model_config = (
        {k: repr(v) for k, v in estimator.get_params(deep=False).items()}
        if hasattr(estimator, "get_params")
        else {}
    )
    return write_package(
        out,
        name=name,
        task=task,
        label_names=label_names,
        preprocessor=preprocessor,
        graph_bytes=onnx_model.SerializeToString(),
        graph=graph,
        metrics=metrics,
        lineage=lineage_of(lineage, data_fingerprint, parent, model_class, model_config),
        extras=_estimator_extras(estimator),
        overwrite=overwrite,
    )

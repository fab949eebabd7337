"""The runtime refuses inconsistent packages and bad inputs, and reports where they are."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tuneserve.exceptions import InputItemError, InvalidInputError, PackageFormatError
from tuneserve.package import MANIFEST_FILE, _package_id
from tuneserve.runtime import Predictor


def _resealed_copy(src: Path, dest: Path, edit: dict[str, Any]) -> Path:
    """Copy a package and edit its manifest, re-sealing the id as a buggy writer would."""
    shutil.copytree(src, dest)
    raw = json.loads((dest / MANIFEST_FILE).read_text())
    for dotted, value in edit.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    raw["package_id"] = _package_id(raw)
    (dest / MANIFEST_FILE).write_text(json.dumps(raw))
    return dest


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"preprocessing": {"kind": "table"}}, r"'table' preprocessing spec .* is malformed"),
        ({"label_names": ["a", "b"]}, r"outputs 10 class probabilities but the manifest names 2"),
        ({"graph.inputs": ["x"]}, r"manifest inputs \['x'\] do not match the graph's \['input'\]"),
        ({"graph.output": "nope"}, r"output 'nope' is not in the graph's"),
        ({"modality": "table"}, r"modality 'table' but 'image' preprocessing"),
        ({"task": "regression"}, r"malformed at .*regression graph must output predictions"),
    ],
    ids=["spec", "labels", "inputs", "output", "modality", "task"],
)
def test_inconsistent_manifest_is_refused(digits_package, tmp_path, edit, message):
    bad = _resealed_copy(digits_package, tmp_path / "bad", edit)
    with pytest.raises(PackageFormatError, match=message):
        Predictor(bad)


def test_errors_name_the_position_in_the_whole_input(cancer_package, cancer_splits):
    rows = cancer_splits.train.X.to_dict("records")
    rows[150]["mean radius"] = "abc"
    with pytest.raises(InputItemError, match=r"^row 150 column 'mean radius' holds 'abc'") as info:
        Predictor(cancer_package, batch_size=16).predict(rows)
    assert info.value.index == 150


def test_image_error_names_the_position_in_the_whole_input(digits_package, digits_splits):
    images = list(digits_splits.test.X[:40])
    images[37] = images[37] * 16  # not scaled to [0, 1]
    with pytest.raises(InputItemError, match=r"^image 37 has values in \[0, 16\]"):
        Predictor(digits_package, batch_size=8).predict(images)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), 1e400, "inf"])
def test_infinite_table_values_are_refused(cancer_package, cancer_splits, value):
    rows = cancer_splits.test.X.head(3).to_dict("records")
    rows[2]["mean texture"] = value
    with pytest.raises(InvalidInputError, match=r"row 2 column 'mean texture' is infinite"):
        Predictor(cancer_package).predict(rows)


def test_missing_values_are_imputed_not_refused(cancer_package, cancer_splits):
    rows = cancer_splits.test.X.head(2).to_dict("records")
    rows[0]["mean texture"] = None
    rows[1]["mean texture"] = float("nan")
    probs = Predictor(cancer_package).predict_proba(rows)
    assert np.isfinite(probs).all()


def test_text_predictor_never_imports_torch(text_package):
    import subprocess
    import sys

    code = f"""
import json, sys
from tuneserve.runtime import Predictor
p = Predictor({str(text_package)!r})
labels = [x.label for x in p.predict(["cold soup", "lovely view"])]
print(json.dumps({{"torch": "torch" in sys.modules, "labels": labels}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"torch": False, "labels": result["labels"]}
    assert len(result["labels"]) == 2


def test_corrupt_graph_with_valid_checksums_is_a_package_error(digits_package, tmp_path):
    from tuneserve.package import sha256_file

    bad = tmp_path / "bad"
    shutil.copytree(digits_package, bad)
    (bad / "model.onnx").write_bytes(b"this is not a protobuf")
    raw = json.loads((bad / MANIFEST_FILE).read_text())
    raw["files"]["model.onnx"] = sha256_file(bad / "model.onnx")
    raw["package_id"] = _package_id(raw)
    (bad / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(PackageFormatError, match="ONNX Runtime cannot load the graph"):
        Predictor(bad)


@pytest.fixture
def ensemble(cancer_package, cancer_splits, tmp_path) -> Path:
    """Two copies of one member, averaged: the ensemble's probabilities are the member's."""
    from tuneserve.selection import Combiner, export_ensemble

    return export_ensemble(
        [cancer_package, cancer_package],
        Combiner("mean", [0.5, 0.5]),
        tmp_path / "ensemble",
        sample_inputs=cancer_splits.test.X.head(8),
    ).path


def test_an_ensemble_runs_its_members_and_reports_positions(
    ensemble, cancer_package, cancer_splits
):
    rows = cancer_splits.train.X.head(40)
    want = Predictor(cancer_package).predict_proba(rows)
    np.testing.assert_allclose(Predictor(ensemble).predict_proba(rows), want, atol=1e-6)
    records = cancer_splits.train.X.to_dict("records")
    records[150]["mean radius"] = "abc"
    with pytest.raises(InputItemError, match=r"^row 150 column 'mean radius'") as info:
        Predictor(ensemble, batch_size=16).predict(records)
    assert info.value.index == 150


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"preprocessing.members": ["../elsewhere"]}, r"at 'members'.* outside the package"),
        ({"preprocessing.members": []}, r"at 'members'.* at least one member"),
        ({"preprocessing.labels": ["x", "y"]}, r"has classes .*; the ensemble has \['x', 'y'\]"),
        ({"modality": "image"}, r"members take table inputs, its manifest says image"),
    ],
    ids=["outside", "no-members", "labels", "modality"],
)
def test_inconsistent_ensemble_is_refused(ensemble, tmp_path, edit, message):
    bad = _resealed_copy(ensemble, tmp_path / "bad", edit)
    with pytest.raises(PackageFormatError, match=message):
        Predictor(bad)


def test_a_table_whose_columns_disagree_with_the_graph_is_refused(cancer_package, tmp_path):
    raw = json.loads((cancer_package / MANIFEST_FILE).read_text())
    spec = raw["preprocessing"]
    fewer = {**spec, "columns": spec["columns"][:-1]}  # 29 features for a 30-wide graph
    damaged = _resealed_copy(cancer_package, tmp_path / "p", {"preprocessing": fewer})
    with pytest.raises(
        PackageFormatError, match=r"makes 29 features per row but the graph takes 30"
    ):
        Predictor(damaged)

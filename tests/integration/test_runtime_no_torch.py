"""The runtime (and so the server) never imports torch: checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys


def _run(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_predicting_a_package_never_imports_torch(digits_package, cancer_package):
    code = f"""
import json, sys
import numpy as np
from tuneserve.runtime import Predictor
from tuneserve.data import load
digits = load("digits")
p = Predictor({str(digits_package)!r})
img = p.predict(digits.X[:3])
tab = Predictor({str(cancer_package)!r}).predict(load("breast_cancer").X.head(3))
print(json.dumps({{"torch": "torch" in sys.modules, "labels": [x.label for x in img + tab]}}))
"""
    result = _run(code)
    assert result["torch"] is False
    assert len(result["labels"]) == 6


def test_predicting_with_an_ensemble_never_imports_torch(cancer_package, tmp_path):
    from tuneserve.data import load
    from tuneserve.runtime import Predictor
    from tuneserve.selection import Combiner, export_ensemble

    rows = load("breast_cancer").X.head(3)
    ensemble = export_ensemble(
        [cancer_package, cancer_package], Combiner("vote", [0.5, 0.5]), tmp_path / "ens",
        sample_inputs=rows,
    )  # fmt: skip
    code = f"""
import json, sys
from tuneserve.runtime import Predictor
from tuneserve.data import load
p = Predictor({str(ensemble.path)!r})
labels = [x.label for x in p.predict(load("breast_cancer").X.head(3))]
print(json.dumps({{"torch": "torch" in sys.modules, "labels": labels}}))
"""
    result = _run(code)
    assert result["torch"] is False
    assert result["labels"] == [x.label for x in Predictor(cancer_package).predict(rows)]


def test_importing_tuneserve_and_cli_stays_light():
    code = """
import json, sys
import tuneserve
from tuneserve.cli import main
names = ("torch", "onnxruntime", "sklearn", "pandas", "transformers")
heavy = [m for m in names if m in sys.modules]
print(json.dumps({"heavy": heavy}))
"""
    assert _run(code)["heavy"] == []

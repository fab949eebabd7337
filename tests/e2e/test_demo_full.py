"""The full demo, as `make demo` runs it: the CNN must reach a real accuracy on digits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_full_demo_reaches_real_accuracy(tmp_path):
    cli = str(Path(sys.executable).parent / "tuneserve")
    proc = subprocess.run(
        [cli, "demo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        env={
            "COLUMNS": "200",
            "NO_COLOR": "1",
            "PATH": "/usr/bin:/bin",
            "HF_HUB_OFFLINE": "1",
            "TUNESERVE_HOME": str(tmp_path / "home"),
        },
    )
    assert proc.returncode == 0, proc.stderr
    cnn = float(proc.stdout.split("digits CNN test accuracy (runtime):")[1].split()[0])
    table = float(proc.stdout.split("breast_cancer test accuracy (runtime):")[1].split()[0])
    assert cnn >= 0.95, proc.stdout
    assert table >= 0.95, proc.stdout
    assert "and promoted to champion" in proc.stdout
    assert "registered digits/1" in proc.stdout  # the compressed CNN

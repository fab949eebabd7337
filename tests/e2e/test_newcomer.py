"""The CLI exactly as a newcomer runs it: no TUNESERVE_HOME, no MLFLOW_TRACKING_URI, no
tracking switch, no terminal, from an empty folder.

tests/conftest.py sets an absolute TUNESERVE_HOME and turns tracking off for every other
test; these tests take both away again, because a relative default home once broke the
demo and every registry command on each fresh clone while all tests passed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "tuneserve")
#: What a fresh shell on a fresh machine has: a PATH and (for the offline rule) HF_HUB_OFFLINE.
UNSET = ("TUNESERVE_HOME", "MLFLOW_TRACKING_URI", "TUNESERVE_TRACKING", "TUNESERVE_ARTIFACT_ROOT")


@pytest.fixture
def newcomer(tmp_path: Path) -> Path:
    """An empty working folder; the returned path is where the newcomer stands."""
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    return {**env, "COLUMNS": "200", "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"}


def run(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``tuneserve ARGS`` in ``cwd`` with the newcomer's environment and no terminal."""
    proc = subprocess.run(
        [CLI, *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@contextlib.contextmanager
def serving(cwd: Path, *args: str, ready: str) -> Iterator[int]:
    """A server command run in ``cwd`` until it answers ``ready``; Ctrl-C stops it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [CLI, *args, "--port", str(port)],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"{args[0]} exited with {proc.returncode}:\n{proc.stdout.read()}")
                assert time.monotonic() < deadline, f"{args[0]} not ready in 120 s"
                time.sleep(0.3)
        yield port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_demo_from_an_empty_folder(newcomer):
    out = run(newcomer, "demo", "--epochs", "2").stdout
    home = newcomer / ".tuneserve"
    assert (home / "demo" / "digits-cnn" / "manifest.json").is_file()  # under the default home
    assert (home / "mlflow" / "mlflow.db").is_file()  # the embedded store, found by relative path
    assert "registered digits-5-9/1" in out and "promoted to champion" in out
    assert "server stopped cleanly" in out
    assert "error" not in out.lower()


def test_train_register_promote_serve_and_ui_from_an_empty_folder(newcomer):
    # tracking is on for a newcomer: the run is logged, not "tracking failed"
    proc = run(newcomer, "train", "iris", "--out", "iris-pkg", "-b", "sgd", "--json")
    summary = json.loads(proc.stdout)
    assert summary["mlflow_run_id"], proc.stderr
    assert "tracking failed" not in proc.stderr and "not tracked" not in proc.stderr
    assert Path(summary["package"]).is_absolute()

    registered = json.loads(
        run(newcomer, "registry", "register", "iris-pkg", "--name", "iris", "--json").stdout
    )
    assert registered["version"] == 1 and registered["run_id"] == summary["mlflow_run_id"]
    run(newcomer, "registry", "promote", "iris", "1")
    listed = json.loads(run(newcomer, "registry", "list", "--json").stdout)
    assert [m["name"] for m in listed] == ["iris"] and listed[0]["aliases"] == {"champion": 1}

    # another folder of the same user sees another (empty) default home: state stays local
    elsewhere = newcomer.parent / "elsewhere"
    elsewhere.mkdir()
    assert json.loads(run(elsewhere, "registry", "list", "--json").stdout) == []

    with serving(newcomer, "serve", "--model", "iris", ready="/v2/health/ready") as port:
        row = {
            "sepal length (cm)": 5.1,
            "sepal width (cm)": 3.5,
            "petal length (cm)": 1.4,
            "petal width (cm)": 0.2,
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/models/iris/predict",
            data=json.dumps({"inputs": [row]}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            body = json.loads(reply.read())
        assert body["version"] == "1" and body["predictions"][0]["label"] == "setosa"

    # the champion is continued by its registry reference; the lineage names its version
    proc = run(newcomer, "train", "iris", "--update", "models:/iris@champion", "--out", "v2")
    manifest = json.loads((newcomer / "v2" / "manifest.json").read_text())
    assert manifest["lineage"]["parent_version"] == "iris/1", proc.stdout
    assert manifest["lineage"]["parent"] == registered["package_id"]

    with serving(newcomer, "ui", ready="/") as port:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/registered-models/search"
        with urllib.request.urlopen(url, timeout=10) as reply:
            names = [m["name"] for m in json.loads(reply.read())["registered_models"]]
        assert names == ["iris"]  # the UI shows the store the CLI wrote

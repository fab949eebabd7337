"""The CLI as a user runs it: a separate process, real files, exit codes, one-line errors."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

CLI = [str(Path(sys.executable).parent / "tuneserve")]


def tuneserve(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    if check:
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_help_lists_commands():
    out = tuneserve("--help").stdout
    for command in ("data", "predict", "package", "demo"):
        assert command in out


def test_data_show_builtin_json():
    summary = json.loads(tuneserve("data", "show", "digits", "--json").stdout)
    assert summary["rows"] == 1797
    assert summary["classes"] == 10
    assert summary["modality"] == "image"
    assert summary["fingerprint"].startswith("sha256:")


def test_data_show_csv_human(tmp_path):
    from tuneserve.data import load

    wine = load("wine")
    frame = wine.X.assign(label=[wine.label_names[c] for c in wine.y])
    frame.to_csv(tmp_path / "wine.csv", index=False)
    out = tuneserve("data", "show", str(tmp_path / "wine.csv")).stdout
    assert "178 rows, table, classification, 3 classes" in out
    assert "class_0" in out and "fingerprint sha256:" in out


def test_bad_input_is_one_clear_line_and_debug_shows_traceback(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("a,b,outcome\n1,2,x\n3,4,y\n")
    proc = tuneserve("data", "show", str(csv), check=False)
    assert_one_line_error(proc, "no label column", "['a', 'b', 'outcome']", "--label-column")
    proc = tuneserve("data", "show", str(csv), "--label-column", "outcom", check=False)
    assert_one_line_error(proc, "'outcom' not found", "Did you mean 'outcome'?")
    proc = tuneserve("--debug", "data", "show", str(tmp_path / "missing.csv"), check=False)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "not found" in proc.stderr


def test_predict_image_files_and_folder(digits_package, digits_splits, tmp_path):
    from PIL import Image

    from tuneserve.runtime import Predictor

    images = digits_splits.test.X[:6]
    for i, img in enumerate(images):
        Image.fromarray(np.round(img[:, :, 0] * 255).astype(np.uint8), mode="L").save(
            tmp_path / f"img{i}.png"
        )
    result = json.loads(tuneserve("predict", str(digits_package), str(tmp_path), "--json").stdout)
    labels = [p["label"] for p in result["predictions"]]
    expected = [p.label for p in Predictor(digits_package).predict(sorted(tmp_path.glob("*.png")))]
    assert labels == expected
    assert len(result["predictions"][0]["probabilities"]) == 10
    table = tuneserve("predict", str(digits_package), str(tmp_path / "img0.png")).stdout
    assert "img0.png" in table and expected[0] in table

    proc = tuneserve("predict", str(digits_package), str(tmp_path / "nope.png"), check=False)
    assert_one_line_error(proc, "'", "not found")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    proc = tuneserve("predict", str(digits_package), str(tmp_path / "broken.png"), check=False)
    assert_one_line_error(proc, "cannot read image", "broken.png")


def test_predict_table_csv_and_json_row(cancer_package, cancer_splits, tmp_path):
    from tuneserve.runtime import Predictor

    rows = cancer_splits.test.X.head(5)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    result = json.loads(
        tuneserve("predict", str(cancer_package), str(tmp_path / "rows.csv"), "--json").stdout
    )
    expected = [p.label for p in Predictor(cancer_package).predict(rows)]
    assert [p["label"] for p in result["predictions"]] == expected
    one = json.dumps(rows.iloc[0].to_dict())
    result = json.loads(tuneserve("predict", str(cancer_package), one, "--json").stdout)
    assert result["predictions"][0]["label"] == expected[0]
    bad = json.dumps({"mean radius": 1.0})
    proc = tuneserve("predict", str(cancer_package), bad, check=False)
    assert_one_line_error(proc, "missing column", "mean texture")


def test_predict_text_strings(text_package):
    result = json.loads(
        tuneserve(
            "predict", str(text_package), "terrible food, never again", "cold soup", "--json"
        ).stdout
    )
    assert [p["label"] for p in result["predictions"]] == ["negative", "negative"]


def test_package_show_and_checksum_refusal(digits_package, tmp_path):
    manifest = json.loads(tuneserve("package", "show", str(digits_package), "--json").stdout)
    assert manifest["name"] == "digits-cnn"
    assert manifest["lineage"]["data_fingerprint"].startswith("sha256:")
    assert manifest["lineage"]["trainer"] == "train_cnn"
    human = tuneserve("package", "show", str(digits_package)).stdout
    assert "checksums OK" in human and "model.onnx" in human

    broken = tmp_path / "broken"
    shutil.copytree(digits_package, broken)
    with (broken / "model.onnx").open("r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00\x01\x02\x03")
    proc = tuneserve("package", "show", str(broken), check=False)
    assert_one_line_error(proc, "checksum mismatch for model.onnx")
    proc = tuneserve("predict", str(broken), "x.png", check=False)
    assert_one_line_error(proc, "checksum mismatch")


@pytest.mark.parametrize("epochs", [3])
def test_demo_runs_end_to_end(tmp_path, epochs, monkeypatch):
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    out = tuneserve("demo", "--out", str(tmp_path), "--epochs", str(epochs)).stdout
    assert "digits CNN test accuracy (runtime):" in out
    accuracy = float(out.split("digits CNN test accuracy (runtime):")[1].split()[0])
    assert accuracy > 0.8
    assert (tmp_path / "digits-cnn" / "manifest.json").is_file()
    assert len(list((tmp_path / "digit-samples").glob("*.png"))) == 10
    assert "breast_cancer test accuracy (runtime):" in out
    tuned = float(out.split("fine-tuned from the 0-4 CNN:")[1].split()[0])
    scratch = float(out.split("same CNN from scratch:")[1].split()[0])
    assert 0.5 < tuned <= 1.0 and 0.5 < scratch <= 1.0
    assert "transfer minus scratch:" in out
    assert (tmp_path / "digits-0-4" / "extras" / "weights.pt").is_file()
    # the fine-tuned package is registered and promoted (the store is TUNESERVE_HOME's)
    assert "registered digits-5-9/1" in out and "promoted to champion" in out
    served = float(out.split("champion test accuracy (runtime):")[1].split()[0])
    assert served == pytest.approx(tuned)
    shown = json.loads(tuneserve("registry", "show", "digits-5-9@champion", "--json").stdout)
    assert shown[0]["version"] == 1 and shown[0]["aliases"] == ["champion"]
    # the CNN was compressed within one point, the trade-off printed, the chosen registered
    assert "compress the digits CNN" in out and "int8-static-minmax" in out
    assert "chosen " in out and "registered digits/1" in out
    assert (tmp_path / "digits-cnn-compressed" / "report.html").is_file()
    # the demo served the champion, called it, and printed commands that work
    assert "simple JSON  -> " in out and "Open Inference Protocol -> " in out
    assert "gRPC (Open Inference Protocol) -> " in out
    # a worker answered the same image from a Redis Stream (Redis runs here)
    label = out.split("simple JSON  -> ")[1].split()[0]
    assert f"queue (Redis Streams) -> {label}" in out
    assert "tuneserve submit --queue redis://127.0.0.1:6379/0 --model digits-5-9" in out
    assert "server stopped cleanly" in out  # no terminal: it does not keep serving
    commands = [ln.strip() for ln in out.splitlines() if ln.strip().startswith(("curl", "python"))]
    assert len(commands) == 4
    _check_printed_commands(commands, out)


def test_text_package_refuses_paths_and_bad_files(text_package, tmp_path):
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    proc = tuneserve("predict", str(text_package), str(tmp_path / "photo.png"), check=False)
    assert_one_line_error(proc, "is a file, but this package reads text")
    proc = tuneserve("predict", str(text_package), str(tmp_path), check=False)
    assert_one_line_error(proc, "is a folder, but this package reads text")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    proc = tuneserve("predict", str(text_package), str(tmp_path / "latin1.txt"), check=False)
    assert_one_line_error(proc, "latin1.txt: not UTF-8 text")
    (tmp_path / "reviews.csv").write_text("id,text\n1,cold soup\n2,\n3,lovely\n")
    proc = tuneserve("predict", str(text_package), str(tmp_path / "reviews.csv"), check=False)
    assert_one_line_error(proc, "1 row(s) of", "empty text in column 'text'", "rows 1")
    (tmp_path / "ok.txt").write_text("cold soup\n\nrude staff and a long wait\n")
    result = json.loads(
        tuneserve("predict", str(text_package), str(tmp_path / "ok.txt"), "--json").stdout
    )
    assert [p["input"] for p in result["predictions"]] == ["ok.txt:1", "ok.txt:2"]


def test_predict_json_array_of_rows(cancer_package, cancer_splits):
    rows = cancer_splits.test.X.head(3).to_dict("records")
    result = json.loads(
        tuneserve("predict", str(cancer_package), json.dumps(rows), "--json").stdout
    )
    assert len(result["predictions"]) == 3


def test_debug_flag_works_after_the_command(tmp_path):
    proc = tuneserve("data", "show", str(tmp_path / "missing.csv"), "--debug", check=False)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr


def test_error_row_numbers_count_across_batches(cancer_package, cancer_splits, tmp_path):
    frame = cancer_splits.train.X.head(120).copy()
    frame["mean radius"] = frame["mean radius"].astype(object)
    frame.loc[frame.index[100], "mean radius"] = "abc"
    frame.to_csv(tmp_path / "rows.csv", index=False)
    proc = tuneserve(
        "predict",
        str(cancer_package),
        str(tmp_path / "rows.csv"),
        "--batch-size",
        "16",
        check=False,
    )
    assert_one_line_error(proc, "row 100 column 'mean radius' holds 'abc'")


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_train_table_and_text_from_the_cli(tmp_path, reviews_csv):
    summary = json.loads(
        tuneserve("train", "wine", "--out", str(tmp_path / "wine"), "-b", "logreg", "--json").stdout
    )
    assert summary["backbone"] == "logreg" and summary["test"]["test_accuracy"] > 0.85
    assert (tmp_path / "wine" / "manifest.json").is_file()

    out = tmp_path / "reviews"
    env_home = {"TUNESERVE_HOME": str(tmp_path / "home")}
    args = ["train", str(reviews_csv), "--out", str(out), "-s", "probe", "--max-length", "32"]
    proc = subprocess.run(
        [*CLI, *args, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env_home},
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["backbone"] == "minilm" and summary["strategy"] == "probe"
    assert summary["test"]["test_accuracy"] >= 0.9
    assert not out.with_name("reviews.checkpoints").exists()  # removed after success
    result = json.loads(tuneserve("predict", str(out), "what a delicious dessert", "--json").stdout)
    assert result["predictions"][0]["label"] == "positive"

    proc = tuneserve("train", "wine", "--out", str(tmp_path / "x"), "-b", "minilm", check=False)
    assert_one_line_error(proc, "backbone 'minilm' is for text data, but this data set is table")
    proc = tuneserve("train", "wine", "--out", str(tmp_path / "wine"), check=False)
    assert_one_line_error(proc, "already exists", "--force")


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_train_hugging_face_vision_model_from_the_cli(tmp_path, tiny_vit, digits_splits):
    out = tmp_path / "vit"
    args = ["train", "digits", "--out", str(out), "-b", str(tiny_vit), "-s", "partial"]
    summary = json.loads(tuneserve(*args, "--unfreeze", "1", "--epochs", "2", "--json").stdout)
    assert summary["strategy"] == "partial" and summary["epochs_run"] == 2
    assert summary["parity_max_abs_diff"] <= 1e-4
    image = tmp_path / "digit.png"
    Image.fromarray((digits_splits.test.X[0][:, :, 0] * 255).astype("uint8")).save(image)
    result = json.loads(tuneserve("predict", str(out), str(image), "--json").stdout)
    assert result["predictions"][0]["label"] in [str(d) for d in range(10)]
    proc = tuneserve(
        "train", "digits", "--out", str(tmp_path / "x"), "-b", "hf-vision", check=False
    )
    assert_one_line_error(proc, "pass the model's id or local folder")
    proc = tuneserve(
        "train", "wine", "--out", str(tmp_path / "hgb"), "-b", "hist-gradient-boosting"
    )
    assert proc.returncode == 0


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_update_a_package_with_new_rows_from_the_cli(tmp_path):
    from tuneserve.data import load

    cancer = load("breast_cancer")
    frame = cancer.X.assign(label=[cancer.label_names[y] for y in cancer.y])
    frame.iloc[:60].to_csv(tmp_path / "old.csv", index=False)
    frame.iloc[60:].to_csv(tmp_path / "new.csv", index=False)
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    tuneserve("train", str(tmp_path / "old.csv"), "--out", str(v1), "-b", "sgd")
    args = ["train", str(tmp_path / "new.csv"), "--update", str(v1), "--out", str(v2)]
    summary = json.loads(tuneserve(*args, "--epochs", "4", "--json").stdout)
    assert summary["parent"] == json.loads((v1 / "manifest.json").read_text())["package_id"]
    assert set(summary["before"]) == set(summary["test"]) == {"test_accuracy"}
    assert summary["test"]["test_accuracy"] > 0.9
    human = tuneserve(*args, "--force").stdout
    assert "before" in human and "after" in human
    proc = tuneserve(*args, "--force", "-b", "logreg", check=False)
    assert_one_line_error(proc, "--update continues the package's own model")


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_pretrain_then_train_from_it_on_the_cli(tmp_path):
    encoder, model = tmp_path / "enc", tmp_path / "model"
    args = ["pretrain", "digits", "--out", str(encoder), "--epochs", "2", "--json"]
    summary = json.loads(tuneserve(*args).stdout)
    assert summary["objective"] == "contrastive" and summary["embedding_size"] == 128
    assert summary["items"] == 1797 and summary["epochs_run"] == 2
    assert not encoder.with_name("enc.checkpoints").exists()
    shown = tuneserve("predict", str(encoder), str(_digit_png(tmp_path)), "--json").stdout
    assert len(json.loads(shown)["predictions"][0]["embedding"]) == 128
    args = ["train", "digits", "--out", str(model), "--from", str(encoder), "--epochs", "2"]
    proc = tuneserve(*args, "--json")
    assert json.loads(proc.stdout)["test"]["test_accuracy"] > 0.5
    proc = tuneserve("pretrain", "iris", "--out", str(tmp_path / "x"), check=False)
    assert_one_line_error(proc, "pretrain learns from images or text")
    proc = tuneserve(
        "pretrain", "digits", "--out", str(tmp_path / "y"), "--objective", "jigsaw", check=False
    )
    assert_one_line_error(
        proc, "objective 'jigsaw' is not valid for backbone 'cnn'", "contrastive, denoise"
    )


def _digit_png(folder: Path) -> Path:
    from tuneserve.data import load

    path = folder / "digit.png"
    Image.fromarray((load("digits").X[0][:, :, 0] * 255).astype("uint8")).save(path)
    return path


def test_sgd_update_refuses_loop_options(tmp_path):
    v1 = tmp_path / "v1"
    tuneserve("train", "wine", "--out", str(v1), "-b", "sgd")
    args = ["train", "wine", "--update", str(v1), "--out", str(tmp_path / "v2")]
    proc = tuneserve(*args, "--batch-size", "8", check=False)
    assert_one_line_error(proc, "an sgd update takes --epochs", "batch_size")


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_registry_from_the_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    for seed in ("0", "1"):
        args = ["train", "iris", "--out", str(tmp_path / seed), "-b", "logreg", "--seed", seed]
        summary = json.loads(tuneserve(*args, "--track", "--json").stdout)
        assert summary["mlflow_run_id"]  # tracked, though the tests turn tracking off
        out = tuneserve("registry", "register", str(tmp_path / seed), "--name", "iris", "--json")
        registered = json.loads(out.stdout)
        assert registered["version"] == int(seed) + 1 and registered["created"]
        assert registered["run_id"] == summary["mlflow_run_id"]  # the tracked run, reused
    tuneserve("registry", "promote", "iris", "1")
    tuneserve("registry", "promote", "iris", "2", "--note", "newer")
    assert "iris/1 is the champion again" in tuneserve("registry", "rollback", "iris").stdout
    tuneserve("registry", "alias", "iris", "challenger", "2")
    listed = json.loads(tuneserve("registry", "list", "--json").stdout)
    assert listed[0]["aliases"] == {"champion": 1, "challenger": 2}
    compared = json.loads(tuneserve("registry", "compare", "iris", "1", "2", "--json").stdout)
    assert "test_accuracy" in {r["metric"] for r in compared["metrics"]}
    trail = json.loads(tuneserve("registry", "history", "iris", "--json").stdout)
    assert [e["action"] for e in trail] == ["promote", "promote", "rollback", "alias"]
    path = tuneserve("registry", "resolve", "models:/iris@champion").stdout.strip()
    assert (Path(path) / "manifest.json").is_file()
    human = tuneserve("registry", "show", "iris").stdout
    assert "iris/1 @champion" in human and "iris/2 @challenger" in human

    bundle = tmp_path / "iris.tar"
    tuneserve("registry", "export", "iris", "--out", str(bundle))
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "other"))
    assert "imported iris/1, iris/2" in tuneserve("registry", "import", str(bundle)).stdout
    shown = json.loads(tuneserve("registry", "show", "iris@champion", "--json").stdout)
    assert shown[0]["version"] == 1

    proc = tuneserve("registry", "show", "irsi", check=False)
    assert_one_line_error(proc, "no registered model named 'irsi'; registered models: iris")
    proc = tuneserve("registry", "promote", "iris", "5", check=False)
    assert_one_line_error(proc, "has no version 5; its versions: 1, 2")


@contextlib.contextmanager
def _running(
    *args: str, ready: str = "/v2/health/ready", seconds: float = 90, background: bool = False
) -> Iterator[dict]:
    """Run a ``tuneserve`` server command on a free port until it answers ``ready``;
    stop it with Ctrl-C (SIGINT) afterwards. Yields {"port", "proc"}; "out" (its stdout)
    is filled in once it has stopped. ``background`` starts it as a shell's background job
    is started: with SIGINT inherited as ignored."""
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [*CLI, *args, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ},
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None,
    )
    state: dict = {"port": port, "proc": proc, "out": ""}
    try:
        deadline = time.monotonic() + seconds
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, f"{args[0]} exited before it was ready"
                assert time.monotonic() < deadline, f"{args[0]} not ready in {seconds} s"
                time.sleep(0.3)
        yield state
    finally:
        proc.send_signal(signal.SIGINT)  # graceful shutdown
        try:
            state["out"], _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()  # fail this test only, without a leaked process or pipe for later ones
            proc.communicate()
            raise


def _post_json(url: str, body: dict) -> tuple[dict, Any]:
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read()), reply.headers  # case-insensitive


def test_ui_serves_the_mlflow_ui_on_the_store(tmp_path, monkeypatch):
    import urllib.request

    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    # as a background job (SIGINT ignored), where a KeyboardInterrupt never comes
    with _running("ui", ready="/", background=True) as server:
        url = f"http://127.0.0.1:{server['port']}/api/2.0/mlflow/experiments/search"
        with urllib.request.urlopen(url + "?max_results=5", timeout=5) as reply:
            assert reply.status == 200
    assert server["proc"].returncode == 0
    with pytest.raises(OSError):  # MLflow's server stopped with it
        urllib.request.urlopen(url, timeout=5)


def test_serve_a_registered_champion(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    tuneserve("train", "iris", "--out", str(tmp_path / "iris"), "-b", "logreg")
    tuneserve("registry", "register", str(tmp_path / "iris"), "--name", "iris")
    tuneserve("registry", "promote", "iris", "1")
    row = {
        "sepal length (cm)": 5.1,
        "sepal width (cm)": 3.5,
        "petal length (cm)": 1.4,
        "petal width (cm)": 0.2,
    }
    with _running("serve", "--model", "iris") as server:
        url = f"http://127.0.0.1:{server['port']}/v1/models/iris/predict"
        body, _ = _post_json(url, {"inputs": [row]})
        assert body["version"] == "1" and body["predictions"][0]["label"] == "setosa"
    assert "serving iris version 1 from iris" in server["out"]


def _check_printed_commands(commands: list[str], out: str) -> None:
    """Serve the demo's champion again (with gRPC) and run the curl and tritonclient lines
    it printed."""
    import re
    import shlex
    import socket

    expected = out.split("simple JSON  -> ")[1].split()[0]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        grpc_port = sock.getsockname()[1]
    with _running("serve", "--model", "digits-5-9", "--grpc-port", str(grpc_port)) as server:
        for line in commands:
            port = grpc_port if "tritonclient.grpc" in line else server["port"]
            line = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", line)
            if line.startswith("python"):
                line = line.replace("python", sys.executable, 1)
            result = subprocess.run(shlex.split(line), capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, (line, result.stderr)
            assert expected in result.stdout, (line, result.stdout)


@pytest.mark.parametrize("metrics_dir", ["own", "user's, with an earlier run's counts"])
def test_serve_with_several_worker_processes(
    cancer_package, cancer_splits, metrics_dir, tmp_path, monkeypatch
):
    import signal
    import time
    import urllib.request

    if metrics_dir != "own":  # a stale counter of 1000 requests that /metrics must not add
        from prometheus_client.mmap_dict import MmapedDict, mmap_key

        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
        (tmp_path / "metrics").mkdir()
        stale = MmapedDict(str(tmp_path / "metrics" / "counter_1.db"))
        labels = (["model", "api", "code"], ["cancer", "v1", "200"])
        help_text = "Requests by model, API and HTTP status"
        key = mmap_key("tuneserve_requests", "tuneserve_requests_total", *labels, help_text)
        stale.write_value(key, 1000.0, 0.0)
        stale.close()
    rows = cancer_splits.test.X.iloc[:2].to_dict("records")
    args = ["serve", "-m", f"cancer={cancer_package}", "--workers", "2"]
    with _running(*args) as server:
        url = f"http://127.0.0.1:{server['port']}/v1/models/cancer/predict"
        metrics_url = f"http://127.0.0.1:{server['port']}/metrics"
        deadline = time.monotonic() + 60
        workers: set[str] = set()
        sent = 0
        while len(workers) < 2:  # new connections spread over the processes
            assert time.monotonic() < deadline, f"saw workers {workers} only"
            workers.add(_post_json(url, {"inputs": rows})[1]["X-Tuneserve-Worker"])
            sent += 1
        assert str(server["proc"].pid) not in workers  # the worker processes answer
        # /metrics sums every worker's counts, whichever worker answers it
        answered_by: set[str] = set()
        while answered_by != workers:
            assert time.monotonic() < deadline, f"/metrics came from {answered_by} only"
            with urllib.request.urlopen(metrics_url) as reply:
                answered_by.add(reply.headers["X-Tuneserve-Worker"])
                text = reply.read().decode()
            total = f'tuneserve_requests_total{{api="v1",code="200",model="cancer"}} {sent}.0'
            assert total in text
            assert f'pid="{server["proc"].pid}"' not in text  # the parent is no worker
            for pid in workers:  # each worker's loaded version, labelled with its pid
                assert (
                    f'tuneserve_loaded_version{{current="true",model="cancer",pid="{pid}",'
                    'version="1"} 1.0' in text
                )
        if metrics_dir == "own":  # a killed worker's loaded versions leave /metrics
            killed = workers.pop()
            os.kill(int(killed), signal.SIGKILL)
            while f'pid="{killed}"' in text or total not in text:  # counts stay
                assert time.monotonic() < deadline, f"killed worker {killed} still listed"
                time.sleep(0.2)
                with contextlib.suppress(OSError), urllib.request.urlopen(metrics_url) as reply:
                    text = reply.read().decode()
    if metrics_dir != "own":
        assert "removed 1 metric files of an earlier run" in server["out"]
        (tmp_path / "a-file").touch()  # not a folder: one clear line, nothing served
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "a-file"))
        bad = tuneserve(*args, "--port", "1", check=False)
        assert_one_line_error(bad, "PROMETHEUS_MULTIPROC_DIR=", "cannot be used for the metrics")


def test_ctrl_c_drains_requests_in_flight(cancer_package, cancer_splits):
    import signal
    import socket
    import time

    rows = cancer_splits.test.X.iloc[:3].to_dict("records")
    body = json.dumps({"inputs": rows}).encode()
    head = (
        "POST /v1/models/cancer/predict HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with _running("serve", "-m", f"cancer={cancer_package}") as server:
        # a request in flight when Ctrl-C arrives: its body is still being uploaded
        conn = socket.create_connection(("127.0.0.1", server["port"]), timeout=30)
        conn.sendall(head + body[:100])
        time.sleep(0.5)
        server["proc"].send_signal(signal.SIGINT)
        time.sleep(0.5)
        conn.sendall(body[100:])
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
        conn.close()
    status, _, payload = reply.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200"), reply[:300]  # answered, not dropped
    assert len(json.loads(payload)["predictions"]) == 3
    assert server["proc"].returncode == 0


@pytest.fixture(scope="module")
def cancer_candidates(tmp_path_factory):
    """Two breast_cancer packages trained in this process (with their split lineage): the
    commands under test run as subprocesses, their inputs need not."""
    from tuneserve import train

    folder = tmp_path_factory.mktemp("candidates")
    for backbone in ("logreg", "random-forest"):
        train("breast_cancer", out=folder / backbone, backbone=backbone)
    return folder


def test_evaluate_a_trained_package(cancer_candidates, tmp_path):
    args = ["evaluate", str(cancer_candidates / "logreg"), "breast_cancer", "--bootstrap", "50"]
    result = json.loads(tuneserve(*args, "--json").stdout)
    assert result["n"] == 114 and "held-out test split" in result["rows"]
    accuracy = result["metrics"]["accuracy"]
    assert 0.9 < accuracy["value"] <= 1 and accuracy["low"] <= accuracy["value"]
    assert set(result["per_class"]) == {"malignant", "benign"}
    assert {"roc_auc", "log_loss", "ece", "f1_binary"} <= set(result["metrics"])

    text = tuneserve(*args, "--report", str(tmp_path / "r.html")).stdout
    assert "95% interval" in text and "true \\ predicted" in text
    assert (tmp_path / "r.html").read_text().count("data:image/png;base64") >= 4

    bad = tuneserve("evaluate", str(cancer_candidates / "logreg"), "iris", check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "iris has classes the package 'logreg' does not know" in bad.stderr


def test_compare_packages(cancer_candidates):
    folder = cancer_candidates
    args = ["compare", str(folder / "logreg"), str(folder / "random-forest"), "breast_cancer"]
    result = json.loads(tuneserve(*args, "--bootstrap", "30", "--json").stdout)
    assert [r["name"] for r in result["ranking"]] != [] and result["metric"] == "accuracy"
    assert result["significance"]["method"] == "McNemar exact"
    assert result["ranking"][0]["cost"]["latency_ms"] > 0
    text = tuneserve(*args, "--bootstrap", "30", "-m", "f1_macro", "--no-cost").stdout
    assert "f1_macro" in text and "better than" in text and "paired bootstrap" in text
    bad = tuneserve(*args[:2], "breast_cancer", check=False)
    assert bad.returncode == 2 and "two or more packages and then the data" in bad.stderr


def test_cross_validation(tmp_path):
    out = tmp_path / "cv"
    args = ["cv", "iris", "-b", "logreg", "-k", "3", "--bootstrap", "20", "--out", str(out)]
    text = tuneserve(*args).stdout
    assert "pooled out-of-fold" in text and "wrote" in text
    result = json.loads((out / "cv.json").read_text())
    assert result["folds"] == 3 and result["n"] == 150 and len(result["fold_metrics"]) == 3
    assert result["summary"]["accuracy"]["mean"] > 0.8
    assert sorted(p.name for p in out.iterdir()) == [
        "cv.json", "fold-0", "fold-1", "fold-2", "oof.npz", "report.html",
    ]  # fmt: skip
    bad = tuneserve(*args, check=False)  # --out exists, without --resume or --force
    assert bad.returncode == 2 and "already exists" in bad.stderr


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_select_an_ensemble_then_predict_and_serve_it(cancer_candidates, tmp_path, cancer_splits):
    out = tmp_path / "ensemble"
    args = ["select", str(cancer_candidates / "logreg"), str(cancer_candidates / "random-forest")]
    args += ["--data", "breast_cancer", "--method", "stacking", "--out", str(out)]
    result = json.loads(tuneserve(*args, "--json").stdout)
    assert result["method"] == "stacking" and len(result["members"]) == 2
    assert result["scores"]["result"] > 0.9 and result["rows"]["report"] > 0
    rows = cancer_splits.test.X.head(3)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    predicted = json.loads(
        tuneserve("predict", str(out), str(tmp_path / "rows.csv"), "--json").stdout
    )
    assert len(predicted["predictions"]) == 3
    with _running("serve", "-m", f"ens={out}") as server:
        url = f"http://127.0.0.1:{server['port']}/v1/models/ens/predict"
        body, _ = _post_json(url, {"inputs": rows.to_dict("records")})
    assert [p["label"] for p in body["predictions"]] == [
        p["label"] for p in predicted["predictions"]
    ]
    bad = tuneserve(*args, "--require", "f3>=1", "--method", "hybrid", check=False)
    assert bad.returncode == 2 and "unknown metric 'f3'" in bad.stderr
    text = tuneserve(*args, "--method", "weighted", "--out", str(tmp_path / "w")).stdout
    assert "survivors: logreg, random-forest" in text and "weighted: accuracy" in text
    for name in ("logreg", "random-forest"):  # a member with its weight, or left out
        assert f"member {name} (weight" in text or re.search(f"left out.*{name}", text)


def test_sign_a_package_and_require_the_signature(cancer_package, cancer_splits, tmp_path):
    package = shutil.copytree(cancer_package, tmp_path / "pkg")
    key = tmp_path / "team"
    assert "private: keep it secret" in tuneserve("package", "keygen", "--out", str(key)).stdout
    row = json.dumps(cancer_splits.test.X.iloc[0].to_dict())
    trust = ["--require-signature", "--trusted-key", f"{key}.pub"]
    proc = tuneserve("predict", str(package), row, *trust, check=False)
    assert_one_line_error(proc, "is not signed", "tuneserve package sign")
    proc = tuneserve("registry", "register", str(package), "-n", "signed", *trust, check=False)
    assert_one_line_error(proc, "is not signed")

    tuneserve("package", "sign", str(package), "--key", str(key))
    out = tuneserve("package", "verify", str(package), "--trusted-key", f"{key}.pub").stdout
    assert "signed by ed25519:" in out
    result = json.loads(tuneserve("predict", str(package), row, *trust, "--json").stdout)
    assert len(result["predictions"]) == 1
    out = tuneserve("registry", "register", str(package), "-n", "signed", *trust).stdout
    assert "registered signed/1" in out

    tuneserve("package", "keygen", "--out", str(tmp_path / "other"))
    other = ["--trusted-key", str(tmp_path / "other.pub")]
    proc = tuneserve("package", "verify", str(package), *other, check=False)
    assert_one_line_error(proc, "not a trusted key")


def test_labels_a_package_chose_cannot_drive_the_terminal(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2))
    evil = ["\x1b]0;pwned\x07yes", "[red]no[/red]"]
    labels = [evil[int(a > 0)] for a in x[:, 0]]
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "label": labels}).to_csv(tmp_path / "t.csv")
    tuneserve("train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "p"), "-b", "logreg")
    shown = tuneserve("package", "show", str(tmp_path / "p")).stdout
    row = json.dumps({"Unnamed: 0": 0, "a": 1.5, "b": 0.0})
    predicted = tuneserve("predict", str(tmp_path / "p"), row).stdout
    for out in (shown, predicted):
        assert "\x1b" not in out and "\x07" not in out  # no escape sequence reaches the terminal
        assert "\\x1b]0;pwned\\x07yes" in out  # but the label is shown, escaped
    assert "[red]no[/red]" in shown  # rich markup in a label is printed as written


def test_serve_grpc_beside_http_with_two_workers(cancer_package, cancer_splits):
    import urllib.request

    """``--grpc-port`` with ``--workers 2``: each worker serves gRPC on the one port, and
    /metrics counts the gRPC calls of both."""
    import socket

    import tritonclient.grpc as triton

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        grpc_port = sock.getsockname()[1]
    frame = cancer_splits.test.X.iloc[:2]
    args = ["serve", "-m", f"cancer={cancer_package}", "--workers", "2"]
    with _running(*args, "--grpc-port", str(grpc_port)) as server:
        for _ in range(12):  # a new connection each time: spread over the workers
            client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            try:
                tensors = []
                for column in frame.columns:
                    t = triton.InferInput(column, [len(frame)], "FP64")
                    t.set_data_from_numpy(frame[column].to_numpy(np.float64))
                    tensors.append(t)
                result = client.infer("cancer", tensors)
                assert result.as_numpy("probabilities").shape == (2, 2)
            finally:
                client.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{server['port']}/metrics") as reply:
            text = reply.read().decode()
        assert 'tuneserve_requests_total{api="grpc",code="200",model="cancer"} 12.0' in text
        # the port is taken now: another server says so in one line, before loading models
        taken = tuneserve(
            "serve",
            "-m",
            f"cancer={cancer_package}",
            "--grpc-port",
            str(server["port"]),
            check=False,
        )
        assert_one_line_error(taken, f"--grpc-port {server['port']}", "another program holds")
    assert f"gRPC (Open Inference Protocol) on 127.0.0.1:{grpc_port}" in server["out"]
    same = tuneserve("serve", "-m", "x", "--port", "9", "--grpc-port", "9", check=False)
    assert_one_line_error(same, "--grpc-port 9 is also --port")

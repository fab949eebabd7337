"""``tuneserve worker`` and ``tuneserve submit`` as a user runs them: separate processes, a
newcomer's environment (no TUNESERVE_HOME, from an empty folder), the real Redis on
127.0.0.1:6379; and the one-line errors of a bad URL, a Redis that is down, a bad request."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from PIL import Image

from tuneserve.runtime import Predictor

CLI = str(Path(sys.executable).parent / "tuneserve")
REDIS = "redis://127.0.0.1:6379/0"
UNSET = ("TUNESERVE_HOME", "MLFLOW_TRACKING_URI", "TUNESERVE_TRACKING", "TUNESERVE_ARTIFACT_ROOT")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    return {**env, "COLUMNS": "200", "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"}


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )


@pytest.fixture
def newcomer(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


@pytest.fixture
def stream() -> Iterator[str]:
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"the worker CLI tests need Redis at {REDIS} and it is down: {exc}")
    name = f"test:cli:{uuid.uuid4().hex[:12]}"
    yield name
    r = redis.Redis.from_url(REDIS)
    keys = list(r.scan_iter(f"{name}*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


@pytest.fixture
def down_url() -> str:
    """A Redis URL nothing listens at."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


def test_worker_and_submit_from_an_empty_folder(
    newcomer, stream, cancer_package, text_package, digits_package, cancer_splits, text_model,
    digits_splits, tmp_path,
):  # fmt: skip
    log = tmp_path / "worker.log"
    models = ["--model", f"cancer={cancer_package}", "--model", f"reviews={text_package}"]
    models += ["--model", f"digits={digits_package}"]
    with log.open("w") as out:
        worker = subprocess.Popen(
            [CLI, "worker", *models, "--queue", REDIS, "--stream", stream],
            cwd=newcomer,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
        )
    try:
        deadline = time.monotonic() + 120
        while "of group tuneserve-workers reading" not in log.read_text():
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.1)
        queue = ["--queue", REDIS, "--stream", stream]

        rows = tmp_path / "rows.csv"
        cancer_splits.test.X.iloc[:3].to_csv(rows, index=False)
        proc = run(newcomer, "submit", *queue, "--model", "cancer", str(rows), "--json")
        assert proc.returncode == 0, proc.stderr
        answer = json.loads(proc.stdout)
        want = Predictor(cancer_package).predict(cancer_splits.test.X.iloc[:3])
        assert [p["label"] for p in answer["predictions"]] == [p.label for p in want]
        assert answer["model"] == "cancer" and answer["id"]

        _, _, texts, _ = text_model
        proc = run(newcomer, "submit", *queue, "--model", "reviews", *texts[:2])
        assert proc.returncode == 0, proc.stderr
        for p in Predictor(text_package).predict(texts[:2]):
            assert p.label in proc.stdout  # the table view

        images = tmp_path / "images"
        images.mkdir()
        for i, x in enumerate(digits_splits.test.X[:3]):
            pixels = (x[:, :, 0] * 255).round().astype("uint8")
            Image.fromarray(pixels, mode="L").save(images / f"{i}.png")
        proc = run(newcomer, "submit", *queue, "--model", "digits", str(images), "--json")
        assert proc.returncode == 0, proc.stderr
        want = Predictor(digits_package).predict(sorted(images.iterdir()))
        got = json.loads(proc.stdout)["predictions"]
        assert [p["label"] for p in got] == [p.label for p in want]

        proc = run(newcomer, "submit", *queue, "--model", "reviews", "--no-wait", "hello")
        assert proc.returncode == 0 and len(proc.stdout.strip()) == 32  # the request id
        request_id = proc.stdout.strip()

        proc = run(newcomer, "submit", *queue, "--model", "nope", "hello")
        assert proc.returncode == 2
        assert proc.stderr.strip().startswith("error: no model named 'nope' is served")
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr

        proc = run(newcomer, "submit", *queue, "--model", "cancer", '{"no such column": 1}')
        assert proc.returncode == 2 and "missing column" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    text = log.read_text()
    assert worker.returncode == 0, text
    assert "drained: 6 requests answered by this worker" in text, text  # the --no-wait one too
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    ids = [fields["id"] for _, fields in r.xrange(f"{stream}:results")]
    assert request_id in ids and len(ids) == len(set(ids)) == 6
    r.close()
    assert list(newcomer.iterdir()) == []  # nothing written where the user stands


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["worker", "--model", "x=.", "--queue"], "cannot reach Redis at {url} "),
        (["submit", "--model", "x", "hello", "--queue"], "cannot reach Redis at {url} "),
    ],
)
def test_a_redis_that_is_down_is_one_line_and_exit_2(newcomer, down_url, command, message):
    proc = run(newcomer, *command, down_url)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("error: " + message.format(url=down_url)), line
    assert "Hint: start it (redis-server)" in line and len(line.splitlines()) == 1


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis://host:port/0"])
def test_a_bad_queue_url_is_one_line_and_exit_2(newcomer, url):
    for command in (["worker", "--model", "x=."], ["submit", "--model", "x", "hello"]):
        proc = run(newcomer, *command, "--queue", url)
        assert proc.returncode == 2, proc.stderr
        line = proc.stderr.strip()
        assert line.startswith("error: --queue") and "redis://HOST:PORT/DB" in line, line
        assert len(line.splitlines()) == 1


def test_a_stream_name_of_another_keys_type_is_one_line_and_exit_2(newcomer, stream):
    r = redis.Redis.from_url(REDIS)
    r.set(stream, "a string")
    r.close()
    proc = run(newcomer, "worker", "--model", "x=.", "--queue", REDIS, "--stream", stream)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith(f"error: --stream '{stream}' names a Redis key of type string"), line
    assert len(line.splitlines()) == 1


def test_a_visibility_timeout_not_above_the_time_limit_is_refused(newcomer):
    proc = run(newcomer, "worker", "-m", "x=.", "-q", REDIS, "--visibility-timeout", "30")
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("error: --visibility-timeout 30 must exceed --timeout 30"), line
    assert "Hint: pass --visibility-timeout 60" in line and len(line.splitlines()) == 1
    proc = run(
        newcomer, "worker", "-m", "x=.", "-q", REDIS, "--max-items", "64", "--max-queue", "8"
    )
    line = proc.stderr.strip()
    assert proc.returncode == 2 and len(line.splitlines()) == 1, proc.stderr
    assert line.startswith("error: --max-items 64 is above --max-queue 8"), line

"""Nothing is lost and nothing is answered twice: 2,000 requests while one of two worker
processes is SIGKILLed again and again, and a Redis that stops and comes back mid-run. Each
time every request ends with exactly one result, none in the dead-letter stream, and the
results equal the runtime's predictions."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from tuneserve.queueing import Keys, encode_request
from tuneserve.runtime import Predictor

REDIS = "redis://127.0.0.1:6379/0"
GROUP = "tuneserve-workers"
CLI = [sys.executable, "-m", "tuneserve.cli.main"]


@pytest.fixture
def stream() -> Iterator[str]:
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"the queue tests need Redis at {REDIS} and it is down: {exc}")
    name = f"test:lost:{uuid.uuid4().hex[:12]}"
    yield name
    r = redis.Redis.from_url(REDIS)
    keys = list(r.scan_iter(f"{name}*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


def _worker(url: str, stream: str, package: Path, name: str, log: Path) -> subprocess.Popen[str]:
    args = ["--queue", url, "--stream", stream, "--consumer", name, "--watch", "0"]
    args += ["--visibility-timeout", "1", "--timeout", "0.9"]  # must exceed it
    args += ["--concurrency", "16", "--max-batch-size", "8"]
    with log.open("a") as out:  # the child keeps its own handle
        return subprocess.Popen(
            [*CLI, "worker", "--model", f"cancer={package}", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        )


def _consumers(r: redis.Redis, stream: str) -> dict[str, int]:
    """Pending messages by consumer of the group ({} before the group exists)."""
    try:
        return {c["name"]: int(c["pending"]) for c in r.xinfo_consumers(stream, GROUP)}
    except redis.ResponseError:
        return {}


def _wait_ready(log: Path, name: str, proc: subprocess.Popen[str]) -> None:
    """Until the worker says it reads the stream (its models are loaded, its group made)."""
    deadline = time.monotonic() + 120
    while f"worker {name} of group" not in log.read_text():
        assert proc.poll() is None, f"worker {name} exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"worker {name} never started reading"
        time.sleep(0.05)


def _wait_results(r: redis.Redis, stream: str, count: int, procs: list[Any]) -> None:
    deadline = time.monotonic() + 300
    while (have := r.xlen(Keys(stream).results)) < count:
        assert all(p.poll() is None for p in procs), "a worker exited"
        assert time.monotonic() < deadline, f"only {have} of {count} results"
        time.sleep(0.1)


def _stop(procs: list[subprocess.Popen[str]], log: Path) -> None:
    for proc in procs:
        proc.terminate()  # SIGTERM: drain
    for proc in procs:
        assert proc.wait(60) == 0, log.read_text()[-3000:]


def _check_results(
    r: redis.Redis, stream: str, sent: dict[str, int], rows: list[dict[str, Any]], package: Path
) -> None:
    """Exactly one result per request id sent, none dead, each the runtime's prediction."""
    keys = Keys(stream)
    results = [fields for _, fields in r.xrange(keys.results)]
    counts = collections.Counter(x["id"] for x in results)
    assert set(counts) == set(sent), "results for ids never sent, or ids without a result"
    assert max(counts.values()) == 1, f"answered twice: {[i for i, n in counts.items() if n > 1]}"
    assert r.xlen(keys.dead) == 0, r.xrange(keys.dead, count=3)
    assert r.xpending(stream, GROUP)["pending"] == 0 and r.xlen(stream) == 0
    want = Predictor(package).predict_proba(rows)
    for x in results:
        assert x["ok"] == "1", x["body"]
        (prediction,) = json.loads(x["body"])["predictions"]
        got = list(prediction["probabilities"].values())
        np.testing.assert_allclose(got, want[sent[x["id"]]], atol=1e-6)


def _send(
    r: redis.Redis, stream: str, rows: list[dict[str, Any]], n: int, at: int
) -> dict[str, int]:
    """Queue ``n`` one-row requests (rows from ``at`` on, cycling); {id: row index}."""
    sent = {}
    pipe = r.pipeline(transaction=False)
    for i in range(at, at + n):
        rid, fields = encode_request("cancer", [rows[i % len(rows)]])
        sent[rid] = i % len(rows)
        pipe.xadd(stream, fields)  # type: ignore[arg-type]
    pipe.execute()
    return sent


def test_2000_requests_survive_a_worker_sigkilled_four_times(
    stream, cancer_package, cancer_splits, tmp_path
):
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    rows = cancer_splits.test.X.to_dict("records")
    log = tmp_path / "workers.log"
    survivor = _worker(REDIS, stream, cancer_package, "survivor", log)
    victim_name = "victim-0"
    victim = _worker(REDIS, stream, cancer_package, victim_name, log)
    sent: dict[str, int] = {}
    kills, left_pending = 0, 0
    try:
        _wait_ready(log, "survivor", survivor)
        _wait_ready(log, victim_name, victim)
        # Eight waves of 250: the victim is killed while it holds messages of a wave (it
        # read them, it has not acknowledged them), then restarted before the next wave.
        for wave in range(8):
            sent |= _send(r, stream, rows, 250, wave * 250)
            if kills == 4:
                continue
            while (held := _consumers(r, stream).get(victim_name, 0)) == 0:
                if r.xlen(Keys(stream).results) >= len(sent):  # done before it held any
                    break
                time.sleep(0.002)
            if held:
                victim.kill()  # SIGKILL: no drain, no goodbye
                victim.wait(30)
                kills += 1
                left_pending += _consumers(r, stream)[victim_name]
                victim_name = f"victim-{kills}"
                victim = _worker(REDIS, stream, cancer_package, victim_name, log)
                _wait_ready(log, victim_name, victim)
        _wait_results(r, stream, len(sent), [survivor, victim])
        _stop([survivor, victim], log)
    finally:
        for proc in (survivor, victim):
            if proc.poll() is None:
                proc.kill()
    print(f"{kills} kills left {left_pending} messages pending")  # shown with pytest -s
    assert len(sent) == 2000
    assert kills >= 3, f"the victim was killed only {kills} times"
    assert left_pending > 0, "no kill left a message pending: the test proved nothing"
    _check_results(r, stream, sent, rows, cancer_package)
    r.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_server(port: int, folder: Path) -> subprocess.Popen[bytes]:
    """A private Redis that keeps its data in an append-only file in ``folder``."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not on PATH; the Redis restart test starts its own")
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "yes", "--dir", str(folder)]
    proc = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    client.close()
    return proc


def test_a_redis_restart_mid_run_loses_nothing(stream, cancer_package, cancer_splits, tmp_path):
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = _redis_server(port, tmp_path)
    r = redis.Redis.from_url(url, decode_responses=True)
    rows = cancer_splits.test.X.to_dict("records")
    log = tmp_path / "worker.log"
    worker = _worker(url, stream, cancer_package, "w", log)
    try:
        _wait_ready(log, "w", worker)
        sent = _send(r, stream, rows, 2000, 0)
        while r.xlen(Keys(stream).results) < 100:
            time.sleep(0.005)
        with contextlib.suppress(redis.exceptions.ConnectionError):
            r.shutdown()  # writes the append-only file and exits
        assert server.wait(30) == 0
        time.sleep(1)  # down a while: the worker's reads and writes fail, and it backs off
        server = _redis_server(port, tmp_path)  # the same data, the same port
        answered_before = r.xlen(Keys(stream).results)
        assert answered_before < 2000, "the run ended before Redis stopped: nothing proved"
        _wait_results(r, stream, 2000, [worker])
        _stop([worker], log)
        text = log.read_text()  # the worker saw Redis go and come back
        assert "failed (ConnectionError" in text and "answers again" in text, text
        _check_results(r, stream, sent, rows, cancer_package)
    finally:
        if worker.poll() is None:
            worker.kill()
        r.close()
        server.terminate()
        server.wait(30)


def test_a_second_signal_stops_at_once_and_leaves_the_work_pending(
    stream, cancer_package, cancer_splits, tmp_path
):
    """Draining waits for the messages in work to be recorded; while Redis is away it cannot
    be, and a second SIGTERM stops the worker at once (exit 1): its messages stay pending
    for other workers."""
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = _redis_server(port, tmp_path)
    r = redis.Redis.from_url(url, decode_responses=True)
    log = tmp_path / "worker.log"
    worker = _worker(url, stream, cancer_package, "w", log)
    try:
        _wait_ready(log, "w", worker)
        _send(r, stream, cancer_splits.test.X.to_dict("records"), 2000, 0)
        while r.xlen(Keys(stream).results) < 100:
            time.sleep(0.005)
        with contextlib.suppress(redis.exceptions.ConnectionError):
            r.shutdown()
        server.wait(30)
        deadline = time.monotonic() + 60
        while "failed (ConnectionError" not in log.read_text():
            assert time.monotonic() < deadline, "the worker never noticed Redis was gone"
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        while "stopping: finishing the messages in work" not in log.read_text():
            assert worker.poll() is None, log.read_text()  # in work, not recorded: it waits
            assert time.monotonic() < deadline, "the first signal was not heard"
            time.sleep(0.05)
        assert worker.poll() is None, log.read_text()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 1, log.read_text()
        assert "stopped at once: messages in work stay pending" in log.read_text()
        server = _redis_server(port, tmp_path)
        assert _consumers(r, stream)["w"] > 0  # what it held waits to be claimed
    finally:
        if worker.poll() is None:
            worker.kill()
        r.close()
        server.terminate()
        server.wait(30)

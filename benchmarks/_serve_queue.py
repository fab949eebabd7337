"""The queue part of ``benchmarks/serve.py``: throughput of ``tuneserve worker`` on a Redis
Stream with 1 and 2 worker processes, on the same packages and inputs as the HTTP rows.

Each run starts the workers (pinned to the server cores, ``--threads`` as the servers get,
batching as the servers do) on a fresh stream, waits until they read it, then the load
generator (pinned to the client cores) submits N one-input requests at once with
``QueueClient.submit_many`` (one round trip) and waits for every answer. Throughput =
N / (last answer - submit); latency = each request's submit-to-answer time, which in a
burst is mostly its wait in the queue. The stream and its keys are deleted afterwards.
Needs the Redis at ``--redis`` (default ``redis://127.0.0.1:6379/0``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _serve_procs

REDIS = "redis://127.0.0.1:6379/0"
MODEL = "m"


def _start(url: str, stream: str, package: Path, name: str, cpus: set[int], threads: int,
           batch: tuple[int, float]) -> tuple[subprocess.Popen[bytes], Any]:  # fmt: skip
    cli = str(Path(sys.executable).parent / "tuneserve")
    log = tempfile.NamedTemporaryFile(prefix="worker-", suffix=".log")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            cli,
            "worker",
            "-m",
            f"{MODEL}={package}",
            "--queue",
            url,
            "--stream",
            stream,
            "--consumer",
            name,
            "--watch",
            "0",
            "--threads",
            str(threads),
            "--max-batch-size",
            str(batch[0]),
            "--max-queue-delay-ms",
            str(batch[1]),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    return proc, log


def _wait_reading(proc: subprocess.Popen[bytes], log: Any, name: str) -> None:
    deadline = time.monotonic() + 180
    while f"worker {name} of group" not in Path(log.name).read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker {name} did not start: {Path(log.name).read_text()[-2000:]}")
        time.sleep(0.1)


def burst(url: str, stream: str, inputs: list[Any], requests: int) -> dict:
    """The load generator: ``requests`` one-input requests at once; throughput, latency."""
    from concurrent.futures import wait

    from tuneserve.client import QueueClient

    with QueueClient(url, stream=stream, model=MODEL, timeout=600) as client:
        client.submit([inputs[0]]).result()  # the connection and the workers are warm
        answered: list[float] = []
        begin = time.perf_counter()
        futures = client.submit_many([[inputs[i % len(inputs)]] for i in range(requests)])
        for f in futures:
            f.add_done_callback(lambda _: answered.append(time.perf_counter()))
        done, _ = wait(futures, timeout=600)
        errors = sum(1 for f in done if f.exception() is not None) + requests - len(done)
    latencies = [t - begin for t in answered]
    return _serve_procs.summary(latencies, requests, max(answered) - begin, errors)


def measure(
    package: Path,
    inputs_file: Path,
    workers: int,
    requests: int,
    server_cpus: set[int],
    client_cpus: set[int],
    batch: tuple[int, float],
    url: str = REDIS,
) -> dict:
    """One run: ``workers`` worker processes, one burst of ``requests``."""
    import redis

    from tuneserve.queueing import Keys

    stream = f"bench:queue:{uuid.uuid4().hex[:10]}"
    started = [
        _start(url, stream, package, f"w{i}", server_cpus, len(server_cpus), batch)
        for i in range(workers)
    ]
    try:
        for i, (proc, log) in enumerate(started):
            _wait_reading(proc, log, f"w{i}")
        script = Path(__file__).with_name("serve.py")
        result = subprocess.run(
            [
                sys.executable,
                str(script),
                "--queue-client",
                url,
                stream,
                str(inputs_file),
                str(requests),
            ],
            capture_output=True,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, client_cpus),
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-2000:])
        return dict(json.loads(result.stdout.splitlines()[-1]))
    finally:
        for proc, _ in started:
            proc.send_signal(signal.SIGTERM)
        for proc, log in started:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        r = redis.Redis.from_url(url)
        keys = Keys(stream)
        r.delete(stream, keys.results, keys.dead, keys.failures)
        done = list(r.scan_iter(f"{stream}:*", count=1000))
        if done:
            r.delete(*done)
        r.close()


HEADER = [
    "| model | workers | requests | req/s | p50 ms | p99 ms | errors |",
    "|---|---:|---:|---:|---:|---:|---:|",
]

"""The server processes of ``benchmarks/serve.py`` (tuneserve, its baseline, LitServe,
BentoML): their command lines, start-up, stop; and the closed-loop HTTP load generator."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _serve_raw import PATHS

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / ".venv-peers" / "bin"
MAX_BATCH, MAX_DELAY_MS = 32, 2.0
OURS, BASELINE = "tuneserve", "tuneserve (baseline)"
OURS_GRPC = "tuneserve gRPC"  # the same server with --grpc-port, loaded by tritonclient.grpc


@dataclass
class Workload:
    """One model and the request bodies that call it (``api``: v1 simple JSON, v2 OIP)."""

    name: str
    package: Path
    inputs: list[Any]  # raw inputs, for raw ONNX Runtime
    bodies: list[bytes]
    api: str = "v1"
    matrix: bool = False  # a table sent as one [1, n_columns] tensor (gRPC too)


class Unsupported(Exception):
    """The server answers, but not 200, to the workload's request (e.g. a baseline that
    predates an input form)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pinned(cpus: set[int]) -> Callable[[], None]:
    return lambda: os.sched_setaffinity(0, cpus)


def _post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def _commands(
    server: str, package: Path, port: int, threads: int, api: str
) -> tuple[list[str], str]:
    """The command line of ``server`` and the path it predicts on."""
    if server in (OURS, BASELINE, OURS_GRPC):
        cli = str(Path(sys.executable).parent / "tuneserve")
        return [
            cli, "serve", "-m", f"m={package}", "--port", str(port), "--watch", "0",
            "--threads", str(threads), "--max-batch-size", str(MAX_BATCH),
            "--max-queue-delay-ms", str(MAX_DELAY_MS),
        ], PATHS[api]  # fmt: skip
    if server == "LitServe":
        script = str(ROOT / "benchmarks" / "peers" / "litserve_server.py")
        return [str(PEERS / "python"), script, str(port)], "/predict"
    return [
        str(PEERS / "bentoml"), "serve", "bento_service:PackageService", "--port", str(port),
        "--host", "127.0.0.1",
    ], "/predict"  # fmt: skip


def start(
    server: str, work: Workload, cpus: set[int], baseline_src: Path | None
) -> tuple[subprocess.Popen[bytes], int, str]:
    port = _free_port()
    command, path = _commands(server, work.package, port, len(cpus), work.api)
    if server == OURS_GRPC:
        command += ["--grpc-port", str(grpc_port := _free_port())]
    src = baseline_src if server == BASELINE and baseline_src else ROOT / "src"
    env = dict(
        os.environ,
        PEER_PACKAGE=str(work.package),
        PEER_THREADS=str(len(cpus)),
        PEER_MAX_BATCH_SIZE=str(MAX_BATCH),
        PEER_MAX_DELAY_MS=str(MAX_DELAY_MS),
        PYTHONPATH=os.pathsep.join([str(src), str(ROOT / "benchmarks" / "peers")]),
        BENTOML_HOME=tempfile.mkdtemp(prefix="bentoml-"),
        BENTOML_DO_NOT_TRACK="True",
    )
    log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server; a pipe could stall it
    proc = subprocess.Popen(
        command,
        cwd=ROOT / "benchmarks" / "peers",
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_pinned(cpus),
        start_new_session=True,  # the whole process tree stops together
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            status, reply = _post(port, path, work.bodies[0])
        except OSError:
            pass
        else:
            if status == 200 and server == OURS_GRPC:
                return proc, grpc_port, "grpc-matrix" if work.matrix else "grpc"
            if status == 200:
                return proc, port, path
            stop(proc)
            raise Unsupported(f"{status}: {reply.decode(errors='replace')[:300]}")
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            log.seek(0)
            raise RuntimeError(f"{server} did not start: {log.read().decode()[-3000:]}")
        time.sleep(0.3)


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with_kill = proc.poll() is None
        if with_kill:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def client(port: int, path: str, bodies: list[bytes], clients: int, seconds: float) -> dict:
    """Closed loop over keep-alive HTTP: ``clients`` threads, one request in flight each,
    for ``seconds``."""
    connections = [
        http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(clients)
    ]

    def call(thread: int, i: int) -> bool:
        conn = connections[thread]
        conn.request("POST", path, bodies[i % len(bodies)], {"Content-Type": "application/json"})
        reply = conn.getresponse()
        reply.read()
        return reply.status == 200

    return closed_loop(clients, seconds, call)


def closed_loop(clients: int, seconds: float, call: Callable[[int, int], bool]) -> dict:
    """``clients`` threads, each calling ``call(thread, i)`` (True: answered well) back to
    back for ``seconds``, the i-th request of thread t being i = t, t + clients, ...; the
    :func:`summary` of the latencies."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def run(thread: int) -> None:
        nonlocal errors
        mine, bad, i = [], 0, thread
        while time.perf_counter() < stop:
            start = time.perf_counter()
            bad += not call(thread, i)
            mine.append(time.perf_counter() - start)
            i += clients
        with lock:
            latencies.extend(mine)
            errors += bad

    threads = [threading.Thread(target=run, args=(t,)) for t in range(clients)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summary(latencies, len(latencies), time.perf_counter() - begin, errors)


def summary(latencies: list[float], count: int, elapsed: float, errors: int) -> dict:
    """``{"rps", "p50", "p99", "errors"}`` of ``count`` requests in ``elapsed`` seconds with
    these latencies (seconds; milliseconds out)."""
    latencies = sorted(latencies)
    return {
        "rps": count / elapsed,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "errors": errors,
    }

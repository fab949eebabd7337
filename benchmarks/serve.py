"""Closed-loop load on ``tuneserve serve`` versus raw ONNX Runtime, in one run.

For each model (the digits CNN; MiniLM with a 2-class head, FP32, 64 tokens):
  * the server runs in its own process (``tuneserve serve``, dynamic batching on);
  * C client threads each send one-input requests back to back over keep-alive HTTP
    (simple JSON) for a fixed time: requests/s, p50 and p99 latency per concurrency;
  * raw ONNX Runtime runs the same graph on preprocessed tensors at batch sizes 1..256 in
    this process: its best items/s is the physical limit;
  * ratio = our best requests/s (one item each) / raw ONNX Runtime's best items/s.
The client shares the machine's cores with the server, so the ratio is a lower bound on a
2-core machine. LitServe and BentoML (the issue's peers) are not installed in this project
and are not measured here.

Rerun: ``.venv/bin/python benchmarks/serve.py [--seconds 5] [--concurrency 1 4 16]``
Writes ``benchmarks/results/serve.md``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(name: str, package: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    cli = str(Path(sys.executable).parent / "tuneserve")
    proc = subprocess.Popen(
        [cli, "serve", "-m", f"{name}={package}", "--port", str(port), "--watch", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"the server for {name} did not start")
        time.sleep(0.3)


def _load(port: int, path: str, bodies: list[bytes], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(offset: int) -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, bad, i = [], 0, offset
        while time.perf_counter() < stop:
            start = time.perf_counter()
            conn.request(
                "POST", path, bodies[i % len(bodies)], {"Content-Type": "application/json"}
            )
            reply = conn.getresponse()
            reply.read()
            if reply.status != 200:
                bad += 1
            mine.append(time.perf_counter() - start)
            i += clients
        with lock:
            latencies.extend(mine)
            errors += bad

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - begin
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "errors": errors,
    }


def _raw_onnxruntime(package: Path, inputs: list[Any], seconds: float) -> tuple[int, float]:
    """Best (batch size, items/s) of the bare graph on preprocessed tensors."""
    from tuneserve.runtime import Predictor

    predictor = Predictor(package)
    session = predictor.session
    best = (1, 0.0)
    for batch in (1, 8, 32, 64, 128, 256):
        feed = predictor.preprocessor.transform([inputs[i % len(inputs)] for i in range(batch)])
        session.run(None, feed)
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 6:
            session.run(None, feed)
            runs += 1
        rate = runs * batch / (time.perf_counter() - start)
        if rate > best[1]:
            best = (batch, rate)
    return best


def _packages(folder: Path) -> dict[str, tuple[Path, list[Any], list[bytes]]]:
    from tuneserve.backbones import TextClassifier, load_encoder, resolve_text_model
    from tuneserve.data import load, split
    from tuneserve.exporters import export_torch
    from tuneserve.preprocessing import TextPreprocessor
    from tuneserve.training import CNNConfig, train_cnn

    parts = split(load("digits"), seed=0)
    cnn = train_cnn(parts.train, parts.validation, CNNConfig(epochs=5))
    cnn.export(folder / "digits", parts.test.X)
    images = list(parts.test.X[:64])
    image_bodies = [json.dumps({"inputs": [x[:, :, 0].tolist()]}).encode() for x in images]

    sys.path.insert(0, str(Path(__file__).parent))
    from train_strategies import docstring_dataset

    texts = list(docstring_dataset(40).X)[:64]
    pre = TextPreprocessor(resolve_text_model("minilm"), max_length=64)
    export_torch(
        TextClassifier(load_encoder("minilm"), 2),
        pre,
        folder / "minilm",
        task="classification",
        sample_inputs=texts[:8],
        label_names=["a", "b"],
        weights=False,
    )
    text_bodies = [json.dumps({"inputs": [t]}).encode() for t in texts]
    return {
        "digits CNN": (folder / "digits", images, image_bodies),
        "MiniLM FP32": (folder / "minilm", texts, text_bodies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    os.environ["TUNESERVE_TRACKING"] = "0"
    folder = Path(tempfile.mkdtemp())
    lines = [
        "# Serving: closed-loop load on tuneserve serve vs raw ONNX Runtime",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; client threads share them with "
        f"the server. {args.seconds:g} s per concurrency; one input per request (simple "
        "JSON over keep-alive HTTP); dynamic batching at its defaults (32 items, 2 ms).",
        f"Rerun: `.venv/bin/python benchmarks/serve.py --seconds {args.seconds:g} "
        f"--concurrency {' '.join(map(str, args.concurrency))}`",
        "",
        "| model | clients | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for name, (package, inputs, bodies) in _packages(folder).items():
        model = name.split()[0].lower()
        proc, port = _serve(model, package)
        best_rps = 0.0
        try:
            for clients in args.concurrency:
                r = _load(port, f"/v1/models/{model}/predict", bodies, clients, args.seconds)
                best_rps = max(best_rps, r["rps"])
                lines.append(
                    f"| {name} | {clients} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | "
                    f"{r['errors']} |"
                )
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        batch, raw = _raw_onnxruntime(package, inputs, args.seconds)
        ratios.append((name, best_rps, batch, raw))
    lines += [
        "",
        "| model | our best req/s | raw ONNX Runtime best items/s (batch) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name, ours, batch, raw in ratios:
        lines.append(f"| {name} | {ours:.0f} | {raw:.0f} ({batch}) | {ours / raw:.2f} |")
    lines += [
        "",
        "Raw ONNX Runtime runs the bare graph on tensors already preprocessed, in this process, "
        "with no HTTP; ours includes HTTP, JSON, preprocessing and batching. Target in the "
        "issue: >= 0.9 for MiniLM.",
        "",
    ]
    text = "\n".join(lines)
    out = Path(__file__).parent / "results" / "serve.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

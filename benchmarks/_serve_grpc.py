"""The gRPC part of ``benchmarks/serve.py``: Triton's own gRPC client (``tritonclient.grpc``)
as the load generator on ``tuneserve serve --grpc-port``, the same inputs as the REST
workloads, one input per request, closed loop; and the gRPC-vs-REST table.

Each client thread holds its own ``InferenceServerClient`` (one HTTP/2 connection) and
sends one request at a time, as the REST client threads each hold one keep-alive
connection. Inputs go as the Open Inference Protocol tensors a gRPC user sends: digits as
FP32 pixels ``[1, 8, 8]``, texts as BYTES ``[1]``, table rows as one FP64 tensor ``[1]`` per
column (or one ``[1, 30]`` tensor for the matrix workload).
"""

from __future__ import annotations

import statistics
from typing import Any

import _serve_procs
import numpy as np

MODEL = "m"  # the name benchmarks/serve.py serves its package under


def _tensors(item: Any, matrix: bool) -> list[Any]:
    import tritonclient.grpc as triton

    def tensor(name: str, array: np.ndarray, datatype: str) -> Any:
        t = triton.InferInput(name, list(array.shape), datatype)
        t.set_data_from_numpy(array)
        return t

    if isinstance(item, str):
        return [tensor("text", np.array([item.encode()], dtype=object), "BYTES")]
    if isinstance(item, dict):
        if matrix:
            values = np.array([list(item.values())], dtype=np.float64)
            return [tensor("input-0", values, "FP64")]
        return [tensor(c, np.array([v], dtype=np.float64), "FP64") for c, v in item.items()]
    pixels = np.asarray(item, dtype=np.float32)
    return [tensor("image", pixels[None], "FP32")]


def client(port: int, inputs: list[Any], clients: int, seconds: float, matrix: bool) -> dict:
    """Closed loop over gRPC: ``clients`` threads, one request in flight each."""
    import tritonclient.grpc as triton

    requests = [_tensors(x, matrix) for x in inputs]
    connections = [triton.InferenceServerClient(f"127.0.0.1:{port}") for _ in range(clients)]
    for c in connections:
        c.infer(MODEL, requests[0])  # the connection is up before the clock starts

    def call(thread: int, i: int) -> bool:
        try:
            connections[thread].infer(MODEL, requests[i % len(requests)])
        except Exception:
            return False
        return True

    try:
        return _serve_procs.closed_loop(clients, seconds, call)
    finally:
        for c in connections:
            c.close()


def comparison_rows(
    name: str,
    concurrency: list[int],
    results: dict[tuple[str, int], list[dict]],
    rest: str,
    grpc: str,
) -> list[str]:
    """``| workload | clients | REST req/s | gRPC req/s | gRPC / REST | REST p99 | gRPC p99 |``
    for the concurrencies both ran (medians over the repeats)."""
    rows = []
    for clients in concurrency:
        if (rest, clients) not in results or (grpc, clients) not in results:
            continue
        a, b = results[rest, clients], results[grpc, clients]

        def med(runs: list[dict], key: str) -> float:
            return statistics.median(r[key] for r in runs)

        rows.append(
            f"| {name} | {clients} | {med(a, 'rps'):.0f} | {med(b, 'rps'):.0f} | "
            f"**{med(b, 'rps') / med(a, 'rps'):.2f}x** | {med(a, 'p99'):.1f} | "
            f"{med(b, 'p99'):.1f} |"
        )
    return rows


HEADER = [
    "| workload | clients | REST req/s | gRPC req/s | gRPC / REST | REST p99 ms | gRPC p99 ms |",
    "|---|---:|---:|---:|---:|---:|---:|",
]

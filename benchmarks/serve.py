"""Closed-loop load on ``tuneserve serve`` versus raw ONNX Runtime, LitServe and BentoML;
over gRPC versus REST; and the Redis Streams queue worker's throughput.

For each workload, in one run: the digits CNN and MiniLM (a 3-class probe that tuneserve
trains on real docstrings, FP32, 64 tokens) over simple JSON, and a breast_cancer logistic
regression (30 number columns) over the Open Inference Protocol, as one tensor per column or
as one ``[1, 30]`` tensor:
  * each server runs in its own process tree, pinned to the *server cores* (half the
    machine, at least one core); the load generator runs in another process pinned to the
    other cores, so the client never takes CPU from the server;
  * C client threads each send one-input requests back to back over keep-alive HTTP
    (``{"inputs": [one input]}``) for a fixed time: requests/s, p50 and p99 latency;
  * every (server, concurrency) point is repeated; tables give the median and the
    min-max spread of the repeats. The servers of a workload run side by side and take
    turns, repeat by repeat (in reverse order every other repeat), so a slow spell of the
    machine hits them all alike;
  * raw ONNX Runtime (``_serve_raw.py``) runs the same package's bare graph on the same
    inputs, preprocessed, pinned to the same server cores with as many threads, for as long
    and as many repeats as each server, taking its turn among them: at each concurrency in
    calls of the sizes tuneserve's batcher formed there in a warm-up run (its ``/metrics``
    histogram), text both padded to the longest of each batch and length-grouped as the
    runtime does. ours / raw = our req/s (one item each) / the better raw items/s there;
  * LitServe and BentoML serve the same package through the same ``Predictor``
    (preprocessing + ONNX Runtime) with their batching on (32 items; LitServe waits at
    most 2 ms like ours, BentoML's adaptive batching learns its own wait), so only the
    serving layer differs. They live in ``.venv-peers`` (``make bench-peers``), never in
    tuneserve's environment; without it they are skipped and the table says so. They
    speak simple JSON only, so the OIP workloads are tuneserve's alone;
  * ``tuneserve gRPC`` is the same server started with ``--grpc-port``, loaded by Triton's
    own gRPC client (``_serve_grpc.py``), one input per request as OIP tensors; it takes
    its turns with the others, and a table sets it beside REST;
  * queue rows (``_serve_queue.py``): for the simple JSON workloads, a burst of requests
    through ``QueueClient`` answered by 1 and 2 ``tuneserve worker`` processes on the Redis
    at ``--redis``, pinned as the servers are;
  * ``--baseline-src DIR`` adds a second tuneserve, run from another checkout's ``src``
    (e.g. ``git archive`` of the commit before a change), and a before/after table: the
    way to show a change to the server costs no throughput.

Rerun: ``make bench-peers && .venv/bin/python benchmarks/serve.py [--seconds 4]
[--concurrency 1 4 16] [--repeats 3] [--workloads ...] [--servers ...] [--baseline-src DIR]
[--queue-workers 1 2] [--queue-requests 1000] [--out FILE]``; ``--workloads minilm --servers
tuneserve`` is the served-versus-raw part alone. Writes ``benchmarks/results/serve.md``
unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import _serve_grpc
import _serve_procs
import _serve_queue
import _serve_raw
from _serve_procs import BASELINE, MAX_BATCH, MAX_DELAY_MS, OURS, OURS_GRPC, PEERS, ROOT, Workload
from _serve_raw import spread


def _in_process(cpus: set[int], *args: str, src: Path | None = None) -> dict:
    """Run this script's ``--client`` mode pinned to ``cpus``."""
    return _serve_raw.in_process(cpus, __file__, *args, src=src)


def _med(runs: list[dict], key: str = "rps") -> float:
    return statistics.median(r[key] for r in runs)


WORKLOADS = ("digits", "minilm", "cancer-oip", "cancer-oip-matrix")


def _workloads(folder: Path, wanted: list[str], text_packages: list[Path]) -> list[Workload]:
    import numpy as np

    from tuneserve.data import load, split

    out: list[Workload] = []
    if "digits" in wanted:
        from tuneserve.training import CNNConfig, train_cnn

        parts = split(load("digits"), seed=0)
        images = [np.asarray(x[:, :, 0]) for x in parts.test.X[:64]]
        if not (folder / "digits").exists():
            cnn = train_cnn(parts.train, parts.validation, CNNConfig(epochs=5))
            cnn.export(folder / "digits", parts.test.X)
        bodies = [json.dumps({"inputs": [x.tolist()]}).encode() for x in images]
        out.append(Workload("digits CNN", folder / "digits", images, bodies))
    if "minilm" in wanted:  # a trained package: the probe on real docstrings, 3 classes
        from tuneserve.training import default_config
        from tuneserve.training.text import train_text

        sys.path.insert(0, str(Path(__file__).parent))
        from train_strategies import docstring_dataset

        data = docstring_dataset(40)
        # 64 of its texts, the three libraries mixed: the mix of lengths every request draws on
        texts = [str(t) for t in np.random.default_rng(0).permutation(list(data.X))[:64]]
        if not (folder / "minilm-probe").exists():
            parts = split(data, seed=0)
            config = default_config("minilm", "probe")
            model = train_text(parts.train, parts.validation, config=config, max_length=64)
            model.export(
                folder / "minilm-probe",
                parts.test.X,
                name="docstrings-minilm-probe",
                metrics=model.score(parts.test, "test"),
            )
        bodies = [json.dumps({"inputs": [t]}).encode() for t in texts]
        out.append(Workload("MiniLM FP32", folder / "minilm-probe", texts, bodies))
        for package in text_packages:  # e.g. the variant tuneserve compress chose
            out.append(Workload(f"MiniLM {package.name}", package, texts, bodies))
    if {"cancer-oip", "cancer-oip-matrix"} & set(wanted):
        from tuneserve.training import train_logistic_regression

        parts = split(load("breast_cancer"), seed=0)
        if not (folder / "cancer").exists():
            model = train_logistic_regression(parts.train, parts.validation)
            model.export(folder / "cancer", parts.test.X, name="breast-cancer")
        rows = [
            {c: float(v) for c, v in r.items()} for r in parts.test.X.iloc[:64].to_dict("records")
        ]

        def columns(row: dict) -> list[dict]:  # one FP64 tensor of shape [1] per column
            return [
                {"name": c, "shape": [1], "datatype": "FP64", "data": [v]} for c, v in row.items()
            ]

        def matrix(row: dict) -> list[dict]:  # one FP64 tensor [1, 30], KServe sklearn style
            data = list(row.values())
            return [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": data}]

        forms = {
            "cancer-oip": ("OIP columns", columns),
            "cancer-oip-matrix": ("OIP [1, 30]", matrix),
        }
        for key, (label, tensors) in forms.items():
            if key in wanted:
                bodies = [json.dumps({"inputs": tensors(row)}).encode() for row in rows]
                name = f"breast_cancer logreg, {label}"
                matrix = key == "cancer-oip-matrix"
                out.append(Workload(name, folder / "cancer", rows, bodies, "v2", matrix))
    return out


def _measure(
    work: Workload,
    servers: list[str],
    args: argparse.Namespace,
    server_cpus: set[int],
    client_cpus: set[int],
    folder: Path,
) -> tuple[dict[tuple[str, int], list[dict]], dict[str, str], dict[int, tuple[list, float]]]:
    """Every (server, clients) point of one workload, the servers running side by side and
    taking turns repeat by repeat, raw ONNX Runtime (key ``raw MODE``) taking its turns
    among them; the servers that cannot run it, with why; and per concurrency, the batch
    size raw ONNX Runtime ran and the items per call tuneserve's batcher formed meanwhile."""
    bodies_file, inputs_file = folder / "bodies.pkl", folder / "inputs.pkl"
    bodies_file.write_bytes(pickle.dumps(work.bodies))
    inputs_file.write_bytes(pickle.dumps(work.inputs))
    text = all(isinstance(x, str) for x in work.inputs)
    started: dict[str, tuple[subprocess.Popen[bytes], int, str]] = {}
    unsupported: dict[str, str] = {}
    results: dict[tuple[str, int], list[dict]] = {}
    batching: dict[int, tuple[list, float]] = {}
    try:
        for server in servers:
            if work.api != "v1" and server not in (OURS, BASELINE, OURS_GRPC):
                unsupported[server] = "speaks simple JSON only"
                continue
            try:
                started[server] = _serve_procs.start(server, work, server_cpus, args.baseline_src)
            except _serve_procs.Unsupported as exc:
                unsupported[server] = f"refuses the request ({str(exc)[:120]}...)"

        def load(server: str, clients: int, seconds: float) -> tuple[dict, Any]:
            """Closed-loop load on one server; and its batcher's histogram before and after."""
            _, port, path = started[server]
            before = _serve_raw.batch_histogram(port) if server == OURS else None
            sent = inputs_file if path.startswith("grpc") else bodies_file  # tensors from inputs
            client_args = [str(port), path, str(sent), str(clients), str(seconds)]
            result = _in_process(client_cpus, "--client", *client_args)
            after = _serve_raw.batch_histogram(port) if before else None
            return result, (before, after) if after else None

        for clients in args.concurrency:
            mix = [(clients, 1)]  # the most one item per client can make, if /metrics is mute
            for server in started:
                _, seen = load(server, clients, args.seconds)  # warm-up
                if seen:
                    mix = _serve_raw.batch_mix(*seen, clients) or mix
            # one text a call has nothing to group: padded is grouped then
            grouping = text and any(size > 1 for size, _ in mix)
            modes = ["padded", "grouped"] if grouping else ["padded"] if text else ["plain"]
            turns = [*started, *(f"raw {m}" for m in modes)]
            formed = [0.0, 0.0]  # items, calls of our batcher over the repeats
            for repeat in range(args.repeats):
                for turn in turns[:: -1 if repeat % 2 else 1]:
                    if turn.startswith("raw "):
                        raw_args = (work.package, inputs_file, args.seconds, mix, turn[4:])
                        result = _serve_raw.run_raw(server_cpus, *raw_args)
                    else:
                        result, seen = load(turn, clients, args.seconds)
                        formed = [x + y for x, y in zip(formed, _serve_raw.made(seen), strict=True)]
                    results.setdefault((turn, clients), []).append(result)
            batching[clients] = (mix, formed[0] / formed[1] if formed[1] else float("nan"))
    finally:
        for proc, _, _ in started.values():
            _serve_procs.stop(proc)
    return results, unsupported, batching


def _queue_rows(
    work: Workload,
    args: argparse.Namespace,
    server_cpus: set[int],
    client_cpus: set[int],
    folder: Path,
) -> list[str]:
    """Queue throughput with each count of workers, the counts taking turns repeat by
    repeat; one table row per count."""
    inputs_file = folder / "inputs.pkl"
    inputs_file.write_bytes(pickle.dumps(work.inputs))
    runs: dict[int, list[dict]] = {}
    for repeat in range(max(args.repeats, 1)):
        order = args.queue_workers[:: -1 if repeat % 2 else 1]
        for workers in order:
            result = _serve_queue.measure(
                work.package, inputs_file, workers, args.queue_requests, server_cpus,
                client_cpus, (MAX_BATCH, MAX_DELAY_MS), args.redis,
            )  # fmt: skip
            runs.setdefault(workers, []).append(result)
    return [
        f"| {work.name} | {workers} | {args.queue_requests} | {spread([r['rps'] for r in rs])} | "
        f"{spread([r['p50'] for r in rs], 1)} | {spread([r['p99'] for r in rs], 1)} | "
        f"{sum(r['errors'] for r in rs)} |"
        for workers, rs in sorted(runs.items())
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, help="keep the packages here between runs")
    default_servers = [OURS, OURS_GRPC, "LitServe", "BentoML"]
    parser.add_argument("--servers", nargs="+", default=default_servers)
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="also serve with tuneserve from this src/ folder (the code before a change) "
        "and compare",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve.md")
    parser.add_argument(
        "--per-request",
        type=int,
        default=0,
        metavar="TURNS",
        help="with --baseline-src: also time one request at a time in-process, TURNS turns "
        "per version",
    )
    parser.add_argument(
        "--text-package",
        type=Path,
        nargs="*",
        default=[],
        help="with the minilm workload: also serve these text packages on the same texts "
        "(a compressed variant: benchmarks/compress.py prints where its packages are)",
    )
    parser.add_argument(
        "--queue-workers",
        type=int,
        nargs="*",
        default=[1, 2],
        help="queue rows (simple JSON workloads): tuneserve worker processes per run; none: "
        "no queue rows",
    )
    parser.add_argument("--queue-requests", type=int, default=1000, help="requests per burst")
    parser.add_argument("--redis", default=_serve_queue.REDIS, help="the Redis of the queue rows")
    parser.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--queue-client", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.queue_client:  # the queue's load generator process
        url, stream, inputs_file, requests = args.queue_client
        inputs = pickle.loads(Path(inputs_file).read_bytes())
        print(json.dumps(_serve_queue.burst(url, stream, inputs, int(requests))))
        return
    if args.client:  # the load generator process
        port, path, bodies_file, clients, seconds = args.client
        bodies = pickle.loads(Path(bodies_file).read_bytes())
        if path.startswith("grpc"):  # bodies_file holds the raw inputs
            matrix = path == "grpc-matrix"
            result = _serve_grpc.client(int(port), bodies, int(clients), float(seconds), matrix)
        else:
            result = _serve_procs.client(int(port), path, bodies, int(clients), float(seconds))
        print(json.dumps(result))
        return
    if args.per_request and not args.baseline_src:
        parser.error("--per-request compares two versions: give --baseline-src too")

    os.environ["TUNESERVE_TRACKING"] = "0"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("needs at least 2 CPU cores: one for the servers, one for the client")
    server_cpus = set(cpus[: max(1, len(cpus) // 2)])
    client_cpus = set(cpus) - server_cpus
    servers = [s for s in args.servers if s in (OURS, OURS_GRPC) or (PEERS / "python").exists()]
    skipped = sorted(set(args.servers) - set(servers))
    if args.baseline_src:
        servers.insert(servers.index(OURS), BASELINE)
    folder = args.work or Path(tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)

    rows: list[str] = []
    summary: list[str] = []
    against_raw: list[str] = []
    package_notes: list[str] = []
    changes: list[str] = []
    grpc_rows: list[str] = []
    queue_rows: list[str] = []
    notes: list[str] = []
    workloads = _workloads(folder, args.workloads, args.text_package)
    for work in workloads if args.repeats else []:  # --repeats 0: per request only
        name = work.name
        measured = _measure(work, servers, args, server_cpus, client_cpus, folder)
        results, unsupported, batching = measured
        raws = {
            c: {k[0][4:]: v for k, v in results.items() if k[1] == c and k[0].startswith("raw ")}
            for c in args.concurrency
        }
        for clients in args.concurrency:
            if (OURS, clients) in results:
                ran, formed = batching[clients]
                against_raw.append(
                    _serve_raw.raw_row(
                        name, clients, results[OURS, clients], raws[clients], ran, formed
                    )
                )
        notes += [f"{name}: {s} not run, it {why}." for s, why in unsupported.items()]
        grpc_rows += _serve_grpc.comparison_rows(name, args.concurrency, results, OURS, OURS_GRPC)
        if work.api == "v1" and args.queue_workers:
            queue_rows += _queue_rows(work, args, server_cpus, client_cpus, folder)
        manifest = json.loads((work.package / "manifest.json").read_text())
        backbone = (manifest.get("lineage") or {}).get("backbone") or {}
        if backbone.get("strategy"):  # a trained encoder package: say what it is
            metrics = ", ".join(f"{k} {v:.2f}" for k, v in sorted(manifest["metrics"].items()))
            package_notes.append(
                f"\n{name}: package `{manifest['name']}`, {backbone['name']} trained by "
                f"tuneserve (strategy {backbone['strategy']}; {metrics})."
            )
        best: dict[str, tuple[float, float, int]] = {}
        for server in servers:
            for clients in args.concurrency:
                if (server, clients) not in results:
                    continue
                runs = results[server, clients]
                rps, p99 = _med(runs), _med(runs, "p99")
                if rps > best.get(server, (0.0, 0.0, 0))[0]:
                    best[server] = (rps, p99, clients)
                rows.append(
                    f"| {name} | {server} | {clients} | {spread([r['rps'] for r in runs])} | "
                    f"{spread([r['p50'] for r in runs], 1)} | "
                    f"{spread([r['p99'] for r in runs], 1)} | "
                    f"{sum(r['errors'] for r in runs)} |"
                )
        if OURS not in best:
            continue
        ours, ours_p99, ours_c = best[OURS]
        mode, better = _serve_raw.better_raw(raws[ours_c])
        cells = [
            f"{name}",
            f"{ours:.0f} (p99 {ours_p99:.0f} ms, {ours_c} clients)",
            f"{_med(better, 'rate'):.0f} ({mode}, our calls' sizes)",
            f"**{_serve_raw.against_raw(results[OURS, ours_c], raws[ours_c])}**",
        ]
        for peer in ("LitServe", "BentoML"):
            if peer in best:
                rps, p99, c = best[peer]
                cells.append(f"{rps:.0f} (p99 {p99:.0f} ms, {c} clients): **{ours / rps:.2f}x**")
            else:
                cells.append("not run")
        summary.append("| " + " | ".join(cells) + " |")
        for peer in ("LitServe", "BentoML"):
            for clients in (c for c in args.concurrency if (peer, c) in results):
                mine, theirs = results[OURS, clients], results[peer, clients]
                rows.append(
                    f"| {name} | ours / {peer} | {clients} | {_med(mine) / _med(theirs):.2f}x | | "
                    f"{_med(mine, 'p99'):.1f} vs {_med(theirs, 'p99'):.1f} | |"
                )
        for clients in (c for c in args.concurrency if (BASELINE, c) in results):
            before, after = results[BASELINE, clients], results[OURS, clients]
            changes.append(
                f"| {name} | {clients} | {spread([r['rps'] for r in before])} | "
                f"{spread([r['rps'] for r in after])} | **{_med(after) / _med(before):.2f}x** | "
                f"{spread([r['p99'] for r in before], 1)} | "
                f"{spread([r['p99'] for r in after], 1)} |"
            )

    rerun = (
        f"Rerun: `make bench-peers && .venv/bin/python benchmarks/serve.py --seconds "
        f"{args.seconds:g} --concurrency {' '.join(map(str, args.concurrency))} --repeats "
        f"{args.repeats} --workloads {' '.join(args.workloads)}"
        + (
            f" --servers {' '.join(map(shlex.quote, args.servers))}"
            * (args.servers != default_servers)
        )
        + (" --baseline-src BEFORE/src" if args.baseline_src else "")
        + (f" --per-request {args.per_request}" if args.per_request else "")
        + f" --queue-workers {' '.join(map(str, args.queue_workers))}"
        + f" --queue-requests {args.queue_requests}"
        + "`"
    )
    per_request: list[str] = []
    if args.per_request and args.baseline_src:
        per_request = [
            "",
            "Per request, in-process: one request at a time through the ASGI app (no HTTP, no "
            f"client, no batching), pinned to cores {sorted(server_cpus)}; the two versions "
            f"take {args.per_request} turns each (reversed every other turn), "
            f"{args.seconds / 4:g} s per workload per turn. Microseconds per request: min "
            "(median) over the turns; after / before is the ratio of the mins.",
            "",
            "| workload | before: us | after: us | after / before |",
            "|---|---:|---:|---:|",
            *_serve_raw.per_request_table(
                [(w.name, str(w.package), w.api, w.bodies[0]) for w in workloads],
                folder,
                {BASELINE: args.baseline_src, OURS: ROOT / "src"},
                args.per_request,
                args.seconds / 4,
                server_cpus,
            ),
        ]
    closed_loop = [
        "",
        f"`{BASELINE}` serves from `{args.baseline_src}` (the code before the change), "
        f"`{OURS}` from this checkout; both run side by side on the same cores and take "
        "turns, repeat by repeat (in reverse order every other repeat). req/s and p99: "
        "median (min-max) over the repeats; after / before is the ratio of the medians.",
        "",
        "| workload | clients | before: req/s | after: req/s | after / before | "
        "before: p99 ms | after: p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *changes,
    ]
    comparison = ["", "## Before and after", *(closed_loop if changes else []), *per_request]
    lines = [
        "# Serving: closed-loop load on tuneserve serve vs raw ONNX Runtime, LitServe, BentoML",
        "",
        f"Machine: {platform.machine()}, {len(cpus)} CPUs. Servers (and raw ONNX Runtime) are "
        f"pinned to cores {sorted(server_cpus)}, the load generator to {sorted(client_cpus)}. "
        f"{args.seconds:g} s per point, {args.repeats} repeats: median (min-max). One input "
        f"per request over keep-alive HTTP; batching at {MAX_BATCH} items and "
        f"{MAX_DELAY_MS:g} ms for tuneserve and LitServe, {MAX_BATCH} items and BentoML's "
        "adaptive wait for BentoML. All three run the same package through the same "
        "Predictor.",
        rerun,
        *(comparison if changes or per_request else []),
    ]
    lines += [
        "",
        "## gRPC and REST",
        "",
        "The same server, started with `--grpc-port`, loaded over gRPC by Triton's own client "
        "(`tritonclient.grpc`, one connection per client thread, one input per request as "
        "Open Inference Protocol tensors: FP32 pixels, BYTES texts, FP64 columns) and over "
        "REST (the workload's JSON body, keep-alive HTTP), taking turns as every server "
        "here does. Medians over the repeats.",
        "",
        *_serve_grpc.HEADER,
        *grpc_rows,
    ] * bool(grpc_rows)
    lines += [
        "",
        "## Queue: tuneserve worker on a Redis Stream",
        "",
        f"One burst of {args.queue_requests} one-input requests submitted at once "
        "(`QueueClient.submit_many`, one round trip) on a fresh stream, answered by 1 or 2 "
        f"`tuneserve worker` processes pinned to cores {sorted(server_cpus)} (the servers' "
        f"cores; batching at {MAX_BATCH} items and {MAX_DELAY_MS:g} ms as the servers), the "
        f"client pinned to {sorted(client_cpus)}. req/s = requests / (last answer - submit); "
        "latency = each request's submit-to-answer time, in a burst mostly its wait in the "
        "queue. Median (min-max) over the repeats; the worker counts take turns."
        + (
            f" With {len(server_cpus)} server core(s), {max(args.queue_workers)} workers share "
            "them: more workers than cores cannot add throughput here, only contention."
        )
        * (max(args.queue_workers) > len(server_cpus)),
        "",
        *_serve_queue.HEADER,
        *queue_rows,
    ] * bool(queue_rows)
    lines += [
        "",
        "## Against raw ONNX Runtime and the peers",
        "",
        "| model | ours: best req/s | raw ONNX Runtime at that load: better items/s | "
        "ours / raw | LitServe: best req/s, ours / it | BentoML: best req/s, ours / it |",
        "|---|---:|---:|---:|---:|---:|",
        *summary,
        "",
        "Targets in the issue: ours / raw >= 0.9 for MiniLM; ours / peer >= 1.5x on the small "
        "model (digits CNN) at equal p99. ours / raw: median (min-max) over the repeats of "
        "our req/s / the better raw mode's items/s at the same concurrency, the i-th repeat "
        "of each (they take turns within a repeat).",
        *([f"Not run: {', '.join(skipped)} (no .venv-peers: `make bench-peers`)."] * bool(skipped)),
        *notes,
        "",
        "## Served versus raw ONNX Runtime",
        "",
        "Raw ONNX Runtime runs the package's bare graph on the same inputs the clients send "
        "(every input in turn), already preprocessed, with no HTTP and no JSON: the servers "
        "pay for those and for batching. At each concurrency it runs calls of the sizes "
        "tuneserve's batcher formed there in a warm-up run as long as a repeat (its `/metrics` "
        "batch-size histogram; within a bucket, sizes such that the items add up), in a "
        "fixed shuffled order, "
        f"{args.seconds:g} s a repeat, {args.repeats} repeats, taking its turns among the "
        "servers. Text runs two ways: each batch padded to its longest text (one "
        "`session.run`, as a plain call on a tokenized batch is) and split into groups of "
        "similar lengths (`tuneserve.runtime.length_groups`, what the Predictor does); with "
        "one text a call the two are the same and run once. items/s: median (min-max); pad: "
        "padding tokens run per real token. ours: items per call = the mean tuneserve's "
        "batcher formed over the measuring repeats; in brackets raw's calls, items x count.",
        "",
        *_serve_raw.RAW_HEADER,
        *against_raw,
        *package_notes,
        "",
        "| model | server | clients | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Rows `ours / PEER` give the throughput ratio at the same concurrency and the two "
        "p99s (ours vs the peer's).",
    ] * bool(summary)
    lines.append("")
    text = "\n".join(lines)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

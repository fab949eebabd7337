"""The measuring children of ``benchmarks/serve.py`` that use no HTTP: raw ONNX Runtime, and
one request at a time through the ASGI app; and the tables they feed.

Raw ONNX Runtime is the comparator of the servers: the bare graph of the same package on the
same inputs, already preprocessed, in calls of the sizes tuneserve's batcher formed at that
load (its ``/metrics`` histogram, :func:`batch_mix`), for as long and as many times as each
server is measured. Text runs two ways:

  * ``padded``: each batch is one ``session.run``, padded to its longest text, as a plain
    call on a tokenized batch is;
  * ``grouped``: each batch is split by :func:`tuneserve.runtime.length_groups` (what the
    runtime does) and each group runs with its own, shorter padding.

Other inputs have no padding to save and run one way (``plain``). The servers are set
against the better of the two.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

TEXT_MODES = ("padded", "grouped")
PATHS = {"v1": "/v1/models/m/predict", "v2": "/v2/models/m/infer"}


def in_process(cpus: set[int], script: str, *args: str, src: Path | None = None) -> dict:
    """Run ``script`` (a child mode of the benchmark) pinned to ``cpus``, with tuneserve
    from ``src`` if given; its JSON answer, the last line of its output."""
    env = dict(os.environ, PYTHONPATH=str(src)) if src else None
    proc = subprocess.run(
        [sys.executable, script, *args],
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        check=False,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return dict(json.loads(proc.stdout.splitlines()[-1]))


Mix = list[tuple[int, int]]  # (items per call, calls)


def batch_histogram(port: int, model: str = "m") -> dict[str, float] | None:
    """The ``tuneserve_batch_size`` histogram of the server's ``/metrics`` for ``model``:
    ``{"sum": items, le: calls of at most le items, ...}``; None if it does not say."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    found: dict[str, float] = {}
    for match in re.finditer(r"^tuneserve_batch_size_(bucket|sum)\{(.*?)\} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        if labels.get("model") == model:
            found[labels.get("le", "sum")] = float(match.group(3))
    return found if "sum" in found else None


def batch_mix(before: dict[str, float], after: dict[str, float], most: int) -> Mix:
    """The calls the batcher made between two :func:`batch_histogram` readings, as
    (items, calls): a call in bucket (lo, hi] has ``lo + 1 + f * (hi' - lo - 1)`` items,
    ``hi'`` = hi capped at ``most`` (one item per client), ``f`` the one fraction that makes
    the items add up to the histogram's sum."""
    edges = sorted((float(k), k) for k in after if k not in ("sum", "+Inf"))
    buckets, lo, below = [], 0, 0.0
    for edge, key in edges:
        upto = after[key] - before.get(key, 0.0)
        low, high = lo + 1, max(lo + 1, min(int(edge), most))
        if upto > below:
            buckets.append((low, high, upto - below))
        lo, below = int(edge), upto
    if not buckets:
        return []
    base = sum(n * low for low, _, n in buckets)
    span = sum(n * (high - low) for low, high, n in buckets)
    items = after["sum"] - before.get("sum", 0.0)
    f = min(1.0, max(0.0, (items - base) / span)) if span else 0.0
    mix: dict[int, int] = {}
    for low, high, n in buckets:
        size = round(low + f * (high - low))
        mix[size] = mix.get(size, 0) + round(n)
    return sorted(mix.items())


def made(seen: tuple[dict[str, float], dict[str, float]] | None) -> tuple[float, float]:
    """Items and calls between two :func:`batch_histogram` readings (zeros without)."""
    if seen is None:
        return 0.0, 0.0
    before, after = seen
    return after["sum"] - before.get("sum", 0.0), after["+Inf"] - before.get("+Inf", 0.0)


def run_raw(
    cpus: set[int], package: Path, inputs: Path, seconds: float, mix: Mix, mode: str
) -> dict:
    """:func:`raw` in a child process pinned to ``cpus``."""
    args = [str(package), str(inputs), str(seconds), json.dumps(mix), mode]
    return in_process(cpus, __file__, "raw", *args)


def mix_text(mix: Mix) -> str:
    """``1x17 4x10 12x25``: calls of 1, 4 and 12 items, 17, 10 and 25 of them."""
    return " ".join(f"{size}x{calls}" for size, calls in mix)


def raw(package: str, inputs_file: str, seconds: float, mix: Mix, mode: str) -> dict:
    """Items/s of the bare graph on the preprocessed inputs, in calls of the sizes of
    ``mix`` (in a fixed shuffled order), for ``seconds`` after a warm-up: every input in
    turn (batches of consecutive inputs, the mix repeated until each input comes about
    equally often), each batch padded to its longest or split into length groups."""
    from tuneserve.runtime import Predictor, length_groups

    inputs = pickle.loads(Path(inputs_file).read_bytes())
    predictor = Predictor(package)  # threads: the cores this process is pinned to
    assert predictor.preprocessor is not None, "raw ONNX Runtime needs a single package"
    session = predictor.session
    names = {i.name for i in session.get_inputs()}
    scale = min(1.0, 256 / sum(calls for _, calls in mix))  # the same shares in fewer calls
    order = [size for size, calls in mix for _ in range(max(1, round(calls * scale)))]
    random.Random(0).shuffle(order)
    rounds = len(inputs) // math.gcd(len(inputs), sum(order))  # until the inputs repeat
    order *= max(1, min(rounds, 2000 // len(order)))
    batches: list[tuple[int, list[dict[str, Any]]]] = []  # per batch: items, graph calls
    real = computed = start = 0  # tokens: not padding, and run
    for size in order:
        chunk = [inputs[(start + i) % len(inputs)] for i in range(size)]
        start += size
        feed = {k: v for k, v in predictor.preprocessor.transform(chunk).items() if k in names}
        mask = feed.get("attention_mask")
        groups = length_groups(mask) if mode == "grouped" else None
        calls = [feed]
        if groups is not None:
            calls = [{k: v[rows, :length] for k, v in feed.items()} for rows, length in groups]
        batches.append((size, calls))
        if mask is not None:
            real += int(mask.sum())
            computed += sum(int(c["attention_mask"].size) for c in calls)
    warm = time.perf_counter()
    for _, calls in batches:  # every shape once, at most a second
        for call in calls:
            session.run(None, call)
        if time.perf_counter() - warm > 1.0:
            break
    items, runs, begin = 0, 0, time.perf_counter()
    while time.perf_counter() - begin < seconds:
        size, calls = batches[runs % len(batches)]
        for call in calls:
            session.run(None, call)
        items += size
        runs += 1
    return {
        "rate": items / (time.perf_counter() - begin),
        "padding": computed / real - 1 if real else None,  # padding tokens per real token
    }


def per_request(work_file: str, seconds: float) -> dict[str, float | None]:
    """Microseconds per request through the ASGI app, in this process, one request at a
    time: no HTTP, no client, no batching, so the server's own cost per request shows
    (the closed loop's spread on a busy machine hides a few percent). None: refused."""
    import asyncio

    from tuneserve.serving import ModelSpec, Repository, create_app

    loads = pickle.loads(Path(work_file).read_bytes())
    repository = Repository(
        [ModelSpec.parse(f"w{i}={package}") for i, (_, package, _, _) in enumerate(loads)]
    )
    repository.load_all()
    app = create_app(repository)

    async def call(path: str, body: bytes) -> int:
        sent, status = False, 0

        async def receive() -> dict:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)  # no disconnect while the answer is written
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        length = str(len(body)).encode()
        scope = {
            "type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "http_version": "1.1", "scheme": "http",
            "headers": [(b"content-type", b"application/json"), (b"content-length", length)],
            "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1),
        }  # fmt: skip
        await app(scope, receive, send)  # type: ignore[arg-type]
        return status

    async def measure() -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for i, (name, _, api, body) in enumerate(loads):
            path = PATHS[api].replace("/m/", f"/w{i}/")
            if await call(path, body) != 200:
                out[name] = None
                continue
            for _ in range(50):
                await call(path, body)
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                await call(path, body)
                calls += 1
            out[name] = (time.perf_counter() - start) / calls * 1e6
        return out

    return asyncio.run(measure())


def per_request_table(
    loads: list[tuple[str, str, str, bytes]],
    folder: Path,
    versions: dict[str, Path],
    turns: int,
    seconds: float,
    cpus: set[int],
) -> list[str]:
    """Before/after microseconds per request of ``loads`` (name, package, api, body),
    the two ``versions`` (name: src folder, before first) in turns (reversed every other
    turn), ``seconds`` a workload a turn: min and median over the turns."""
    work_file = folder / "per_request.pkl"
    work_file.write_bytes(pickle.dumps(loads))
    runs: dict[str, list[dict]] = {v: [] for v in versions}
    for turn in range(turns):
        for version in list(versions)[:: -1 if turn % 2 else 1]:
            child = ["per-request", str(work_file), str(seconds)]
            runs[version].append(in_process(cpus, __file__, *child, src=versions[version]))

    def cell(version: str, name: str) -> tuple[str, float | None]:
        values = [r[name] for r in runs[version] if r.get(name) is not None]
        if not values:
            return "refused", None
        return f"{min(values):.0f} ({statistics.median(values):.0f})", min(values)

    before_version, after_version = versions
    lines = []
    for name, *_ in loads:
        (before, low_before) = cell(before_version, name)
        (after, low_after) = cell(after_version, name)
        ratio = f"**{low_after / low_before:.2f}x**" if low_before and low_after else ""
        lines.append(f"| {name} | {before} | {after} | {ratio} |")
    return lines


def spread(values: list[float], digits: int = 0) -> str:
    """``median (min-max)``, or the one value."""
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def better_raw(raws: dict[str, list[dict]]) -> tuple[str, list[dict]]:
    """The raw mode with the higher median items/s, and its repeats."""
    return max(raws.items(), key=lambda kv: statistics.median(r["rate"] for r in kv[1]))


def against_raw(served: list[dict], raws: dict[str, list[dict]]) -> str:
    """Served req/s / the better raw items/s, repeat by repeat (the i-th repeats of the
    two): ``median (min-max)``."""
    _, best = better_raw(raws)
    ratios = [s["rps"] / r["rate"] for s, r in zip(served, best, strict=False)]
    return spread(ratios, 2 if statistics.median(ratios) >= 0.05 else 4)


def raw_row(
    name: str,
    clients: int,
    served: list[dict],
    raws: dict[str, list[dict]],
    ran: Mix,
    formed: float,
) -> str:
    """One row of the served-versus-raw table: ours at ``clients``, whose batcher formed
    ``formed`` items per call, against raw ONNX Runtime in calls of the ``ran`` mix."""
    cells = [name, str(clients), spread([r["rps"] for r in served])]
    cells.append(f"{formed:.1f} ({mix_text(ran)})")
    for mode in TEXT_MODES:
        runs = raws.get(mode) or (raws.get("plain") if mode == "padded" else None)
        if not runs:
            cells.append("= padded (1 a call)" if "padded" in raws else "n/a")
            continue
        pad = runs[0]["padding"]
        cells.append(spread([r["rate"] for r in runs]) + (f", pad {pad:.0%}" if pad else ""))
    mode, _ = better_raw(raws)
    cells.append(f"**{against_raw(served, raws)}** ({mode})")
    return "| " + " | ".join(cells) + " |"


RAW_HEADER = [
    "| model | clients | ours: req/s | ours: items per call (raw's calls: items x count) | "
    "raw ORT padded (not text: plain): items/s | raw ORT length-grouped: items/s | "
    "ours / better raw |",
    "|---|---:|---:|---:|---:|---:|---:|",
]


if __name__ == "__main__":  # a child: raw PACKAGE INPUTS SECONDS MIX MODE, or
    _, what, *rest = sys.argv  # per-request WORK SECONDS
    if what == "raw":
        package, inputs_file, seconds, mix, mode = rest
        print(json.dumps(raw(package, inputs_file, float(seconds), json.loads(mix), mode)))
    elif what == "per-request":
        print(json.dumps(per_request(rest[0], float(rest[1]))))
    else:
        raise SystemExit(f"unknown child mode {what!r}")

"""The demo's queue step: a ``tuneserve worker`` answers the champion's requests from a
Redis Stream, and a :class:`~tuneserve.client.QueueClient` sends it one; printed with the
two commands that do the same. Skipped, with a line saying why, when no Redis answers."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REDIS = "redis://127.0.0.1:6379/0"


def queue_round_trip(con: Any, out: Path, model: str, png: Path, url: str = REDIS) -> str | None:
    """Start a worker for ``model`` on a stream of its own, send it ``png``, print the
    label; None when Redis is not there."""
    from tuneserve.client import QueueClient
    from tuneserve.exceptions import UnavailableError
    from tuneserve.queueing import Keys, connect_sync

    try:
        redis = connect_sync(url)
        redis.ping()
    except UnavailableError:
        con.print(
            f"queue: skipped, no Redis answers at {url} (start one with `redis-server`, then "
            f"`tuneserve worker --model {model} --queue {url}`)"
        )
        return None
    stream = f"tuneserve:demo:{uuid.uuid4().hex[:8]}"  # the demo's own: no user's worker
    log = out / "worker.log"
    command = [sys.executable, "-m", "tuneserve.cli.main", "worker", "--model", model]
    with log.open("w") as sink:
        worker = subprocess.Popen(
            [*command, "--queue", url, "--stream", stream, "--watch", "0"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while " of group " not in log.read_text(errors="replace"):
            if worker.poll() is not None or time.monotonic() > deadline:
                con.print(f"queue: the worker did not start; its log: {log}")
                return None
            time.sleep(0.1)
        with QueueClient(url, stream=stream, model=model, timeout=60) as client:
            image = base64.b64encode(png.read_bytes()).decode()
            answer = client.submit([image]).result()
        label = str(answer["predictions"][0]["label"])
    finally:
        worker.send_signal(signal.SIGTERM)  # drains, then exits
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
        keys = Keys(stream)
        redis.delete(stream, keys.results, keys.dead, keys.failures)
        leftovers = list(redis.scan_iter(f"{stream}:*"))
        if leftovers:
            redis.delete(*leftovers)
        redis.close()
    con.print(f"queue (Redis Streams) -> {label}")
    con.print(f"  tuneserve worker --model {model} --queue {url} &", markup=False)
    con.print(f"  tuneserve submit --queue {url} --model {model} {png}", markup=False)
    return label

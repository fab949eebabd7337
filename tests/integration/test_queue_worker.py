"""The queue worker against the real Redis on 127.0.0.1:6379: predictions equal the
runtime's for text, images and tables; messages that are no request, unknown models and bad
inputs are dead-lettered at once while the worker keeps serving; server-side failures are
retried and then dead-lettered; the queue's metrics; registry aliases followed; SIGTERM
drains. Each test has its own stream, deleted afterwards."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry as Registry
from prometheus_client import generate_latest

from tuneserve.client import QueueClient
from tuneserve.exceptions import InvalidInputError, NotFoundError, UnavailableError
from tuneserve.queueing import (
    Keys,
    QueueMetrics,
    Worker,
    WorkerConfig,
    WorkerSettings,
    connect,
    encode_request,
    load_state,
)
from tuneserve.runtime import Predictor
from tuneserve.serving import BatchSettings, Limits

REDIS = "redis://127.0.0.1:6379/0"
CLI = [sys.executable, "-m", "tuneserve.cli.main"]


@pytest.fixture(scope="module")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"the queue tests need Redis at {REDIS} and it is down: {exc}")
    return REDIS


@pytest.fixture
def stream(redis_url: str) -> Iterator[str]:
    """A stream of this test alone; its keys are deleted afterwards."""
    name = f"test:queue:{uuid.uuid4().hex[:12]}"
    yield name
    r = redis.Redis.from_url(redis_url)
    keys = list(r.scan_iter(f"{name}*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


class RunningWorker:
    """A :class:`Worker` in this process, on its own event loop in a thread."""

    def __init__(self, config: WorkerConfig, state: Any = None) -> None:
        self.config = config
        self.state = state or load_state(config)
        self.worker: Worker | None = None
        self.processed: int | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        assert self._ready.wait(60), "the worker did not start"

    async def _main(self) -> None:
        client = await connect(self.config.url)
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.worker = Worker(self.state, client, self.config.settings, self.config.url)
        await self.worker.ensure_group()
        self._ready.set()
        try:
            self.processed = await self.worker.run(self._stop)
        finally:
            await client.aclose()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def metrics(self) -> str:
        return generate_latest(self.state.metrics.registry).decode()

    def stop(self, within: float = 60) -> int:
        """Drain and stop; how many outcomes it recorded."""
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(within)
        assert not self._thread.is_alive(), "the worker did not drain"
        assert self.processed is not None
        return self.processed


def _config(stream: str, models: list[str], **settings: Any) -> WorkerConfig:
    limits = settings.pop("limits", Limits())
    watch = settings.pop("watch", 0.0)
    return WorkerConfig(
        models=models,
        url=REDIS,
        settings=WorkerSettings(stream=stream, **settings),
        batch=BatchSettings(max_batch_size=32, max_queue_delay_ms=5),
        limits=limits,
        watch=watch,
    )


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((image[:, :, 0] * 255).round().astype(np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()


def _results(stream: str) -> list[dict[str, str]]:
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    try:
        return [fields for _, fields in r.xrange(Keys(stream).results)]
    finally:
        r.close()


def _dead(stream: str) -> list[dict[str, str]]:
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    try:
        return [fields for _, fields in r.xrange(Keys(stream).dead)]
    finally:
        r.close()


def test_predictions_equal_the_runtimes_for_text_images_and_tables(
    stream, digits_package, cancer_package, text_package, digits_splits, cancer_splits, text_model
):
    models = [f"digits={digits_package}", f"cancer={cancer_package}", f"reviews={text_package}"]
    running = RunningWorker(_config(stream, models))
    try:
        with QueueClient(REDIS, stream=stream, timeout=60) as client:
            images = digits_splits.test.X[:5]
            encoded = [base64.b64encode(_png(x)).decode() for x in images[:3]]
            digits = client.submit(encoded + [x[:, :, 0].tolist() for x in images[3:]], "digits")
            rows = cancer_splits.test.X.iloc[:40].to_dict("records")
            tables = client.submit_many([[row] for row in rows], "cancer")  # 40 concurrent
            _, _, texts, _ = text_model
            reviews = client.submit(texts, "reviews")

            got = digits.result(60)
            want = Predictor(digits_package).predict(
                [_png(x) for x in images[:3]] + [x[:, :, 0] for x in images[3:]]
            )
            assert got["model"] == "digits" and got["version"] == "1"
            assert [p["label"] for p in got["predictions"]] == [p.label for p in want]

            probabilities = [f.result(60)["predictions"][0]["probabilities"] for f in tables]
            want_p = Predictor(cancer_package).predict_proba(rows)
            labels = list(probabilities[0])
            got_p = [[p[k] for k in labels] for p in probabilities]
            np.testing.assert_allclose(got_p, want_p, atol=1e-6)

            got = reviews.result(60)
            want = Predictor(text_package).predict(texts)
            assert [p["label"] for p in got["predictions"]] == [p.label for p in want]
            np.testing.assert_allclose(
                [list(p["probabilities"].values()) for p in got["predictions"]],
                [list(p.probabilities.values()) for p in want],
                atol=1e-5,
            )
        # the 40 one-row requests, in work at once, met in the model's batcher
        assert running.state.repository.get("cancer").batcher.stats.largest > 1
    finally:
        processed = running.stop()
    assert processed == 42
    results = _results(stream)
    assert len(results) == 42 and {r["ok"] for r in results} == {"1"}
    assert json.loads(results[0]["body"])["predictions"]
    assert _dead(stream) == []
    assert 'tuneserve_requests_total{api="queue",code="200",model="cancer"} 40.0\n' in (
        running.metrics()
    )


def test_bad_messages_are_dead_lettered_at_once_and_the_worker_keeps_serving(
    stream, cancer_package, cancer_splits
):
    running = RunningWorker(_config(stream, [f"cancer={cancer_package}"]))
    r = redis.Redis.from_url(REDIS)
    keys = Keys(stream)
    try:
        r.xadd(stream, {"request": "this is not JSON"})
        r.xadd(stream, {"request": b"\xff\xfe not UTF-8"})
        r.xadd(stream, {"something": "else"})
        r.xadd(stream, {"request": json.dumps({"id": "no-model", "inputs": [1]})})
        r.xadd(stream, {"request": json.dumps({"model": "cancer", "inputs": [1]})})
        r.xadd(stream, {"request": json.dumps(["a", "list"])})
        evil = {"id": "evil", "model": "cancer", "inputs": [{}], "reply_to": f"{stream}:results"}
        r.xadd(stream, {"request": json.dumps(evil)})
        with QueueClient(REDIS, stream=stream, model="cancer", timeout=60) as client:
            unknown = client.submit([{"a": 1}], model="no-such-model")
            with pytest.raises(NotFoundError, match="no model named 'no-such-model'"):
                unknown.result(60)
            bad = client.submit([{"mean radius": "not a number"}])
            with pytest.raises(InvalidInputError, match="missing column"):
                bad.result(60)
            empty = client.submit([[]])
            with pytest.raises(InvalidInputError):
                empty.result(60)
            r.rpush(client.reply_key, "garbage", json.dumps([1]), json.dumps({"id": 1}))
            row = cancer_splits.test.X.iloc[:1].to_dict("records")
            good = client.submit(row).result(60)  # the worker (and the client) still serve
            assert good["predictions"][0]["label"] in ("malignant", "benign")
    finally:
        running.stop()
        r.close()
    dead = _dead(stream)
    assert len(dead) == 10, [d["error"] for d in dead]
    assert all(int(d["deliveries"]) == 1 for d in dead)
    by_request = {d["request"]: d["error"] for d in dead}  # the request as it was sent
    expected = {
        "this is not JSON": r"'request' field is not JSON",
        "\ufffd\ufffd not UTF-8": r"'request' field is not JSON",  # bad bytes read as U+FFFD
        '{"something": "else"}': r"no 'request' field \(fields: \['something'\]\)",
        json.dumps({"id": "no-model", "inputs": [1]}): r"request no-model names no model",
        json.dumps({"model": "cancer", "inputs": [1]}): r"the request has no id",
        json.dumps(["a", "list"]): r"the request is a JSON list, not an object",
        json.dumps(evil): r"reply_to is '.*:results'; it must be a key that starts with",
    }
    for request, pattern in expected.items():
        assert re.search(pattern, by_request[request]), (pattern, by_request[request])
    by_id = {d["id"]: d["error"] for d in dead}
    assert "no model named 'no-such-model' is served on stream" in by_id[unknown.request_id]
    assert "Every worker of a stream must serve every model sent to it" in by_id[unknown.request_id]
    assert "missing column" in by_id[bad.request_id]
    assert by_id[empty.request_id]
    # error results for the requests that have an id: the submitter learns why
    results = {x["id"]: x for x in _results(stream)}
    assert results["no-model"]["ok"] == "0" and "names no model" in results["no-model"]["body"]
    assert results["evil"]["ok"] == "0"
    assert sum(x["ok"] == "1" for x in results.values()) == 1
    assert redis.Redis.from_url(REDIS).xlen(keys.stream) == 0  # all acknowledged and deleted


def test_server_side_failures_are_retried_then_dead_lettered(stream, cancer_package, cancer_splits):
    """A request over the worker's time limit is the server's failure: it stays pending, is
    claimed again (here by a worker with a sane limit, which answers it) or, when it keeps
    failing, dead-lettered after --max-attempts deliveries with its last error."""
    rows = cancer_splits.test.X.iloc[:2].to_dict("records")
    too_fast = Limits(timeout_s=1e-6)  # no ONNX Runtime call ends within a microsecond
    model = [f"cancer={cancer_package}"]
    with QueueClient(REDIS, stream=stream, model="cancer", timeout=60) as client:
        failing = RunningWorker(_config(stream, model, limits=too_fast, visibility_timeout=60))
        first = client.submit([rows[0]])
        r = redis.Redis.from_url(REDIS, decode_responses=True)
        deadline = time.monotonic() + 30
        while not r.hlen(Keys(stream).failures):  # the failure is noted, the message pending
            assert time.monotonic() < deadline, "the first delivery never failed"
            time.sleep(0.05)
        assert failing.stop() == 0
        assert r.xpending(stream, "tuneserve-workers")["pending"] == 1
        healthy = RunningWorker(_config(stream, model, visibility_timeout=0.3))
        answer = first.result(60)  # claimed from the stopped worker and answered
        assert answer["predictions"][0]["label"] in ("malignant", "benign")
        healthy.stop()
        assert f'tuneserve_queue_retried_total{{stream="{stream}"}} 1.0\n' in healthy.metrics()

        hopeless = RunningWorker(
            _config(stream, model, limits=too_fast, visibility_timeout=0.2, max_attempts=3)
        )
        second = client.submit([rows[1]])
        with pytest.raises(UnavailableError, match=r"gave up after 3 deliveries.*TimeoutError"):
            second.result(60)
        hopeless.stop()
        r.close()
    (dead,) = _dead(stream)
    assert dead["deliveries"] == "4" and "longer than 1e-06 s" in dead["error"]
    assert [x["ok"] for x in _results(stream)] == ["1", "0"]
    assert "tuneserve_queue_dead_lettered_total" in hopeless.metrics()


def test_the_queue_metrics_count_backlog_pending_and_age(stream, cancer_package, cancer_splits):
    config = _config(stream, [f"cancer={cancer_package}"], visibility_timeout=0.3)
    state = load_state(config)
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    rows = cancer_splits.test.X.iloc[:5].to_dict("records")
    for row in rows:
        r.xadd(stream, encode_request("cancer", [row])[1])

    async def observe() -> Any:
        client = await connect(REDIS)
        try:  # a worker that does not run, only reads the queue's state
            worker = Worker(state, client, config.settings, metrics=QueueMetrics(Registry()))
            await worker.ensure_group()
            return await worker.queue_state()
        finally:
            await client.aclose()

    before = asyncio.run(observe())
    assert (before.backlog, before.pending) == (5, 0) and before.oldest_age >= 0
    # a worker that read two messages and died: they are pending
    r.xreadgroup("tuneserve-workers", "dead-worker", {stream: ">"}, count=2)
    after = asyncio.run(observe())
    assert (after.backlog, after.pending) == (3, 2)
    assert after.oldest_age >= before.oldest_age

    running = RunningWorker(config, state)
    labels = f'{{stream="{stream}"}}'
    deadline = time.monotonic() + 30
    while f"tuneserve_queue_oldest_age_seconds{labels} 0.0\n" not in (text := running.metrics()):
        assert time.monotonic() < deadline, f"the queue never emptied:\n{text}"
        time.sleep(0.05)
    running.stop()
    r.close()
    assert len(_results(stream)) == 5
    assert f"tuneserve_queue_retried_total{labels} 2.0\n" in text  # the dead worker's two
    assert f'tuneserve_queue_processed_total{{outcome="ok",stream="{stream}"}} 5.0\n' in text
    assert f"tuneserve_queue_backlog{labels} 0.0\n" in text
    assert f"tuneserve_queue_pending{labels} 0.0\n" in text
    assert f"tuneserve_queue_dead_lettered_total{labels}" not in text  # none yet


def test_redis_down_at_start_is_one_clear_error(unused_port):
    url = f"redis://127.0.0.1:{unused_port}/0"
    with pytest.raises(UnavailableError, match=rf"cannot reach Redis at {url} .*Hint: start"):
        asyncio.run(connect(url))
    with pytest.raises(UnavailableError, match="cannot reach Redis"):
        QueueClient(url)
    with pytest.raises(InvalidInputError, match="not a Redis URL; write redis://HOST:PORT/DB"):
        QueueClient("http://127.0.0.1:6379")


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_registry_alias_moves_are_followed(stream, tmp_path, monkeypatch):
    from tuneserve.registry import Registry
    from tuneserve.training import train

    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    registry = Registry()
    for seed in (0, 1):
        path = train("iris", tmp_path / f"v{seed}", backbone="logreg", seed=seed).package.path
        registry.register(path, "iris")
    registry.promote("iris", 1)
    running = RunningWorker(_config(stream, ["iris"], watch=0.05))
    row = {
        "sepal length (cm)": 5.9,
        "sepal width (cm)": 3.0,
        "petal length (cm)": 4.2,
        "petal width (cm)": 1.5,
    }
    try:
        with QueueClient(REDIS, stream=stream, model="iris", timeout=60) as client:
            assert client.submit([row]).result(60)["version"] == "1"
            registry.promote("iris", 2)
            deadline = time.monotonic() + 60
            while client.submit([row]).result(60)["version"] != "2":
                assert time.monotonic() < deadline, "the worker never followed the alias"
                time.sleep(0.05)
    finally:
        running.stop()
    assert running.state.repository.swaps == 1


def _worker_process(stream: str, package: Any, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *CLI,
            "worker",
            "--model",
            f"cancer={package}",
            "--queue",
            REDIS,
            "--stream",
            stream,
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )


def test_sigterm_drains_what_is_in_work_and_exits_0(stream, cancer_package, cancer_splits):
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    rows = cancer_splits.test.X.iloc[:50].to_dict("records")
    ids = []
    pipe = r.pipeline(transaction=False)
    for i in range(2000):
        rid, fields = encode_request("cancer", [rows[i % len(rows)]])
        ids.append(rid)
        pipe.xadd(stream, fields)
    pipe.execute()
    proc = _worker_process(stream, cancer_package, "--metrics-port", "0", "--concurrency", "16")
    port = None
    assert proc.stderr is not None
    for line in proc.stderr:  # "metrics on http://127.0.0.1:PORT/metrics"
        if m := re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", line):
            port = int(m.group(1))
            break
    assert port, "no metrics line"
    deadline = time.monotonic() + 60
    while r.xlen(Keys(stream).results) < 1:
        assert time.monotonic() < deadline and proc.poll() is None, "nothing was answered"
        time.sleep(0.01)
    labels = f'{{stream="{stream}"}}'
    while True:  # the gauges are read from Redis every second
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        if f"tuneserve_queue_backlog{labels}" in text:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    for name in ("pending", "oldest_age_seconds"):
        assert f"tuneserve_queue_{name}{labels}" in text
    assert 'tuneserve_requests_total{api="queue",code="200",model="cancer"}' in text
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    found = re.search(r"drained: (\d+) requests answered", err)
    assert found, err
    drained = int(found.group(1))
    answered = r.xlen(Keys(stream).results)
    assert 0 < drained == answered < 2000  # stopped early, with nothing left half done
    assert r.xpending(stream, "tuneserve-workers")["pending"] == 0
    assert r.xinfo_consumers(stream, "tuneserve-workers") == []  # it left the group
    assert r.xlen(stream) == 2000 - answered  # the rest wait, unread, for another worker
    r.close()


def test_the_limits_concurrency_ttls_and_results_length(stream, cancer_package, cancer_splits):
    """--concurrency caps the messages in work (so the batch), --result-ttl the life of the
    done markers and replies, a request's ttl its own reply, --results-maxlen the results."""
    config = _config(
        stream, [f"cancer={cancer_package}"], concurrency=3, result_ttl=500, results_maxlen=10
    )
    running = RunningWorker(config)
    rows = cancer_splits.test.X.iloc[:1].to_dict("records")
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    try:
        with QueueClient(REDIS, stream=stream, model="cancer", timeout=60) as client:
            futures = client.submit_many([rows] * 300)
            assert all(f.result(60)["predictions"] for f in futures)
            done = r.ttl(Keys(stream).done(futures[0].request_id))
            assert 0 < done <= 500
            keys = Keys(stream)
            r.xadd(stream, encode_request("cancer", rows, reply_to=keys.reply("x"))[1])
            r.xadd(stream, encode_request("cancer", rows, reply_to=keys.reply("y"), ttl=77)[1])
            deadline = time.monotonic() + 30
            while not (r.exists(keys.reply("x")) and r.exists(keys.reply("y"))):
                assert time.monotonic() < deadline, "no reply"
                time.sleep(0.02)
            assert 77 < r.ttl(keys.reply("x")) <= 500  # no ttl sent: --result-ttl
            assert 0 < r.ttl(keys.reply("y")) <= 77  # the request's own
    finally:
        running.stop()
        r.close()
    stats = running.state.repository.get("cancer").batcher.stats
    assert stats.items == 302 and stats.largest <= 3
    # trimmed in whole nodes of 100 entries (MAXLEN ~): far fewer than the 302 written
    assert redis.Redis.from_url(REDIS).xlen(Keys(stream).results) <= 110


def test_the_worker_and_the_client_never_import_torch(digits_package):
    code = f"""
import asyncio, sys
from tuneserve.cli import worker
from tuneserve.client import QueueClient
from tuneserve.queueing import Worker, WorkerConfig, connect, load_state
state = load_state(WorkerConfig(models=[{str(digits_package)!r}], url={REDIS!r}))
async def main():
    client = await connect({REDIS!r})
    Worker(state, client)
    await client.aclose()
asyncio.run(main())
QueueClient({REDIS!r}).close()
assert "torch" not in sys.modules, "torch was imported"
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_request_no_worker_answers_times_out_with_a_hint(stream):
    with QueueClient(REDIS, stream=stream, model="reviews", timeout=0.3) as client:
        future = client.submit(["hello"])
        with pytest.raises(TimeoutError, match=r"no answer to request \w+ within 0.3 s; is a wor"):
            future.result(30)
        with pytest.raises(InvalidInputError, match="non-empty list"):
            client.submit([])
    r = redis.Redis.from_url(REDIS)
    assert r.xlen(stream) == 1  # still queued: a worker that comes later answers it
    r.close()


def test_a_message_that_breaks_the_parser_is_dead_lettered_not_retried_forever(
    stream, cancer_package, monkeypatch
):
    """Deep JSON and a 5,000-digit integer are dead-lettered on their first delivery; and
    giving up cannot fail: a message whose reading raises anything is dead-lettered raw,
    with the error, after --max-attempts."""
    import tuneserve.queueing.worker as worker_module

    real = worker_module.parse_request

    def parse(fields: dict[str, str], keys: Keys, **options: Any) -> Any:
        if fields.get("request") == "unreadable":
            raise RuntimeError("the parser broke")
        return real(fields, keys, **options)

    monkeypatch.setattr(worker_module, "parse_request", parse)
    config = _config(stream, [f"cancer={cancer_package}"], visibility_timeout=0.2, max_attempts=1)
    running = RunningWorker(config)
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    try:
        r.xadd(stream, {"request": "[" * 100_000 + "]" * 100_000})
        r.xadd(stream, {"request": '{"id": "big", "model": "cancer", "inputs": [' + "9" * 5000})
        r.xadd(stream, {"request": "unreadable"})
        deadline = time.monotonic() + 30
        while r.xlen(Keys(stream).dead) < 3:
            assert time.monotonic() < deadline, _dead(stream)
            time.sleep(0.05)
    finally:
        running.stop()
        r.close()
    by_start = {d["request"][:3]: d for d in _dead(stream)}  # "[[[", '{"i', "unr"
    assert by_start["[[["]["deliveries"] == by_start['{"i']["deliveries"] == "1"
    assert "nested deeper than the worker parses" in by_start["[[["]["error"]
    assert "is not JSON" in by_start['{"i']["error"]
    unreadable = by_start["unr"]
    assert unreadable["request"] == "unreadable" and unreadable["deliveries"] == "2"
    assert "cannot be read (RuntimeError: the parser broke)" in unreadable["error"]
    assert redis.Redis.from_url(REDIS).xlen(stream) == 0


def _private_redis(tmp_path: Any, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of this test alone, without persistence: ``(process, url)``."""
    import shutil
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not on PATH; this test starts its own"
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)]
    proc = subprocess.Popen([binary, *args, *extra], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, "no redis-server"
            time.sleep(0.02)
    client.close()
    return proc, f"redis://127.0.0.1:{port}/0"


def test_the_stream_or_group_deleted_and_a_read_only_redis_are_survived(
    stream, cancer_package, cancer_splits, tmp_path
):
    """The stream deleted under a blocked XREADGROUP (UNBLOCKED), the group destroyed
    (NOGROUP, in the read and the claim loop) and a Redis turned read-only (READONLY, as a
    replica after a failover) neither stop the worker nor any of its loops."""
    server, url = _private_redis(tmp_path)
    config = _config(stream, [f"cancer={cancer_package}"], visibility_timeout=0.1)
    config.url = url
    running = RunningWorker(config)
    r = redis.Redis.from_url(url, decode_responses=True)
    row = cancer_splits.test.X.iloc[:1].to_dict("records")
    try:
        with QueueClient(url, stream=stream, model="cancer", timeout=30) as client:
            time.sleep(0.2)  # the worker waits in XREADGROUP
            r.delete(stream)
            assert client.submit(row).result(30)["predictions"]
            r.xgroup_destroy(stream, "tuneserve-workers")
            assert client.submit(row).result(30)["predictions"]
            errors = f'tuneserve_queue_redis_errors_total{{stream="{stream}"}}'
            assert f"{errors} 0.0" in running.metrics()
            r.replicaof("127.0.0.1", 1)  # a replica of nothing: every write is refused
            deadline = time.monotonic() + 30
            while f"{errors} 0.0" in running.metrics():  # XREADGROUP refused, retried
                assert time.monotonic() < deadline, "the worker never met READONLY"
                time.sleep(0.05)
            r.replicaof("NO", "ONE")
            assert client.submit(row).result(30)["predictions"]
        assert running.is_alive()
    finally:
        running.stop()
        r.close()
        server.terminate()
        server.wait(30)


def test_a_helper_loop_that_dies_stops_the_worker_loudly(stream, cancer_package, monkeypatch):
    """A claim loop that dies of an error nobody expected must not leave a worker that reads
    on but never claims what dead workers left: the worker stops with an error naming it."""

    async def broken(self: Worker, idle_ms: int) -> int:
        raise ValueError("a bug in claiming")

    monkeypatch.setattr(Worker, "claim", broken)
    config = _config(stream, [f"cancer={cancer_package}"], visibility_timeout=0.1)
    state = load_state(config)

    async def main() -> None:
        client = await connect(REDIS)
        try:
            await Worker(state, client, config.settings).run(asyncio.Event())
        finally:
            await client.aclose()

    with pytest.raises(RuntimeError, match=r"claim loop ended \(ValueError: a bug in claiming\)"):
        asyncio.run(asyncio.wait_for(main(), 30))


def test_a_consumer_leaves_the_group_only_with_nothing_pending(stream):
    """The check and the delete are one script: a message claimed by this consumer just
    before it leaves stays pending (and claimable) instead of vanishing with the consumer."""
    from tuneserve.queueing.protocol import LEAVE_SCRIPT

    r = redis.Redis.from_url(REDIS, decode_responses=True)
    leave = r.register_script(LEAVE_SCRIPT)
    r.xgroup_create(stream, "g", "0", mkstream=True)
    entry = r.xadd(stream, {"request": "{}"})
    r.xreadgroup("g", "me", {stream: ">"}, count=1)
    assert leave(keys=[stream], args=["g", "me"]) == 0
    assert [c["name"] for c in r.xinfo_consumers(stream, "g")] == ["me"]
    r.xack(stream, "g", entry)
    assert leave(keys=[stream], args=["g", "me"]) == 1
    assert r.xinfo_consumers(stream, "g") == []
    r.close()


def test_a_full_batcher_makes_messages_wait_not_fail(stream, cancer_package, cancer_splits):
    """The worker's own overload is no failure of the request: with room for 8 items in the
    batcher and 64 messages in work, 300 one-row requests are all answered and none costs a
    delivery (with --max-attempts 1 a single QueueFullError would dead-letter one)."""
    config = _config(stream, [f"cancer={cancer_package}"], max_attempts=1, visibility_timeout=5)
    config.batch.max_queue = 8
    running = RunningWorker(config)
    rows = cancer_splits.test.X.to_dict("records")
    try:
        with QueueClient(REDIS, stream=stream, model="cancer", timeout=60) as client:
            futures = client.submit_many([[rows[i % len(rows)]] for i in range(300)])
            answers = [f.result(60) for f in futures]
    finally:
        running.stop()
    assert all(len(a["predictions"]) == 1 for a in answers)
    assert _dead(stream) == []
    assert not re.search(r"queue_retried_total\{.*\} [1-9]", running.metrics())  # none failed


def test_a_cancelled_future_does_not_stop_the_clients_reply_thread(stream):
    """The caller cancels one future; its reply arrives anyway; the others still resolve,
    and a future with no reply still times out (the same thread)."""
    with QueueClient(REDIS, stream=stream, model="m", timeout=2) as client:
        first, second, late = client.submit_many([["a"], ["b"], ["c"]])
        assert first.cancel()
        r = redis.Redis.from_url(REDIS)
        for future in (first, second):
            reply = {"id": future.request_id, "ok": True, "body": {"predictions": [1]}}
            r.rpush(client.reply_key, json.dumps(reply))
        r.close()
        assert second.result(10) == {"predictions": [1]}
        with pytest.raises(TimeoutError, match="no answer to request"):
            late.result(10)
        assert first.cancelled()


def test_a_resubmitted_request_id_gets_the_recorded_answer(stream, cancer_package, cancer_splits):
    """A worker runs an id once; a resubmit (a new message, same id) gets the answer
    recorded the first time, on its own reply list. One id twice in one client is refused:
    the second future would orphan the first."""
    running = RunningWorker(_config(stream, [f"cancer={cancer_package}"]))
    row = cancer_splits.test.X.iloc[:1].to_dict("records")
    try:
        with QueueClient(REDIS, stream=stream, model="cancer", timeout=30) as client:
            first = client.submit(row, request_id="same-id").result(30)
        with QueueClient(REDIS, stream=stream, model="cancer", timeout=30) as other:
            again = other.submit(row, request_id="same-id")
            assert again.result(30) == first
    finally:
        processed = running.stop()
    assert processed == 1
    assert [x["id"] for x in _results(stream)] == ["same-id"]
    with QueueClient(REDIS, stream=f"{stream}:unread", model="cancer", timeout=30) as client:
        client.submit(row, request_id="twice")
        with pytest.raises(InvalidInputError, match="'twice' is already waiting"):
            client.submit(row, request_id="twice")
        with pytest.raises(InvalidInputError, match="'x' is already waiting"):
            client._queue([(row, "x"), (row, "x")], None, None)


def test_a_reply_key_of_another_type_and_the_dead_letters_length(stream, cancer_package):
    """A reply_to naming a string key records the outcome (no reply, no half-written
    script); the dead-letter stream is trimmed to about --dead-maxlen."""
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    wrong = f"{stream}:reply:a-string"
    r.set(wrong, "not a list")
    request = {"id": "to-a-string", "model": "cancer", "inputs": [{}], "reply_to": wrong}
    r.xadd(stream, {"request": json.dumps(request)})
    pipe = r.pipeline()
    for i in range(300):
        pipe.xadd(stream, {"not-a-request": str(i)})
    pipe.execute()
    running = RunningWorker(_config(stream, [f"cancer={cancer_package}"], dead_maxlen=10))
    try:
        deadline = time.monotonic() + 30
        while r.xlen(stream):
            assert time.monotonic() < deadline, "the messages were not all acknowledged"
            time.sleep(0.05)
    finally:
        running.stop()
    (result,) = _results(stream)
    assert result["id"] == "to-a-string" and result["ok"] == "0"
    assert r.get(wrong) == "not a list"
    assert 10 <= r.xlen(Keys(stream).dead) < 301  # trimmed (whole nodes: about, not exact)
    r.close()


def test_a_message_over_the_body_limit_is_dead_lettered_naming_the_limit(stream, cancer_package):
    """Checked before the JSON is read: the dead letter keeps a cut of it, not all of it."""
    limits = Limits(max_body_bytes=10_000)
    running = RunningWorker(_config(stream, [f"cancer={cancer_package}"], limits=limits))
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    huge = {"id": "huge", "model": "cancer", "inputs": ["A" * 1000] * 20}
    try:
        r.xadd(stream, {"request": json.dumps(huge)})
        deadline = time.monotonic() + 30
        while not r.xlen(Keys(stream).dead):
            assert time.monotonic() < deadline, "not dead-lettered"
            time.sleep(0.05)
    finally:
        running.stop()
        r.close()
    (dead,) = _dead(stream)
    assert "the limit is 10,000 (--max-body-mb 0.00953674)" in dead["error"]
    size = len(json.dumps(huge)) + len("request")  # every field counts, names too
    assert len(dead["request"]) < 1100 and f"(cut: {size:,} characters)" in dead["request"]


def test_a_slow_healthy_message_is_renewed_without_counting_a_delivery(
    stream, cancer_package, cancer_splits, monkeypatch
):
    """A message in work longer than the visibility timeout is renewed by its live worker
    (XCLAIM JUSTID), which counts no delivery: no worker can dead-letter it for that."""
    import tuneserve.queueing.worker as worker_module

    real = worker_module.predict_json

    async def slow(*args: Any) -> Any:
        await asyncio.sleep(1.5)
        return await real(*args)

    monkeypatch.setattr(worker_module, "predict_json", slow)
    config = _config(stream, [f"cancer={cancer_package}"], visibility_timeout=0.3)
    running = RunningWorker(config)
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    row = cancer_splits.test.X.iloc[:1].to_dict("records")
    most = 0
    try:
        with QueueClient(REDIS, stream=stream, model="cancer", timeout=30) as client:
            future = client.submit(row)
            while not future.done():
                for p in r.xpending_range(stream, "tuneserve-workers", "-", "+", 10):
                    most = max(most, p["times_delivered"])
                time.sleep(0.05)
            assert future.result()["predictions"]
    finally:
        running.stop()
        r.close()
    assert most == 1


def test_a_message_finished_while_redis_is_read_only_waits_and_is_recorded_once(
    stream, cancer_package, cancer_splits, tmp_path, monkeypatch, caplog
):
    """The finish script refused with READONLY (a failover under the worker) is retried with
    the back-off, like a lost connection: no traceback, no second delivery."""
    import tuneserve.queueing.worker as worker_module

    real = worker_module.predict_json

    async def slow(*args: Any) -> Any:
        await asyncio.sleep(0.5)
        return await real(*args)

    monkeypatch.setattr(worker_module, "predict_json", slow)
    server, url = _private_redis(tmp_path)
    config = _config(stream, [f"cancer={cancer_package}"], visibility_timeout=5)
    config.url = url
    running = RunningWorker(config)
    r = redis.Redis.from_url(url, decode_responses=True)
    row = cancer_splits.test.X.iloc[:1].to_dict("records")
    try:
        with QueueClient(url, stream=stream, model="cancer", timeout=30) as client:
            future = client.submit(row)
            deadline = time.monotonic() + 30
            while not r.xpending(stream, "tuneserve-workers")["pending"]:  # in work
                assert time.monotonic() < deadline, "never read"
                time.sleep(0.02)
            r.replicaof("127.0.0.1", 1)
            time.sleep(1.0)  # the prediction ends and its finish script is refused
            r.replicaof("NO", "ONE")
            assert future.result(30)["predictions"]
            (entry,) = _results_at(r, stream)
            assert entry["ok"] == "1"
    finally:
        running.stop()
        r.close()
        server.terminate()
        server.wait(30)
    assert "failed unexpectedly" not in caplog.text
    assert not re.search(r"queue_retried_total\{.*\} [1-9]", running.metrics())


def _results_at(r: redis.Redis, stream: str) -> list[dict[str, str]]:
    return [fields for _, fields in r.xrange(Keys(stream).results)]


def test_the_drain_ends_the_helper_loops_without_cancelling_a_redis_call(
    stream, cancer_package, monkeypatch
):
    """redis-py (8.1) can swallow a cancellation that lands inside a command; a claim loop
    stopped by ``cancel()`` then ran on and the drain waited for it forever (the flaky
    "the worker did not drain"). Here renewal swallows a cancellation as redis-py does."""
    inside = threading.Event()

    async def renew(self: Worker) -> None:
        inside.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1.0)

    monkeypatch.setattr(Worker, "renew", renew)
    config = _config(stream, [f"cancer={cancer_package}"], visibility_timeout=0.1, block_ms=50)
    running = RunningWorker(config)
    assert inside.wait(30), "the claim loop never renewed"
    assert running.stop(within=30) == 0


def test_a_draining_worker_keeps_renewing_what_it_has_in_work(
    stream, cancer_package, cancer_splits, monkeypatch
):
    """A drain that lasts longer than the visibility timeout must not let other workers
    claim (and compute again) the messages it is finishing: it stops claiming, not renewing."""
    import tuneserve.queueing.worker as worker_module

    real, real_renew = worker_module.predict_json, Worker.renew
    started, renewed_while_draining = threading.Event(), []

    async def slow(*args: Any) -> Any:
        started.set()
        await asyncio.sleep(1.5)
        return await real(*args)

    async def renew(self: Worker) -> None:
        if self._draining and self._inflight:
            renewed_while_draining.append(list(self._inflight))
        await real_renew(self)

    monkeypatch.setattr(worker_module, "predict_json", slow)
    monkeypatch.setattr(Worker, "renew", renew)
    config = _config(stream, [f"cancer={cancer_package}"], visibility_timeout=0.3, block_ms=50)
    running = RunningWorker(config)
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    r.xadd(stream, encode_request("cancer", cancer_splits.test.X.iloc[:1].to_dict("records"))[1])
    try:
        assert started.wait(30), "never read"
    finally:
        assert running.stop() == 1
    assert renewed_while_draining
    (result,) = _results(stream)
    assert result["ok"] == "1"
    r.close()


def test_a_ttl_past_the_result_ttl_is_cut_to_it(stream, cancer_package, cancer_splits):
    """A ttl Redis cannot expire with (10**16 s) used to break the finish script after its
    first writes: no ack, and every resubmit failed the same way. The worker cuts a ttl to
    --result-ttl, and the script checks its numbers before it writes anything."""
    from tuneserve.queueing.outcome import FINISH_SCRIPT, Outcome, Retention, finish_call

    keys = Keys(stream)
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    script = r.register_script(FINISH_SCRIPT)
    outcome = Outcome("direct", "m", reply_to=keys.reply("d"), reply_ttl=10**16)
    names, args = finish_call(keys, Retention("g", 60, 10, 10), "1-1", {}, outcome, 1)
    with pytest.raises(redis.ResponseError, match="not a whole number from 1 to 1e9"):
        script(keys=names, args=args)
    assert not r.exists(keys.done("direct"), keys.results, keys.reply("d"))

    running = RunningWorker(_config(stream, [f"cancer={cancer_package}"], result_ttl=600))
    rows = cancer_splits.test.X.iloc[:1].to_dict("records")
    try:
        r.xadd(stream, encode_request("cancer", rows, reply_to=keys.reply("c"), ttl=10**16)[1])
        deadline = time.monotonic() + 30
        while not r.exists(keys.reply("c")):
            assert time.monotonic() < deadline, "no reply"
            time.sleep(0.02)
        assert 0 < r.ttl(keys.reply("c")) <= 600
    finally:
        running.stop()
    assert [x["ok"] for x in _results(stream)] == ["1"]
    assert _dead(stream) == [] and r.xlen(stream) == 0
    r.close()


def test_a_message_finished_while_redis_is_out_of_memory_waits_and_is_recorded_once(
    stream, cancer_package, cancer_splits, tmp_path, monkeypatch, caplog
):
    """OOM (maxmemory reached, noeviction) is Redis unable to write *now*: the finish script
    waits with the back-off, costing no delivery; it used to count as a permanent error,
    and a valid request ended dead-lettered (here --max-attempts 1 would do it at once)."""
    import tuneserve.queueing.worker as worker_module

    real = worker_module.predict_json
    started = threading.Event()

    async def slow(*args: Any) -> Any:
        started.set()
        await asyncio.sleep(0.5)
        return await real(*args)

    monkeypatch.setattr(worker_module, "predict_json", slow)
    server, url = _private_redis(tmp_path, "--maxmemory-policy", "noeviction")
    config = _config(stream, [f"cancer={cancer_package}"], visibility_timeout=60, max_attempts=1)
    config.url = url
    running = RunningWorker(config)
    r = redis.Redis.from_url(url, decode_responses=True)
    row = cancer_splits.test.X.iloc[:1].to_dict("records")
    try:
        with QueueClient(url, stream=stream, model="cancer", timeout=30) as client:
            future = client.submit(row)
            assert started.wait(30), "never read"
            r.config_set("maxmemory", 1)  # far below what is used: every write refused
            errors = f'tuneserve_queue_redis_errors_total{{stream="{stream}"}}'
            deadline = time.monotonic() + 30
            while f"{errors} 0.0" in running.metrics():  # the finish script refused, retried
                assert time.monotonic() < deadline, "the finish script never met OOM"
                time.sleep(0.05)
            r.config_set("maxmemory", 0)
            assert future.result(30)["predictions"]
        assert [x["ok"] for x in _results_at(r, stream)] == ["1"]
    finally:
        running.stop()
        r.close()
        server.terminate()
        server.wait(30)
    assert "failed unexpectedly" not in caplog.text


def test_a_message_over_max_items_is_refused_without_waiting_for_room(
    stream, cancer_package, cancer_splits, monkeypatch
):
    """The --max-items check comes before the wait for room in the batcher: a message that
    will be refused anyway does not queue behind slow ones (nor hold others back)."""
    import tuneserve.queueing.worker as worker_module

    real = worker_module.predict_json

    async def slow(*args: Any) -> Any:
        await asyncio.sleep(2.0)
        return await real(*args)

    monkeypatch.setattr(worker_module, "predict_json", slow)
    config = _config(stream, [f"cancer={cancer_package}"], limits=Limits(max_items=4))
    config.batch.max_queue = 8
    running = RunningWorker(config)
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    rows = cancer_splits.test.X.iloc[:5].to_dict("records")
    try:
        with QueueClient(REDIS, stream=stream, model="cancer", timeout=60) as client:
            slow_ones = client.submit_many([rows[:4], rows[:4]])  # the gate is full
            with pytest.raises(InvalidInputError, match="5 inputs in one request; the limit"):
                client.submit(rows).result(60)
            assert not any(f.done() for f in slow_ones)  # refused while they still ran
            assert all(f.result(60)["predictions"] for f in slow_ones)
    finally:
        running.stop()
        r.close()


def test_renewal_leaves_a_message_another_worker_claimed(
    stream, cancer_package, cancer_splits, monkeypatch
):
    """A plain XCLAIM (min-idle 0) renewal took back a message another worker had claimed
    meanwhile, and both ran it; now a worker renews only what is still pending under its
    own name. The owner is read right after the worker's first renewal since the steal."""
    import tuneserve.queueing.worker as worker_module

    real, real_renew = worker_module.predict_json, Worker.renew
    started, stolen, owners = threading.Event(), threading.Event(), []
    r = redis.Redis.from_url(REDIS, decode_responses=True)

    async def slow(*args: Any) -> Any:
        started.set()
        await asyncio.sleep(2.0)
        return await real(*args)

    async def renew(self: Worker) -> None:
        await real_renew(self)
        if stolen.is_set() and not owners:  # before this round's claim
            rows = r.xpending_range(stream, "tuneserve-workers", "-", "+", 10)
            owners.append(rows[0]["consumer"] if rows else None)

    monkeypatch.setattr(worker_module, "predict_json", slow)
    monkeypatch.setattr(Worker, "renew", renew)
    config = _config(stream, [f"cancer={cancer_package}"], visibility_timeout=0.3)
    running = RunningWorker(config)
    rows = cancer_splits.test.X.iloc[:1].to_dict("records")
    entry = r.xadd(stream, encode_request("cancer", rows)[1])
    try:
        assert started.wait(30), "never read"
        r.xclaim(stream, "tuneserve-workers", "thief", 0, [entry], justid=True)
        stolen.set()
        deadline = time.monotonic() + 30
        while not owners:
            assert time.monotonic() < deadline, "no renewal"
            time.sleep(0.02)
        assert owners == ["thief"]
    finally:
        running.stop()
        r.close()


def test_an_error_reply_waiting_cannot_cure_stops_the_worker_naming_it(stream, cancer_package):
    """The stream's key replaced by a string (WRONGTYPE; NOPERM or an unknown command are
    alike) used to be retried forever with the back-off; the worker now stops naming it."""
    config = _config(stream, [f"cancer={cancer_package}"], block_ms=50)
    state = load_state(config)
    r = redis.Redis.from_url(REDIS)

    async def main() -> None:
        client = await connect(REDIS)
        worker = Worker(state, client, config.settings)
        running = asyncio.create_task(worker.run(asyncio.Event()))
        await asyncio.sleep(0.3)  # reading
        r.delete(stream)
        r.set(stream, "not a stream")
        try:
            await running
        finally:
            await client.aclose()

    # WRONGTYPE from XREADGROUP, or (the read blocked as the key went: UNBLOCKED) from
    # the group's re-creation, which names the key's type
    wrong = r"(ResponseError: WRONGTYPE|InvalidInputError: --stream .* of type string)"
    with pytest.raises(RuntimeError, match=rf"the worker's read loop ended \({wrong}"):
        asyncio.run(asyncio.wait_for(main(), 30))
    r.close()


def test_a_reply_the_client_cannot_read_fails_its_future_and_a_refused_submit_fails_at_once(
    stream,
):
    """A reply with a status that is no integer, or a body that is no object, used to leave
    its future waiting forever (its entry was dropped before the reply was read); a message
    Redis refuses to queue left its future registered until the timeout."""
    with QueueClient(REDIS, stream=stream, model="m", timeout=60) as client:
        odd_status, odd_body = client.submit_many([["a"], ["b"]])
        r = redis.Redis.from_url(REDIS)
        for future, body in ((odd_status, {"status": "x"}), (odd_body, [1])):
            reply = {"id": future.request_id, "ok": False, "body": body}
            r.rpush(client.reply_key, json.dumps(reply))
        for future in (odd_status, odd_body):
            with pytest.raises(UnavailableError, match=r"the reply to request .* cannot be read"):
                future.result(10)
        r.delete(stream)
        r.set(stream, "not a stream")
        refused = client.submit(["c"])
        assert refused.done()
        with pytest.raises(UnavailableError, match=r"could not queue request .*WRONGTYPE"):
            refused.result(0)
        assert refused.request_id not in client._waiting
        r.close()


def test_the_done_marker_keeps_a_results_entry_id_not_the_reply(
    stream, cancer_package, cancer_splits
):
    """The done marker lives for --result-ttl outside --results-maxlen, so it must not hold
    the reply: it holds the results entry's id, and a resubmit's answer is rebuilt from
    that entry; once the results were trimmed past it, the resubmit learns it was answered."""
    running = RunningWorker(_config(stream, [f"cancer={cancer_package}"]))
    row = cancer_splits.test.X.iloc[:1].to_dict("records")
    keys = Keys(stream)
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    try:
        with QueueClient(REDIS, stream=stream, model="cancer", timeout=30) as client:
            first = client.submit(row, request_id="kept").result(30)
            marker = r.get(keys.done("kept"))
            assert marker and "predictions" not in marker
            (at,) = [i for i, f in r.xrange(keys.results) if f["id"] == "kept"]
            assert marker.endswith(f" {at}")
            assert client.submit(row, request_id="kept").result(30) == first
            r.delete(keys.results)
            with pytest.raises(UnavailableError, match="request kept was answered already"):
                client.submit(row, request_id="kept").result(30)
    finally:
        assert running.stop() == 1
        r.close()


def test_sender_values_in_errors_are_cut_and_every_field_counts_towards_the_body_limit(
    stream, cancer_package
):
    """An id or model of 100,000 characters was repeated whole in the error text, stored
    about four times; and --max-body-mb counted only the request field."""
    limits = Limits(max_body_bytes=50_000)
    running = RunningWorker(_config(stream, [f"cancer={cancer_package}"], limits=limits))
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    long_id, long_model = "i" * 20_000, "m" * 20_000
    try:
        r.xadd(stream, {"request": json.dumps({"id": long_id, "inputs": [1]})})
        r.xadd(stream, {"request": json.dumps({"id": "m", "model": long_model, "inputs": [1]})})
        r.xadd(stream, {"request": json.dumps({"id": "pad", "model": "cancer"}), "x": "y" * 60_000})
        deadline = time.monotonic() + 30
        while r.xlen(Keys(stream).dead) < 3:
            assert time.monotonic() < deadline, _dead(stream)
            time.sleep(0.05)
    finally:
        running.stop()
        r.close()
    by_id = {d["id"]: d["error"] for d in _dead(stream)}
    assert "names no model" in by_id[long_id] and len(by_id[long_id]) < 500
    assert "no model named 'mmm" in by_id["m"] and len(by_id["m"]) < 1000
    assert "the message is 60," in by_id[""] and "(all its fields)" in by_id[""]
    bodies = [json.loads(x["body"])["error"] for x in _results(stream)]
    assert all(len(b) < 1000 for b in bodies)


def test_a_full_batcher_met_after_the_gate_waits_in_the_worker_not_in_redis(
    stream, cancer_package, cancer_splits, monkeypatch
):
    """The batcher still counts timed-out requests the gate already freed, so a
    QueueFullError can come after the gate; it is the worker's own overload: retried
    locally, costing no delivery (with --max-attempts 1 it used to mean a dead letter)."""
    import tuneserve.queueing.worker as worker_module
    from tuneserve.serving.batcher import QueueFullError

    real, calls = worker_module.predict_json, []

    async def full_once(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise QueueFullError("the queue holds 8 items (limit 8); retry shortly")
        return await real(*args)

    monkeypatch.setattr(worker_module, "predict_json", full_once)
    config = _config(stream, [f"cancer={cancer_package}"], max_attempts=1, visibility_timeout=60)
    running = RunningWorker(config)
    try:
        with QueueClient(REDIS, stream=stream, model="cancer", timeout=10) as client:
            rows = cancer_splits.test.X.iloc[:1].to_dict("records")
            assert client.submit(rows).result(30)["predictions"]
    finally:
        running.stop()
    assert len(calls) == 2
    r = redis.Redis.from_url(REDIS)
    assert not r.hlen(Keys(stream).failures)
    r.close()

"""Hostile requests against the server (issue 13): a bad item fails only its own request,
bad input never gets a 5xx, and a chunked body over the limit is refused while it streams.

In-process through ``httpx2.ASGITransport`` with concurrent requests (``asyncio.gather``),
and over real HTTP (uvicorn) for the chunked body."""

from __future__ import annotations

import asyncio
import json
import select
import socket
from typing import Any

import httpx2
import numpy as np
import pytest
from _live_server import LiveServer

from tuneserve.serving import BatchSettings, Limits, ModelSpec, Repository, create_app


@pytest.fixture(scope="module")
def repository(text_package, cancer_package, digits_package):
    repository = Repository(
        [
            ModelSpec.parse(f"reviews={text_package}"),
            ModelSpec.parse(f"cancer={cancer_package}"),
            ModelSpec.parse(f"digits={digits_package}"),
        ],
        BatchSettings(max_batch_size=64, max_queue_delay_ms=20),
    )
    repository.load_all()
    return repository


def _client(app) -> httpx2.AsyncClient:
    # raise_app_exceptions=False: a 500 is an answer to count, not a crash of the test
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx2.AsyncClient(transport=transport, base_url="http://test")


def _text_tensor(value: str) -> bytes:
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [value]}]}
    return json.dumps(body).encode()


# ---- (1) a bad item fails only its own request --------------------------------------

HOSTILE = [
    pytest.param("/v1/models/reviews/predict", {"inputs": ["\ud800"]}, id="surrogate"),
    pytest.param("/v1/models/reviews/predict", {"inputs": ["fine", "x\udfff"]}, id="surrogate-2nd"),
    pytest.param("/v1/models/reviews/predict", {"inputs": [["a", "list"]]}, id="list"),
    pytest.param("/v1/models/reviews/predict", {"inputs": [None]}, id="null"),
    pytest.param("/v2/models/reviews/infer", _text_tensor("\ud800"), id="surrogate-v2"),
    pytest.param("/v1/models/cancer/predict", {"inputs": [[[1, 2]] * 30]}, id="list-cells"),
]


@pytest.mark.parametrize(("hostile_path", "hostile_body"), HOSTILE)
def test_a_hostile_request_fails_alone_among_good_concurrent_ones(
    repository, text_model, cancer_splits, hostile_path, hostile_body
):
    _, _, texts, _ = text_model
    rows = cancer_splits.test.X.iloc[:2].to_dict("records")
    good: list[tuple[str, Any]] = [
        ("/v1/models/reviews/predict", {"inputs": [texts[i % len(texts)]]}) for i in range(40)
    ] + [("/v1/models/cancer/predict", {"inputs": rows})] * 10
    bad = [(hostile_path, hostile_body)] * 5
    calls = good[:10] + bad + good[10:]  # the hostile ones in the middle of the burst
    stats = repository.get("reviews").batcher.stats
    batches_before = stats.batches

    async def scenario() -> list[httpx2.Response]:
        async with _client(create_app(repository)) as client:

            async def post(path: str, body: Any) -> httpx2.Response:
                content = body if isinstance(body, bytes) else json.dumps(body).encode()
                return await client.post(path, content=content)

            return await asyncio.gather(*(post(p, b) for p, b in calls))

    replies = asyncio.run(scenario())
    good_replies = replies[:10] + replies[15:]
    failed = [(r.status_code, r.text[:200]) for r in good_replies if r.status_code != 200]
    assert not failed, f"{len(failed)} of {len(good_replies)} good requests failed: {failed[:3]}"
    for reply in replies[10:15]:
        assert 400 <= reply.status_code < 500, reply.text[:300]
        assert set(reply.json()) == {"error"}
    assert stats.batches - batches_before < 40  # the good requests really shared batches


def test_a_request_that_breaks_its_batch_is_retried_alone_and_counted(repository, text_model):
    """A failure the server cannot blame on validation (here a run that breaks on one
    poison text) fails that request alone with a JSON 500, counted in the metrics."""
    _, _, texts, _ = text_model
    batcher = repository.get("reviews").batcher
    run = batcher.run

    def poisoned(items: Any) -> np.ndarray:
        if any(item == "poison" for item in items):
            raise RuntimeError("the runtime broke")
        return run(items)

    batcher.run = poisoned
    try:

        async def scenario() -> list[httpx2.Response]:
            async with _client(create_app(repository)) as client:
                bodies = [{"inputs": [texts[i % len(texts)]]} for i in range(30)]
                bodies.insert(7, {"inputs": ["poison"]})
                replies = await asyncio.gather(
                    *(client.post("/v1/models/reviews/predict", json=b) for b in bodies)
                )
                return [*replies, await client.get("/metrics")]

        *replies, metrics = asyncio.run(scenario())
    finally:
        batcher.run = run
    assert 'tuneserve_requests_total{api="v1",code="500",model="reviews"} 1.0' in metrics.text
    codes = [r.status_code for r in replies]
    assert codes[7] == 500 and codes[:7] + codes[8:] == [200] * 30, codes
    assert set(replies[7].json()) == {"error"}


# ---- (2) never a 5xx for bad input --------------------------------------------------


def _deep(depth: int) -> bytes:
    return b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"


def _deep_oip(depth: int) -> bytes:
    data = "[" * depth + '"x"' + "]" * depth
    return (
        '{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ' + data + "}]}"
    ).encode()


BAD_INPUT = [
    pytest.param("/v1/models/reviews/predict", _deep(100_000), "nested", id="deep-json-v1"),
    pytest.param("/v2/models/reviews/infer", _deep(100_000), "nested", id="deep-json-v2"),
    pytest.param("/v2/models/reviews/infer", _deep_oip(900), "nested", id="deep-oip-data"),
    pytest.param(
        "/v2/models/reviews/infer",
        json.dumps(
            {"inputs": [{"name": "text", "shape": [2**32, 2**32], "datatype": "BYTES", "data": []}]}
        ).encode(),
        "shape",
        id="huge-shape",
    ),
    pytest.param(
        "/v2/models/reviews/infer",
        json.dumps(
            {
                "inputs": [
                    {"name": "text", "shape": [0, 2**32, 2**32], "datatype": "FP32", "data": []}
                ]
            }
        ).encode(),
        "shape",
        id="huge-empty-shape",
    ),
    pytest.param(
        "/v2/models/reviews/infer",
        json.dumps(
            {
                "inputs": [
                    {"name": "text", "shape": [0, *[2**31 - 1] * 3], "datatype": "FP32", "data": []}
                ]
            }
        ).encode(),
        "shape",
        id="empty-shape-past-numpy",
    ),
    pytest.param(
        "/v2/models/reviews/infer",
        json.dumps(
            {
                "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}],
                "outputs": [{"name": "label", "parameters": [1]}],
            }
        ).encode(),
        "parameters",
        id="output-parameters-not-an-object",
    ),
    pytest.param(
        "/v1/models/cancer/predict",
        json.dumps({"inputs": [{"mean radius": [1, 2]}]}).encode(),
        "mean radius",
        id="list-valued-table-cell",
    ),
    pytest.param(
        "/v1/models/cancer/predict",
        json.dumps({"inputs": [[[1, 2]] * 30]}).encode(),
        "row 0",
        id="list-valued-table-cell-in-a-list-row",
    ),
    pytest.param(
        "/v2/models/reviews/infer", _text_tensor("\ud800"), "surrogate", id="surrogate-bytes"
    ),
    pytest.param(
        "/v1/models/digits/predict",
        b'{"inputs": [[[1e300, 0], [0, 0]]]}',
        "finite 32-bit",
        id="pixel-past-float32",
    ),
    pytest.param(
        "/v1/models/reviews/predict",
        json.dumps({"inputs": ["\ud800"]}).encode(),
        "surrogate",
        id="surrogate-v1",
    ),
]


@pytest.mark.parametrize(("path", "body", "message"), BAD_INPUT)
def test_bad_input_gets_a_4xx_json_error(repository, path, body, message):
    async def call() -> httpx2.Response:
        async with _client(create_app(repository, Limits(max_body_bytes=10_000_000))) as client:
            return await client.post(path, content=body)

    reply = asyncio.run(call())
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.text[:300])
    payload = reply.json()
    assert set(payload) == {"error"} and message in payload["error"], payload


def test_a_non_ascii_api_key_gets_401_not_500(repository):
    app = create_app(repository, api_keys={"secret-key-1": "predict"})

    async def call(key: bytes) -> httpx2.Response:
        async with _client(app) as client:
            return await client.post(
                "/v1/models/reviews/predict",
                json={"inputs": ["hi"]},
                headers=[(b"authorization", b"Bearer " + key)],
            )

    reply = asyncio.run(call("clé-secrète".encode()))
    assert reply.status_code == 401, reply.text[:300]
    assert set(reply.json()) == {"error"}
    assert asyncio.run(call(b"secret-key-1")).status_code == 200


# ---- (3) a chunked body over the limit ----------------------------------------------


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(repository):
    """1 MB limit; the client streams up to 256 MB in 64 KB chunks, without a
    Content-Length, and stops as soon as an answer comes. The answer is 413, and it comes
    after a few MB at most (what the socket buffers hold), not after the whole body."""
    limit, chunk, total = 1_000_000, b"x" * 65_536, 256 * 1024 * 1024
    server = LiveServer(create_app(repository, Limits(max_body_bytes=limit)))
    sent = 0
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/models/reviews/predict HTTP/1.1\r\nHost: test\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            while sent < total:
                if select.select([sock], [], [], 0)[0]:  # the server answered: stop sending
                    break
                try:
                    sock.sendall(framed)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(chunk)
            else:
                sock.sendall(b"0\r\n\r\n")  # all sent, no answer yet: end the body
            sock.settimeout(30)
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                data = sock.recv(65_536)
                if not data:
                    break
                reply += data
    finally:
        server.stop()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b"over the limit of 1000000" in body, body[:300]
    assert sent < 32 * 1024 * 1024, f"the client sent {sent} bytes before the server answered"

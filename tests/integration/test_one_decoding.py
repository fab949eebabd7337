"""REST, gRPC and the queue share one decoding of inputs per modality and one encoding of
outputs (``serving/infer.py``): the same bad input gets the same message whichever way it
came, and the same good input the same answer. A fix in one is a fix in all three."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import redis
from _live_server import LiveServer

from tuneserve.client import QueueClient
from tuneserve.exceptions import InvalidInputError
from tuneserve.serving import ModelSpec, Repository, create_app

REDIS = "redis://127.0.0.1:6379/0"
CLI = [sys.executable, "-m", "tuneserve.cli.main"]


@pytest.fixture(scope="module")
def three_ways(digits_package, cancer_package, text_package, tmp_path_factory):
    """One server (REST and gRPC) and one queue worker, serving the same three packages."""
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"this test needs Redis at {REDIS} and it is down: {exc}")
    specs = [f"digits={digits_package}", f"cancer={cancer_package}", f"reviews={text_package}"]
    repository = Repository([ModelSpec.parse(s) for s in specs])
    repository.load_all()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        grpc_port = sock.getsockname()[1]
    server = LiveServer(create_app(repository, grpc_address=("127.0.0.1", grpc_port)))
    stream = f"test:decoding:{uuid.uuid4().hex[:10]}"
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    args = [a for s in specs for a in ("--model", s)]
    with log.open("w") as out:
        worker = subprocess.Popen(
            [*CLI, "worker", *args, "--queue", REDIS, "--stream", stream, "--watch", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while " of group " not in log.read_text():
        assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    client = QueueClient(REDIS, stream=stream, timeout=60)
    yield server, f"127.0.0.1:{grpc_port}", client
    client.close()
    worker.terminate()
    assert worker.wait(60) == 0, log.read_text()[-2000:]
    server.stop()
    r = redis.Redis.from_url(REDIS)
    keys = list(r.scan_iter(f"{stream}*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


def _rest(server: LiveServer, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://{server.url}{path}", json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


SIMPLE_BAD = [
    ("reviews", [123], "text 0 is a int, not a string"),
    ("digits", ["not base64 !"], "inputs[0] is a string but not base64"),
    ("digits", [[[1, 2], [3]]], "not a rectangular array of numbers"),
    ("cancer", [{"mean radius": [1, 2]}], "holds a list"),
]


@pytest.mark.parametrize(("model", "inputs", "message"), SIMPLE_BAD)
def test_simple_json_over_rest_and_the_queue_gets_one_message(three_ways, model, inputs, message):
    server, _, client = three_ways
    status, body = _rest(server, f"/v1/models/{model}/predict", {"inputs": inputs})
    assert status == 400 and message in body["error"], body
    with pytest.raises(InvalidInputError) as caught:
        client.submit(inputs, model=model).result()
    assert str(caught.value) == body["error"]


def test_one_good_input_gets_one_answer_over_rest_and_the_queue(three_ways, text_model):
    server, _, client = three_ways
    texts = text_model[2][:3]
    status, rest = _rest(server, "/v1/models/reviews/predict", {"inputs": texts})
    assert status == 200
    queued = client.submit(texts, model="reviews").result()
    assert queued["model"] == rest["model"] and queued["version"] == rest["version"]
    assert [p["label"] for p in queued["predictions"]] == [p["label"] for p in rest["predictions"]]
    for q, r in zip(queued["predictions"], rest["predictions"], strict=True):
        assert q["probabilities"] == pytest.approx(r["probabilities"], abs=1e-6)


def _tensor(name: str, datatype: str, values: np.ndarray) -> dict[str, Any]:
    data = [v.decode() for v in values.reshape(-1)] if datatype == "BYTES" else values.tolist()
    return {"name": name, "datatype": datatype, "shape": list(values.shape), "data": data}


TENSOR_BAD = [
    ("reviews", [("text", "FP32", np.ones(2, np.float32))], "takes a BYTES tensor"),
    ("digits", [("image", "FP32", np.ones((2, 8), np.float32))], "must be [n, h, w]"),
    ("cancer", [("mean radius", "FP64", np.ones(2))], "missing"),
    ("cancer", [("input", "INT32", np.ones((2, 30), np.int32))], "must be FP32 or FP64"),
    ("digits", [("image", "BYTES", np.array([b"x", b"y"], object))], None),
]


@pytest.mark.parametrize(("model", "tensors", "message"), TENSOR_BAD)
def test_tensors_over_rest_and_grpc_get_one_message(three_ways, model, tensors, message):
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    server, address, _ = three_ways
    body = {"inputs": [_tensor(*t) for t in tensors]}
    status, reply = _rest(server, f"/v2/models/{model}/infer", body)
    assert status == 400, reply
    assert message is None or message in reply["error"], reply
    client = triton.InferenceServerClient(address)
    inputs = []
    for name, datatype, values in tensors:
        tensor = triton.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.infer(model, inputs)
    finally:
        client.close()
    assert caught.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert caught.value.message() == reply["error"]
    assert " at 0x" not in reply["error"]  # no object's repr: the same input, the same text


def test_the_paths_are_one_module():
    """Each API's route calls the shared path, and no API decodes on its own."""
    src = Path(__file__).resolve().parents[2] / "src" / "tuneserve"
    for module, call in [
        ("serving/routes_simple.py", "predict_json("),
        ("queueing/worker.py", "predict_json("),
        ("serving/routes_oip.py", "infer_tensors("),
        ("serving/grpc_service.py", "infer_tensors("),
    ]:
        text = (src / module).read_text()
        assert call in text, (module, call)
        assert "decode.from_" not in text, f"{module} decodes inputs itself"

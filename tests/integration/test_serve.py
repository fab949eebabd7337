"""The model server over real HTTP (uvicorn), called with real clients: urllib for simple
JSON, ``tritonclient[http]`` and the ``kserve`` REST client for the Open Inference Protocol,
with binary data on and off."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _live_server import LiveServer

from tuneserve.runtime import Predictor
from tuneserve.serving import BatchSettings, Limits, ModelSpec, Repository, create_app


def _start(specs, settings=None, limits=None) -> tuple[LiveServer, Repository]:
    repository = Repository([ModelSpec.parse(s) for s in specs], settings)
    repository.load_all()
    return LiveServer(create_app(repository, limits)), repository


@pytest.fixture(scope="module")
def served(digits_package, cancer_package, text_package):
    server, repository = _start(
        [f"digits={digits_package}", f"cancer={cancer_package}", f"reviews={text_package}"],
        BatchSettings(max_batch_size=64, max_queue_delay_ms=20),
        Limits(max_body_bytes=2_000_000, max_items=300, timeout_s=30),
    )
    yield server, repository
    server.stop()


def _post(server, path: str, body, headers=None) -> tuple[int, dict, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://{server.url}{path}", data=data, headers=headers or {}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as reply:
            return reply.status, json.loads(reply.read()), dict(reply.headers)
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        exc.close()
        return exc.code, json.loads(payload), dict(exc.headers)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((image[:, :, 0] * 255).round().astype(np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()


def test_simple_json_predicts_like_the_runtime(served, digits_splits, cancer_splits, text_model):
    server, _ = served
    images = digits_splits.test.X[:5]
    status, body, _ = _post(
        server,
        "/v1/models/digits/predict",
        {
            "inputs": [base64.b64encode(_png(x)).decode() for x in images[:3]]
            + [x[:, :, 0].tolist() for x in images[3:]]
        },
    )
    assert status == 200, body
    assert body["model"] == "digits" and body["version"] == "1"
    direct = Predictor(served[1].get("digits").predictor.package).predict(
        [_png(x) for x in images[:3]] + [x[:, :, 0] for x in images[3:]]
    )
    assert [p["label"] for p in body["predictions"]] == [p.label for p in direct]

    rows = cancer_splits.test.X.iloc[:4].to_dict("records")
    status, body, _ = _post(server, "/v1/models/cancer/predict", {"inputs": rows})
    assert status == 200
    want = Predictor(served[1].get("cancer").predictor.package).predict_proba(rows)
    got = [
        [p["probabilities"][k] for k in body["predictions"][0]["probabilities"]]
        for p in body["predictions"]
    ]
    np.testing.assert_allclose(got, want, atol=1e-6)

    _, _, texts, _ = text_model
    status, body, _ = _post(server, "/v1/models/reviews/predict", {"inputs": texts})
    assert status == 200 and len(body["predictions"]) == len(texts)


@pytest.mark.parametrize("binary", [False, True])
def test_open_inference_protocol_with_tritonclient(served, digits_splits, cancer_splits, binary):
    import tritonclient.http as triton

    server, repository = served
    client = triton.InferenceServerClient(server.url)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("digits")
        meta = client.get_model_metadata("digits")
        assert meta["inputs"][0] == {"name": "image", "datatype": "BYTES", "shape": [-1]}

        images = digits_splits.test.X[:6]
        if binary:  # encoded PNG files as BYTES (binary only: PNG is not UTF-8)
            raw = [_png(x) for x in images]
            tensor = triton.InferInput("image", [len(images)], "BYTES")
            tensor.set_data_from_numpy(np.array(raw, dtype=object), binary_data=True)
        else:  # pixels as a UINT8 tensor in JSON
            pixels = (images_array := np.stack([x[:, :, 0] for x in images]) * 255).round()
            raw = list(pixels.astype(np.uint8))
            tensor = triton.InferInput("image", list(images_array.shape), "UINT8")
            tensor.set_data_from_numpy(pixels.astype(np.uint8), binary_data=False)
        outputs = [
            triton.InferRequestedOutput("probabilities", binary_data=binary),
            triton.InferRequestedOutput("label", binary_data=binary),
        ]
        result = client.infer("digits", [tensor], outputs=outputs, request_id="r1")
        probs = result.as_numpy("probabilities")
        want = Predictor(repository.get("digits").predictor.package).predict_proba(raw)
        np.testing.assert_allclose(probs, want, atol=1e-6)
        labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
        assert labels == [repository.get("digits").predictor.labels[i] for i in want.argmax(1)]
        assert result.get_response()["id"] == "r1"

        # a table: one tensor per column; pinned version
        frame = cancer_splits.test.X.iloc[:5]
        columns = []
        for column in frame.columns:
            t = triton.InferInput(column, [len(frame)], "FP64")
            t.set_data_from_numpy(frame[column].to_numpy(np.float64), binary_data=binary)
            columns.append(t)
        result = client.infer("cancer", columns, model_version="1")
        want = Predictor(repository.get("cancer").predictor.package).predict_proba(frame)
        np.testing.assert_allclose(result.as_numpy("probabilities"), want, atol=1e-6)
    finally:
        client.close()


_KSERVE_PYTHON = Path(__file__).parents[2] / ".venv-kserve" / "bin" / "python"


@pytest.mark.parametrize("model", ["cancer", "reviews"])
def test_open_inference_protocol_with_the_kserve_rest_client(
    served, cancer_splits, text_model, tmp_path, model
):
    """The kserve package's ``InferenceRESTClient``, JSON and binary tensors, in its own
    environment (kserve pins pandas<3); ``make test`` builds it."""
    python = os.environ.get("TUNESERVE_KSERVE_PYTHON", str(_KSERVE_PYTHON))
    assert Path(python).exists(), (
        f"the kserve client environment is missing ({python}): run `make kserve-client` "
        "(make test builds it), or set TUNESERVE_KSERVE_PYTHON to a Python with kserve"
    )
    server, repository = served
    if model == "cancer":  # one FP64 tensor per column
        inputs: Any = cancer_splits.test.X.iloc[:5]
        arrays = {c: inputs[c].to_numpy(np.float64) for c in inputs.columns}
    else:  # UTF-8 strings as BYTES
        inputs = text_model[2][:4]
        arrays = {"text": np.array(inputs, dtype=object)}
    np.savez(tmp_path / "inputs.npz", **arrays)
    script = Path(__file__).parents[1] / "clients" / "kserve_oip.py"
    proc = subprocess.run(
        [python, str(script), f"http://{server.url}", model, str(tmp_path / "inputs.npz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["live"] and report["ready"] and report["model_ready"]
    predictor = Predictor(repository.get(model).predictor.package)
    want = predictor.predict_proba(inputs)
    for mode in ("json", "binary"):
        result = report[mode]
        assert result["id"] == f"kserve-{mode == 'binary'}" and result["model_name"] == model
        np.testing.assert_allclose(result["probabilities"], want, atol=1e-6)
        assert result["label"] == [predictor.labels[i] for i in want.argmax(1)]


def test_requests_are_batched_together(digits_package, digits_splits):
    server, repository = _start(
        [f"digits={digits_package}"], BatchSettings(max_batch_size=32, max_queue_delay_ms=50)
    )
    try:
        image = digits_splits.test.X[0][:, :, 0].tolist()

        def one(_: int) -> int:
            return _post(server, "/v1/models/digits/predict", {"inputs": [image]})[0]

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(one, range(48)))
        assert codes == [200] * 48
        stats = repository.get("digits").batcher.stats
        assert stats.items == 48 and stats.largest > 1 and stats.batches < 48
        with urllib.request.urlopen(f"http://{server.url}/metrics") as reply:
            text = reply.read().decode()
        assert f'tuneserve_batch_size_count{{model="digits"}} {float(stats.batches)}' in text
        assert 'tuneserve_requests_total{api="v1",code="200",model="digits"} 48.0' in text
        assert 'tuneserve_loaded_version{current="true",model="digits",version="1"} 1.0' in text
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [
        ("/v1/models/nope/predict", {"inputs": ["x"]}, {}, 404, "served: cancer, digits"),
        ("/v1/models/reviews/predict", {"inputs": []}, {}, 400, "at least one input"),
        ("/v1/models/reviews/predict", b"{not json", {}, 400, "not valid JSON"),
        ("/v1/models/digits/predict", {"inputs": ["%%%"]}, {}, 400, "not base64"),
        ("/v1/models/cancer/predict", {"inputs": [{"mean radius": "abc"}]}, {}, 400, "row 0"),
        ("/v1/models/reviews/predict", {"inputs": ["x"] * 301}, {}, 400, "limit is 300"),
        ("/v2/models/digits/infer", b"[]", {}, 400, "non-empty"),
        ("/v2/models/digits/infer", {"inputs": [{"name": "image"}]}, {}, 400, "datatype"),
        (
            "/v2/models/digits/infer",
            {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["a"]}]},
            {},
            400,
            "holds 2 elements but 1",
        ),
        (
            "/v2/models/digits/infer",
            b'{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES",'
            b'"parameters":{"binary_data_size":9}}]}abc',
            {"Inference-Header-Content-Length": "96"},
            400,
            "binary_data_size 9 does not fit",
        ),
        (
            "/v2/models/cancer/infer",
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]},
            {},
            400,
            "one tensor per column; missing",
        ),
        ("/v2/models/digits/versions/7/infer", {"inputs": []}, {}, 404, "no loaded version '7'"),
    ],
)
def test_bad_requests_get_a_4xx_with_an_error(served, path, body, headers, status, message):
    server, _ = served
    if path.startswith("/v1/models/nope"):
        message = "served: cancer, digits, reviews"
    code, payload, _ = _post(server, path, body, headers)
    assert code == status, payload
    assert set(payload) == {"error"} and message in payload["error"]


def test_openapi_repository_api_and_health(served):
    server, _ = served
    with urllib.request.urlopen(f"http://{server.url}/openapi.json") as reply:
        spec = json.loads(reply.read())
    for path in (
        "/v1/models/{name}/predict",
        "/v2/models/{name}/infer",
        "/v2/health/ready",
        "/v2/repository/models/{name}/load",
        "/metrics",
    ):
        assert path in spec["paths"], path
    code, body, _ = _post(server, "/v2/repository/index", b"")
    assert code == 200
    assert {m["name"] for m in body} == {"digits", "cancer", "reviews"}
    assert _post(server, "/v2/repository/models/reviews/unload", b"")[0] == 200
    assert _post(server, "/v1/models/reviews/predict", {"inputs": ["x"]})[0] == 404
    assert _post(server, "/v2/repository/models/reviews/load", b"")[1]["loaded"] is True
    assert _post(server, "/v1/models/reviews/predict", {"inputs": ["x"]})[0] == 200


def test_full_queue_pushes_back_with_retry_after():
    import asyncio

    from tuneserve.serving import Batcher, QueueFullError

    def slow(items):
        time.sleep(0.2)
        return np.zeros((len(items), 1))

    async def scenario() -> None:
        batcher = Batcher(slow, max_batch_size=1, max_queue_delay_ms=0, max_queue=2)
        first = asyncio.ensure_future(batcher.submit([1]))
        second = asyncio.ensure_future(batcher.submit([2]))
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError, match="limit 2"):
            await batcher.submit([3])
        assert (await first).shape == (1, 1) and (await second).shape == (1, 1)

    asyncio.run(scenario())


def test_a_full_queue_gets_503_with_retry_after_over_http(cancer_package, cancer_splits):
    server, repository = _start(
        [f"cancer={cancer_package}"],
        BatchSettings(max_batch_size=2, max_queue_delay_ms=0, max_queue=4),
    )
    batcher = repository.get("cancer").batcher
    run = batcher.run

    def slow(items):  # the real model, made slow enough for a burst to fill the queue
        time.sleep(0.3)
        return run(items)

    batcher.run = slow
    try:
        rows = cancer_splits.test.X.iloc[:2].to_dict("records")
        with ThreadPoolExecutor(10) as pool:
            replies = list(
                pool.map(
                    lambda _: _post(server, "/v1/models/cancer/predict", {"inputs": rows}),
                    range(10),
                )
            )
        codes = sorted(code for code, _, _ in replies)
        assert set(codes) == {200, 503}, codes
        for code, body, headers in replies:
            if code == 503:
                assert "limit 4" in body["error"] and "retry" in body["error"]
                assert {k.lower(): v for k, v in headers.items()}["retry-after"] == "1"
            else:
                assert len(body["predictions"]) == 2
        assert _post(server, "/v1/models/cancer/predict", {"inputs": rows})[0] == 200
        with urllib.request.urlopen(f"http://{server.url}/metrics") as reply:
            text = reply.read().decode()
        refused = codes.count(503)
        assert f'tuneserve_requests_total{{api="v1",code="503",model="cancer"}} {refused}.0' in text
    finally:
        server.stop()


def test_the_server_never_imports_torch(digits_package):
    code = (
        "import sys\n"
        "from tuneserve.serving import ModelSpec, Repository, create_app\n"
        f"r = Repository([ModelSpec.parse({str(digits_package)!r})]); r.load_all()\n"
        "from tuneserve.serving.grpc_service import InferenceService\n"
        "from tuneserve.serving.state import ServerState\n"
        "create_app(r, grpc_address=('127.0.0.1', 0)); InferenceService(ServerState(r))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_api_keys_and_scopes(digits_package, digits_splits):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    from tuneserve.serving.auth import parse_keys

    keys = parse_keys(["reader-key-1:predict", "admin-key-1:admin"])
    repository = Repository([ModelSpec.parse(f"digits={digits_package}")])
    repository.load_all()
    server = LiveServer(create_app(repository, api_keys=keys))
    try:
        request = {"inputs": [digits_splits.test.X[0][:, :, 0].tolist()]}
        path = "/v1/models/digits/predict"
        code, body, headers = _post(server, path, request)
        assert code == 401 and "API key is needed" in body["error"]
        assert headers["www-authenticate"] == "Bearer"
        assert _post(server, path, request, {"Authorization": "Bearer wrong-key-0"})[0] == 401
        assert _post(server, path, request, {"Authorization": "Bearer reader-key-1"})[0] == 200
        assert _post(server, path, request, {"X-API-Key": "admin-key-1"})[0] == 200
        unload = "/v2/repository/models/digits/unload"
        code, body, _ = _post(server, unload, b"", {"X-API-Key": "reader-key-1"})
        assert code == 403 and "lacks the 'admin' scope" in body["error"]
        with urllib.request.urlopen(f"http://{server.url}/v2/health/ready") as reply:
            assert reply.status == 200  # probes need no key
        client = triton.InferenceServerClient(server.url)
        try:
            with pytest.raises(InferenceServerException, match="API key is needed"):
                client.get_model_metadata("digits")
            meta = client.get_model_metadata("digits", headers={"X-API-Key": "reader-key-1"})
            assert meta["name"] == "digits"
        finally:
            client.close()
    finally:
        server.stop()
    with pytest.raises(Exception, match="KEY:SCOPE"):
        parse_keys(["no-scope-given"])


def test_alias_moves_are_followed_without_dropping_requests(tmp_path, monkeypatch):
    from pathlib import Path

    from tuneserve.registry import Registry
    from tuneserve.training import train

    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    registry = Registry()
    for seed in (0, 1, 2):
        path = train("iris", tmp_path / f"v{seed}", backbone="logreg", seed=seed).package.path
        registry.register(path, "iris")
    registry.promote("iris", 1)
    registry.set_alias("iris", "challenger", 1)
    specs = [ModelSpec.parse("iris"), ModelSpec.parse("iris-canary=iris@challenger")]
    repository = Repository(specs, BatchSettings(max_batch_size=16, max_queue_delay_ms=1))
    repository.load_all()
    server = LiveServer(create_app(repository, watch_interval=0.05))
    row = {
        "sepal length (cm)": 5.9,
        "sepal width (cm)": 3.0,
        "petal length (cm)": 4.2,
        "petal width (cm)": 1.5,
    }
    codes: list[int] = []
    seen: set[str] = set()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            code, body, _ = _post(server, "/v1/models/iris/predict", {"inputs": [row]})
            codes.append(code)
            if code == 200:
                seen.add(body["version"])

    clients = [threading.Thread(target=load) for _ in range(3)]
    for c in clients:
        c.start()
    try:
        for i in range(20):  # 20 swaps under continuous load
            target = "2" if i % 2 == 0 else "1"
            registry.promote("iris", target)
            deadline = time.monotonic() + 30
            while repository.current["iris"] != target:
                assert time.monotonic() < deadline, f"swap {i} to {target} did not happen"
                time.sleep(0.02)
        assert repository.swaps == 20

        # a version that does not load is not swapped in; the old one keeps serving
        stored = Path(registry.version("iris/3").source.removeprefix("file://"))
        (stored / "model.onnx").write_bytes(b"broken")
        registry.set_alias("iris", "challenger", 3)
        deadline = time.monotonic() + 30
        while not repository.errors.get("iris-canary"):
            assert time.monotonic() < deadline, "the failed load was not reported"
            time.sleep(0.02)
        assert repository.current["iris-canary"] == "1"
        assert _post(server, "/v1/models/iris-canary/predict", {"inputs": [row]})[0] == 200
        index = {m["name"]: m for m in _post(server, "/v2/repository/index", b"")[1]}
        assert "checksum" in index["iris-canary"]["reason"].lower()
        with urllib.request.urlopen(f"http://{server.url}/metrics") as reply:
            text = reply.read().decode()
        assert 'tuneserve_model_load_error{model="iris-canary"} 1.0' in text
        assert 'tuneserve_model_swaps_total{model="iris"} 20.0' in text
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=30)
        server.stop()
    assert codes and set(codes) == {200}, f"{len(codes) - codes.count(200)} requests failed"
    assert seen == {"1", "2"}


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_canary_and_shadow_traffic(tmp_path, monkeypatch):
    import random

    from tuneserve.registry import Registry
    from tuneserve.serving import Traffic
    from tuneserve.training import train

    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    registry = Registry()
    for seed in (0, 1):
        path = train("iris", tmp_path / f"v{seed}", backbone="mlp", seed=seed).package.path
        registry.register(path, "iris")
    registry.promote("iris", 1)
    registry.set_alias("iris", "challenger", 2)
    traffic = Traffic.parse(["iris:30"], ["iris"])
    specs = [ModelSpec.parse("iris")]
    repository = Repository(specs + traffic.companions(specs))
    repository.load_all()
    assert repository.get("iris:challenger").version == "2"
    server = LiveServer(create_app(repository, traffic=traffic))
    random.seed(0)
    row = [5.9, 3.0, 4.2, 1.5]
    try:
        versions = [
            _post(server, "/v1/models/iris/predict", {"inputs": [row]})[1]["version"]
            for _ in range(200)
        ]
        canary = versions.count("2")
        assert 30 <= canary <= 90, canary  # about 30% of 200
        assert set(versions) == {"1", "2"}
        time.sleep(0.5)  # the shadow calls run after the answers
        with urllib.request.urlopen(f"http://{server.url}/metrics") as reply:
            text = reply.read().decode()
        assert f'tuneserve_routed_total{{model="iris",route="canary"}} {float(canary)}' in text
        mirrored = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("tuneserve_shadow_items_total") and 'model="iris"' in line
        )
        assert mirrored == 200  # every item mirrored once, agree or disagree
    finally:
        server.stop()
    with pytest.raises(Exception, match="MODEL:PERCENT"):
        Traffic.parse(["iris:150"], [])
    with pytest.raises(Exception, match="package folder"):
        Traffic.parse([], ["x"]).companions([ModelSpec(name="x", path=tmp_path)])


def test_a_request_over_its_time_limit_gets_504(cancer_package, cancer_splits):
    server, repository = _start([f"cancer={cancer_package}"], limits=Limits(timeout_s=0.05))
    batcher = repository.get("cancer").batcher
    run = batcher.run
    batcher.run = lambda items: (time.sleep(0.3), run(items))[1]  # the real model, slowed
    try:
        rows = cancer_splits.test.X.iloc[:2].to_dict("records")
        code, body, _ = _post(server, "/v1/models/cancer/predict", {"inputs": rows})
        assert code == 504 and "longer than 0.05 s" in body["error"]
        with urllib.request.urlopen(f"http://{server.url}/metrics") as reply:
            assert 'code="504"' in reply.read().decode()
    finally:
        server.stop()


def test_an_oversized_body_is_refused_before_it_is_read(served):
    import http.client

    server, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        # announce 2 MB + 1 and send nothing: the limit is checked on the header
        conn.putrequest("POST", "/v1/models/reviews/predict")
        conn.putheader("Content-Length", str(2_000_001))
        conn.putheader("Content-Type", "application/json")
        conn.endheaders()
        reply = conn.getresponse()
        body = json.loads(reply.read())
    finally:
        conn.close()
    assert reply.status == 413 and "over the limit of 2000000" in body["error"]


def test_the_batching_wait_adapts_to_the_load():
    """A lone request does not sit out the delay; a burst still forms batches."""
    import asyncio

    from tuneserve.serving import Batcher

    def run(items):
        time.sleep(0.005)
        return np.zeros((len(items), 1))

    waits: list[float] = []
    batcher = Batcher(
        run, max_batch_size=64, max_queue_delay_ms=2000, on_batch=lambda _, w: waits.extend(w)
    )

    async def scenario() -> None:
        for _ in range(3):  # light load: one request at a time, far apart
            await batcher.submit([1])
            await asyncio.sleep(0.3)
        assert max(waits) < 1.0, waits  # not the 2 s delay
        # a burst: 40 requests arriving together are batched
        await asyncio.gather(*(batcher.submit([i]) for i in range(40)))

    asyncio.run(scenario())
    assert batcher.stats.items == 43 and batcher.stats.largest >= 20, batcher.stats.sizes
